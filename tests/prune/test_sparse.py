"""Sparse execution: CSR/BSR modules equal the dense layers; `sparsify` decides per layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink.errors import InputError
from deepshrink.prune import finalize, magnitude
from deepshrink.prune.sparse import SparseConv1x1, SparseLinear, crossover, sparsify


def _sparse_linear(i, o, s, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(i, o)
    with torch.no_grad():
        lin.weight.mul_(torch.rand(o, i) >= s)
    return lin


@pytest.mark.parametrize("fmt", ["csr", "bsr"])
@pytest.mark.parametrize("batch", [1, 3, 32])
def test_sparse_linear_equals_dense(fmt, batch):
    lin = _sparse_linear(64, 32, 0.9)
    sp = SparseLinear.from_dense(lin, fmt)
    x = torch.randn(batch, 64)
    with torch.no_grad():
        assert torch.allclose(sp(x), lin(x), atol=1e-5)
        x3 = torch.randn(2, 5, 64)  # leading dims are kept
        assert torch.allclose(sp(x3), lin(x3), atol=1e-5)


def test_sparse_linear_without_bias_and_state_dict():
    lin = _sparse_linear(16, 8, 0.8)
    lin.bias = None
    sp = SparseLinear.from_dense(lin)
    x = torch.randn(4, 16)
    with torch.no_grad():
        assert torch.allclose(sp(x), lin(x), atol=1e-6)
    assert list(sp.state_dict()) == ["weight"]
    lin2 = _sparse_linear(16, 8, 0.5, seed=1)
    lin2.bias = None
    sp.load_state_dict(lin2.state_dict())
    with torch.no_grad():
        assert torch.allclose(sp(x), lin2(x), atol=1e-6)


def test_sparse_conv1x1_equals_dense():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, 1)
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) > 0.9)
    sp = SparseConv1x1.from_dense(conv)
    for n in (1, 3):
        x = torch.randn(n, 16, 5, 7)
        with torch.no_grad():
            assert torch.allclose(sp(x), conv(x), atol=1e-5)
    assert not SparseConv1x1.supports(nn.Conv2d(4, 4, 3))
    with pytest.raises(InputError):
        SparseConv1x1.from_dense(nn.Conv2d(4, 4, 3))


def test_sparsify_table_and_outputs():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))
    p = finalize(magnitude(m, 0.97, scope="layer", exclude=["4"]))
    fast, table = sparsify(p, torch.randn(1, 256), repeats=10, min_speedup=0.0)  # force conversion
    assert [r["layer"] for r in table] == ["0", "2", "4"]
    by = {r["layer"]: r for r in table}
    assert by["4"]["chosen"] == "dense" and "min_sparsity" in by["4"]["reason"]
    assert by["0"]["chosen"] in ("csr", "bsr") and "dense_ms" in by["0"]
    assert isinstance(fast[0], SparseLinear)
    for b in (1, 5, 33):  # any batch size
        x = torch.randn(b, 256)
        with torch.no_grad():
            assert torch.allclose(fast(x), p(x), atol=1e-5)
    assert list(fast.state_dict()) == list(p.state_dict())
    slow, table = sparsify(p, torch.randn(1, 256), repeats=5, min_speedup=1e9)  # nothing is that fast
    assert all(r["chosen"] == "dense" for r in table) and isinstance(slow[0], nn.Linear)


def test_sparsify_bad_inputs():
    with pytest.raises(InputError):
        sparsify(nn.Sequential(nn.Linear(4, 4)), torch.randn(1, 4), formats=("coo",))
    with pytest.raises(InputError):
        sparsify(nn.Sequential(nn.Linear(4, 4)), torch.randn(1, 4), batch_size=0)


def test_crossover_shape():
    r = crossover(32, 16, 1, sparsities=(0.5, 0.99), repeats=5)
    assert [row["sparsity"] for row in r["rows"]] == [0.5, 0.99]
    assert r["crossover"] in (None, 0.5, 0.99)


def test_sparse_exec_step_records_table():
    from deepshrink.api import compress

    torch.manual_seed(0)
    m = finalize(magnitude(nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4)), 0.95, scope="layer"))
    res = compress(m, (torch.randn(1, 128),), [{"type": "sparse_exec", "repeats": 5, "min_speedup": 0.0}])
    extras = res.report.steps[0].extras
    assert {r["layer"] for r in extras["sparse_exec"]} == {"0", "2"}
    assert set(extras["sparse_layers"]) <= {"0", "2"}
