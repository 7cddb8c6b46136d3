"""Weight sharing: <= 2**bits values, zeros kept, inits/methods, centroid fine-tuning, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from deepshrink.errors import InputError, RecipeError
from deepshrink.prune import finalize as prune_finalize
from deepshrink.prune import magnitude
from deepshrink.quantize.cluster import (
    assignments,
    cluster,
    codebooks,
    distinct_values,
    finalize,
    finetune_centroids,
    kmeans,
    uniform,
)
from tests.models import MLP, SmallCNN


def _data(n=4, d_in=16, n_cls=4, bs=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(bs, d_in, generator=g), torch.randint(0, n_cls, (bs,), generator=g)) for _ in range(n)]


def test_contract_name_is_callable():
    import deepshrink.quantize as q

    m = q.cluster(nn.Linear(32, 8), 2)
    assert distinct_values(m)["weight"] <= 4


@pytest.mark.parametrize("init", ["linear", "forgy", "density"])
@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("bits", [1, 3, 5])
def test_at_most_2_pow_bits_and_zeros_stay(init, exact, bits):
    torch.manual_seed(0)
    p = prune_finalize(magnitude(SmallCNN(), 0.7))
    c = cluster(p, bits, init=init, exact=exact)
    for name, n in distinct_values(c).items():
        assert 1 <= n <= 2**bits, name
    for (k, w0), w1 in zip(p.state_dict().items(), c.state_dict().values(), strict=True):
        if k.endswith("weight") and w0.dim() > 1:
            assert torch.equal(w0 == 0, w1 == 0), k  # zeros stay zero, survivors stay non-zero
    assert list(c.state_dict()) == list(p.state_dict())


def test_methods_and_overrides():
    torch.manual_seed(0)
    m = MLP()
    data = _data()
    for method in ("kmeans", "hessian", "uniform"):
        c = cluster(m, 3, method=method, data=data if method != "kmeans" else None, overrides={"fc2": 2})
        dv = distinct_values(c)
        assert dv["fc1.weight"] <= 8 and dv["fc2.weight"] <= 4, method
    u = cluster(m, 4, method="uniform")
    vals = codebooks(u)["fc1.weight"]
    w = m.fc1.weight.detach()
    edges = torch.linspace(float(w.min()), float(w.max()), 16)
    # each shared value lies in its uniform bin around a grid point
    step = float(edges[1] - edges[0])
    assert all(float((edges - v).abs().min()) <= step / 2 + 1e-6 for v in vals)


def test_bias_clustering_and_exclude():
    c = cluster(MLP(), 2, cluster_bias=True, exclude=["fc2"])
    dv = distinct_values(c, include_bias=True)
    assert dv["fc1.weight"] <= 4 and dv["fc1.bias"] <= 4 and dv["fc2.weight"] > 4


def test_kmeans_primitives():
    v = torch.cat([torch.randn(200) * 0.1 - 1, torch.randn(200) * 0.1 + 1])
    for exact in (False, True):
        c, a = kmeans(v, 2, exact=exact)
        assert c.tolist() == sorted(c.tolist()) and c[0] < -0.8 and c[1] > 0.8
        assert bool((a[:200] == 0).all() and (a[200:] == 1).all())
    c, a = kmeans(torch.tensor([0.5, 0.5, 2.0]), 8)  # fewer distinct values than clusters: exact copy
    assert c.tolist() == [0.5, 2.0] and a.tolist() == [0, 0, 1]
    w = torch.ones(400)
    w[:200] = 1e-6  # Hessian-weighted: the heavily weighted cluster wins the centroid
    c1, _ = kmeans(v, 1, weights=w, exact=False)
    assert float(c1[0]) > 0.8
    c, a = uniform(v, 4)
    assert c.numel() <= 4 and a.max() < c.numel()


def test_sharing_survives_user_training():
    torch.manual_seed(0)
    p = magnitude(MLP(), 0.5)
    c = cluster(p, 3)
    idx = {k: v.clone() for k, v in assignments(c).items()}
    opt = torch.optim.Adam(c.parameters(), lr=0.05, weight_decay=0.01)
    for x, y in _data(6):
        opt.zero_grad()
        nn.functional.cross_entropy(c(x), y).backward()
        opt.step()
        for k, a in idx.items():  # after every step: one value per cluster, zeros are zero
            w = c.get_submodule(k.rsplit(".", 1)[0]).weight.detach().reshape(-1)
            a = a.reshape(-1).long()
            assert bool((w[a < 0] == 0).all())
            for j in range(int(a.max()) + 1):
                assert torch.unique(w[a == j]).numel() == 1
    assert all(torch.equal(idx[k], v) for k, v in assignments(c).items())


def test_centroid_finetuning_keeps_assignments_and_improves_loss():
    torch.manual_seed(0)
    data = _data(8)
    m = MLP()
    from deepshrink.distill.loop import fit

    fit(m, data, epochs=10, lr=1e-2)
    c = cluster(m, 1)  # 2 values: a coarse start with loss to recover

    def loss(model):
        with torch.no_grad():
            return sum(float(nn.functional.cross_entropy(model(x), y)) for x, y in data)

    before = loss(c)
    bias_before = c.fc1.bias.detach().clone()
    idx = {k: v.clone() for k, v in assignments(c).items()}
    finetune_centroids(c, data, epochs=5, lr=1e-2, only_centroids=True)
    assert loss(c) < before
    assert all(torch.equal(idx[k], v) for k, v in assignments(c).items())
    assert all(n <= 2 for n in distinct_values(c).values())
    assert torch.equal(c.fc1.bias.detach(), bias_before)  # only the shared values trained
    final = finalize(copy.deepcopy(c))
    assert not assignments(final) and not list(final.buffers())
    assert all(n <= 2 for n in distinct_values(final).values())


@pytest.mark.parametrize("bits", [0, 17, 2.5, True])
def test_bad_bits(bits):
    with pytest.raises(InputError):
        cluster(MLP(), bits)


def test_bad_arguments():
    with pytest.raises(InputError, match="init"):
        cluster(MLP(), 3, init="kmeans++")
    with pytest.raises(InputError, match="method"):
        cluster(MLP(), 3, method="pq")
    with pytest.raises(InputError, match="needs data"):
        cluster(MLP(), 3, method="hessian")
    with pytest.raises(InputError):
        cluster(nn.Sequential(nn.ReLU()), 3)
    with pytest.raises(InputError):
        finetune_centroids(MLP(), _data(), only_centroids=True)


def test_all_zero_layer_is_skipped():
    from deepshrink.quantize.cluster import cluster_

    m = MLP()
    with torch.no_grad():
        m.fc2.weight.zero_()
    rows = cluster_(m, 3)
    assert [r["layer"] for r in rows if "skipped" in r] == ["fc2.weight"]


def test_cluster_step_and_recipe():
    from deepshrink.api import compress
    from deepshrink.recipe import Recipe
    from deepshrink.tasks import Task

    for bad in ({"type": "cluster", "bits": 0}, {"type": "cluster", "overrides": {"fc1": 40}},
                {"type": "cluster", "init": "random"}):
        with pytest.raises(RecipeError):
            Recipe.from_list([bad])
    r = Recipe.load("deep_compression")
    assert [type(s).type_name for s in r.steps] == ["magnitude_prune", "cluster", "encode"]
    data = _data(4)
    task = Task(name="toy", model=MLP(), example_inputs=MLP.example_inputs(), train_data=data)
    res = compress(task.model, task.example_inputs,
                   [{"type": "magnitude_prune", "sparsity": 0.5},
                    {"type": "cluster", "bits": 2, "overrides": {"fc2": 1}, "finetune_epochs": 1}], task=task)
    extras = res.report.steps[1].extras
    assert extras["bits"] == {"fc1.weight": 2, "fc2.weight": 1}
    assert extras["distinct_values"]["fc1.weight"] <= 4 and extras["distinct_values"]["fc2.weight"] <= 2
    assert not assignments(res.model)
