"""Channel alignment before int8: which convs qualify, exactness of the padding, the measured choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink.quantize as Q
from deepshrink.errors import InputError
from deepshrink.quantize.int8 import align as A
from deepshrink.quantize.int8.graph import trace


class Residual(nn.Module):
    """conv a feeds both conv b and the residual add: padding a would change the add's shape."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 20, 3, padding=1)
        self.b = nn.Conv2d(20, 20, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        return self.b(torch.relu(y)) + y


def _lenet5_like():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(800, 64), nn.ReLU(), nn.Linear(64, 10)).eval()


def test_sites_follow_single_use_chains_only():
    gm = trace(_lenet5_like())
    assert A.alignment_sites(gm) == [("0", "2", False), ("2", "6", True)]
    assert A.alignment_sites(trace(Residual())) == []  # a's output is used twice
    grouped = nn.Sequential(nn.Conv2d(4, 20, 3), nn.Conv2d(20, 20, 3, groups=4)).eval()
    assert A.alignment_sites(trace(grouped)) == []
    aligned = nn.Sequential(nn.Conv2d(4, 32, 3), nn.ReLU(), nn.Conv2d(32, 8, 3)).eval()
    assert A.alignment_sites(trace(aligned)) == []  # already a multiple of 32
    tiny = nn.Sequential(nn.Conv2d(4, 6, 3), nn.Conv2d(6, 8, 3)).eval()
    assert A.alignment_sites(trace(tiny)) == []  # below MIN_CHANNELS


def test_padding_is_exact_through_pool_relu_and_flatten():
    model = _lenet5_like()
    gm = trace(model)
    x = torch.randn(4, 1, 28, 28)
    for first, second, flat in A.alignment_sites(gm):
        A.pad_channels(gm, first, second, flat, 64)
    assert gm.get_submodule("0").out_channels == 64 and gm.get_submodule("2").in_channels == 64
    assert gm.get_submodule("6").in_features == 64 * 16
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-5)


def test_int8_records_and_stays_faithful():
    model = _lenet5_like()
    calib = [torch.randn(16, 1, 28, 28) for _ in range(3)]
    q = Q.int8(model, calib[0], calib, engine="fbgemm", fallback_slow=False, equalize=False, bias_correction=False,
               align_channels=True)
    record = q.quant_info.passes["channel_alignment"]
    assert record == {"0": "20 -> 32 channels: applied", "2": "50 -> 64 channels: applied"}
    assert q.quant_info.cosine > 0.99
    with torch.no_grad():
        assert q(calib[1]).shape == (16, 10)


def test_auto_times_each_site_and_keeps_only_faster(monkeypatch):
    """The decision is the measured one: a trial slower than the base is rejected, a faster one kept."""
    calls = []

    def fake_medians(fns, threads):
        calls.append(threads)
        # first site: the trial is slower; second site: faster
        return {"current": 1.0, "trial": 1.5} if len(calls) == 1 else {"current": 1.0, "trial": 0.5}

    import sys

    # the module (the package exports a function of that name)
    monkeypatch.setattr(sys.modules["deepshrink.measure.latency"], "interleaved_medians", fake_medians)
    gm, record = A.align_channels(trace(_lenet5_like()), lambda g: g, (torch.randn(2, 1, 28, 28),), threads=1)
    assert record["0"].startswith("20 -> 32 channels: rejected") and record["2"].startswith("50 -> 64 channels: kept")
    assert gm.get_submodule("0").out_channels == 20 and gm.get_submodule("2").out_channels == 64
    assert calls == [1, 1]


def test_bad_value():
    with pytest.raises(InputError, match="align_channels"):
        Q.int8(_lenet5_like(), torch.randn(1, 1, 28, 28), align_channels="sometimes")
