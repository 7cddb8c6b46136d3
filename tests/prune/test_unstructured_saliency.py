"""Second-order and activation saliency: OBD, layer-wise OBS with compensation, APoZ."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import CalibrationError, InputError
from deepshrink.prune import magnitude, sparsity_report
from deepshrink.prune.unstructured import apoz, apoz_prune, fisher_diagonal, obd, obs


def _correlated_inputs(n=512, d=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 8, generator=g)
    mix = torch.randn(8, d, generator=g)
    return base @ mix + 0.1 * torch.randn(n, d, generator=g)  # strongly correlated features


def test_obs_compensation_beats_magnitude_on_layer_output_error():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 16))
    x = _correlated_inputs()
    calib = [x[i : i + 64] for i in range(0, 512, 64)]
    ref = m(x).detach()
    p_obs = obs(m, 0.6, calib)
    p_mag = magnitude(m, 0.6, scope="layer")
    assert sparsity_report(p_obs)["sparsity"] == pytest.approx(0.6, abs=0.01)
    err_obs = float(((p_obs(x).detach() - ref) ** 2).mean())
    err_mag = float(((p_mag(x).detach() - ref) ** 2).mean())
    assert err_obs < 0.5 * err_mag


def test_obs_nm_and_conv():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 8))
    calib = [torch.randn(8, 4, 6, 6) for _ in range(4)]
    p = obs(m, 0.5, calib, granularity="2:4")
    groups = (p[3].weight != 0).reshape(8, -1, 4).sum(-1)
    assert bool((groups == 2).all())
    conv = (p[0].weight != 0).reshape(8, -1, 4).sum(-1)  # flattened (C*kh*kw) rows, groups of 4
    assert bool((conv == 2).all())
    opt = torch.optim.Adam(p.parameters(), lr=0.1)
    for _ in range(2):  # masks persist like magnitude's
        opt.zero_grad()
        p(calib[0]).sum().backward()
        opt.step()
    assert bool(((p[3].weight != 0).reshape(8, -1, 4).sum(-1) == 2).all())


def test_obs_errors():
    with pytest.raises(InputError):
        obs(nn.Sequential(nn.ReLU()), 0.5, [torch.randn(2, 4)])
    with pytest.raises(CalibrationError):
        obs(nn.Sequential(nn.Linear(4, 4)), 0.5, [])


def test_obd_uses_fisher():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 3))
    x = torch.randn(64, 8)
    x[:, :4] *= 0.0  # inputs 0-3 are dead: their weights have zero Fisher, so OBD prunes them first
    data = [(x, torch.randint(0, 3, (64,)))]
    f = fisher_diagonal(m, data)
    assert float(f["0.weight"][:, :4].abs().sum()) == 0
    p = obd(m, 0.5, data, scope="layer")
    assert bool((p[0].weight[:, :4] == 0).all())
    unlabeled = obd(m, 0.5, [x], scope="layer")  # arg-max predictions stand in for labels
    assert sparsity_report(unlabeled)["sparsity"] == pytest.approx(0.5)


def test_apoz_neuron_pruning():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        m[0].bias[:3] = -100.0  # neurons 0-2 are always off
    data = [torch.randn(32, 6)]
    a = apoz(m, data)
    assert bool((a["0"][:3] == 1).all())
    p = apoz_prune(m, 3 / 8, data)
    dead = (p[0].weight.abs().sum(1) == 0) & (p[0].bias == 0)
    assert dead.tolist() == [True] * 3 + [False] * 5
    assert bool((p[2].weight != 0).all())  # output layer untouched


def test_apoz_step_records_sparsity():
    from deepshrink.api import compress
    from deepshrink.tasks import Task

    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    task = Task(name="t", model=m, example_inputs=(torch.randn(2, 6),), calib_data=[torch.randn(16, 6)])
    res = compress(m, task.example_inputs, [{"type": "apoz_prune", "ratio": 0.5}], task=task)
    assert res.report.steps[0].extras["layer_sparsity"]["0.weight"] == pytest.approx(0.5)
