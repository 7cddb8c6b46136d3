"""Round trips: every tensor bit-exact, architectures rebuilt without code, skeletons filled."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from deepshrink import encode
from deepshrink.encode import ArchitectureUnavailableError
from deepshrink.errors import FormatError
from tests.models import MLP, SmallCNN


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.is_floating_point:
        a, b = a + 0.0, b + 0.0  # -0.0 is stored as +0.0 by sparse/codebook encodings
        size = a.element_size()
        ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[size]
        return torch.equal(a.contiguous().view(ints), b.contiguous().view(ints))
    return torch.equal(a, b)


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert _bits_equal(sa[k], sb[k]), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("coder", ["auto", "ans", "huffman", "none"])
def test_float_tensors_bit_exact(dtype, coder):
    torch.manual_seed(0)
    dense = torch.randn(33, 17).to(dtype)
    sparse = torch.randn(300, 40).to(dtype) * (torch.rand(300, 40) < 0.05)  # > 256 distinct values
    book = torch.tensor([0.5, -1.25, 3.0, -0.0]).to(dtype)[torch.randint(0, 4, (50, 7))]
    sparse_book = book * (torch.rand(50, 7) < 0.1)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, 1e-30]).to(dtype)
    m = nn.Module()
    for i, t in enumerate([dense, sparse, book, sparse_book, special, torch.zeros(0, 3).to(dtype), torch.zeros(5, 5).to(dtype)]):
        m.register_buffer(f"t{i}", t)
    out = encode.loads(encode.dumps(m, coder=coder), model=_like(m))
    _assert_same_state(m, out)
    encs = [t.encoding for t in encode.stats(encode.dumps(m, coder=coder)).tensors]
    assert encs[0] == "dense" and encs[1] == "sparse" and encs[2] == "codebook"


def _like(m: nn.Module) -> nn.Module:
    s = nn.Module()
    for k, v in m.state_dict().items():
        s.register_buffer(k, torch.empty_like(v))
    return s


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool])
def test_int_and_bool_tensors_bit_exact(dtype):
    torch.manual_seed(1)
    m = nn.Module()
    if dtype == torch.bool:
        m.register_buffer("a", torch.rand(40, 9) < 0.1)
    else:
        info = torch.iinfo(dtype)
        m.register_buffer("a", torch.randint(max(info.min, -1000), min(info.max, 1000), (40, 9)).to(dtype))
        m.register_buffer("b", (torch.randint(-3, 4, (64, 8)) * (torch.rand(64, 8) < 0.1)).to(dtype).abs())
    _assert_same_state(m, encode.loads(encode.dumps(m), model=_like(m)))


def test_sparse_gap_widths_and_fillers():
    from deepshrink.encode.encodings import gap_symbols, positions_from_gaps

    nz = torch.tensor([0, 1, 2, 40, 41, 300, 1000]).numpy()
    gaps = (torch.diff(torch.tensor(nz), prepend=torch.tensor([-1])) - 1).numpy()
    from deepshrink.encode.encodings import _gap_counts

    for w in range(1, 9):
        assert positions_from_gaps(gap_symbols(gaps, w), w).tolist() == nz.tolist()
        assert _gap_counts(gaps, w).tolist() == np.bincount(gap_symbols(gaps, w), minlength=2**w).tolist()
    # a long gap needs filler symbols
    assert (gap_symbols(gaps, 3) == 7).sum() > 0


def test_sequential_rebuilt_without_code(tmp_path):
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(8, 4, 3, stride=2, groups=4), nn.GELU(approximate="tanh")),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(4, 5), nn.LayerNorm(5), nn.Identity(),
    )
    m[1].running_mean.uniform_()
    m.eval()
    p = tmp_path / "m.dsz"
    encode.save(m, p)
    out = encode.load(p)
    assert type(out) is nn.Sequential and not out.training
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(m(x), out(x))
    _assert_same_state(m, out)
    assert [f for f in os.listdir(tmp_path)] == ["m.dsz"]  # no temp file left behind


def test_nested_containers_embedding_rnn():
    torch.manual_seed(0)
    m = nn.ModuleDict({
        "emb": nn.Embedding(50, 8, padding_idx=0),
        "rnns": nn.ModuleList([nn.LSTM(8, 6, batch_first=True, num_layers=2), nn.GRU(6, 4, bidirectional=True)]),
        "head": nn.Sequential(nn.Linear(8, 3), nn.Softmax(dim=-1)),
    })
    out = encode.loads(encode.dumps(m))
    assert isinstance(out["rnns"][0], nn.LSTM) and out["rnns"][1].bidirectional
    _assert_same_state(m, out)
    tok = torch.randint(0, 50, (2, 7))
    a, _ = m["rnns"][0](m["emb"](tok))
    b, _ = out["rnns"][0](out["emb"](tok))
    assert torch.equal(a, b)


def test_pruned_shapes_read_from_weights():
    m = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    # what structural pruning does: fewer hidden units, attributes possibly stale
    m[0] = nn.Linear(10, 4)
    m[2].weight = nn.Parameter(m[2].weight[:, :4].clone())
    out = encode.loads(encode.dumps(m))
    assert out[2].in_features == 4
    x = torch.randn(3, 10)
    assert torch.equal(m(x), out(x))


@pytest.mark.parametrize("arch", ["lenet300", "lenet5"])
def test_bundled_lenets_rebuilt(arch, clustered_lenet300):
    from deepshrink.tasks.models import BUNDLED_MODELS

    from .conftest import prune_and_cluster_

    torch.manual_seed(0)
    m = BUNDLED_MODELS[arch]().eval()
    prune_and_cluster_(m)
    data = encode.dumps(m)
    out = encode.loads(data)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(m(x), out(x))
    assert len(data) * 20 < 4 * sum(p.numel() for p in m.parameters())  # > 20x at 92% sparsity, 5 bits


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = MLP()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.body(x) * self.scale


def test_custom_class_needs_skeleton(tmp_path):
    torch.manual_seed(0)
    m = Custom()
    p = tmp_path / "c.dsz"
    encode.save(m, p)
    with pytest.raises(ArchitectureUnavailableError, match="skeleton"):
        encode.load(p)
    sk = Custom()
    out = encode.load(p, model=sk)
    assert out is sk
    x = MLP.example_inputs()[0]
    assert torch.equal(m(x), out(x))
    with pytest.raises(FormatError, match="disagree"):
        encode.load(p, model=SmallCNN())


def test_skeleton_on_meta_device_and_shape_mismatch():
    m = MLP()
    data = encode.dumps(m)
    with torch.device("meta"):
        sk = MLP()
    out = encode.loads(data, model=sk)
    assert not any(t.is_meta for t in out.parameters())
    with pytest.raises(FormatError, match="shape mismatch"):
        encode.loads(data, model=MLP(hidden=31))


def test_history_replayed_on_skeleton(monkeypatch):
    import deepshrink.prune as prune

    m = MLP()
    m.deepshrink_history = [{"op": "noop", "layer": "fc1"}]
    calls = []
    monkeypatch.setattr(prune, "replay", lambda model, h: calls.append(h) or model, raising=False)
    data = encode.dumps(m)
    out = encode.loads(data, model=MLP())
    assert calls == [m.deepshrink_history] and out.deepshrink_history == m.deepshrink_history
    encode.loads(data, model=m)  # already pruned skeleton: no replay
    assert len(calls) == 1


def test_tied_weights_stored_once():
    emb = nn.Embedding(100, 16)
    head = nn.Linear(16, 100, bias=False)
    head.weight = emb.weight
    m = nn.Sequential(emb, head)
    data = encode.dumps(m)
    out = encode.loads(data)
    assert len(data) < 100 * 16 * 4 + 2000
    assert torch.equal(out[0].weight, out[1].weight)


def test_save_is_atomic_and_rejects_non_tensors(tmp_path):
    p = tmp_path / "x.dsz"
    p.write_bytes(b"old")
    encode.save(MLP(), p)
    assert p.read_bytes()[:4] == b"\x89DSZ"
    with pytest.raises(ValueError, match="coder"):
        encode.dumps(MLP(), coder="zip")


def test_stats_reports_entropy_and_bits(clustered_lenet300):
    s = encode.stats(clustered_lenet300)
    d = s.to_dict()
    assert d["compression_ratio"] > 10 and 0 < s.bits_per_weight < 4
    assert {t.encoding for t in s.tensors} >= {"dense"}
    assert s.entropy_bits > 0 and abs(s.coding_overhead) < 0.02


def test_structurally_pruned_custom_model_loads_into_original_skeleton(tmp_path):
    """Real structural pruning (deepshrink.prune.channels) records history; load replays it."""
    prune = pytest.importorskip("deepshrink.prune.structured")
    torch.manual_seed(0)
    m = SmallCNN().eval()
    x = SmallCNN.example_inputs()
    pruned = prune.channels(m, x, 0.5).eval()
    assert getattr(pruned, "deepshrink_history", None)
    p = tmp_path / "p.dsz"
    encode.save(pruned, p)
    out = encode.load(p, model=SmallCNN())
    assert torch.equal(out(*x), pruned(*x))
    assert out.conv1.weight.shape == pruned.conv1.weight.shape


def test_magnitude_pruned_bundled_model_still_rebuilds_without_code():
    """deepshrink's own mask constraints (hooks + non-persistent buffers) are not architecture."""
    prune = pytest.importorskip("deepshrink.prune")
    from deepshrink.tasks.models import LeNet300

    torch.manual_seed(0)
    m = prune.magnitude(LeNet300(), 0.9).eval()
    data = encode.dumps(m)
    out = encode.loads(data)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(out(x), m(x))
    assert encode.stats(data).tensors[0].encoding in ("sparse", "codebook")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_rebuilt_in_its_dtype(dtype):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 2)).to(dtype).eval()
    out = encode.loads(encode.dumps(m))
    assert out[0].weight.dtype == dtype and isinstance(out[0].weight, nn.Parameter)
    x = torch.randn(3, 8).to(dtype)
    assert torch.equal(m(x), out(x))


def test_sparse_with_empty_rows_and_columns_uses_compact_layout():
    torch.manual_seed(0)
    w = torch.randn(300, 784) * (torch.rand(300, 784) < 0.08)
    w[:, :250] = 0  # e.g. MNIST border pixels: their input weights all pruned
    w[40:60] = 0
    conv = torch.randn(16, 8, 3, 3) * (torch.rand(16, 8, 3, 3) < 0.2)
    conv[3] = 0
    m = nn.Module()
    m.register_buffer("w", w)
    m.register_buffer("conv", conv)
    data = encode.dumps(m)
    st = encode.stats(data)
    assert st.tensors[0].params.get("compact") is True
    _assert_same_state(m, encode.loads(data, model=_like(m)))
    plain = encode.dumps(m, encodings={"w": {"encoding": "sparse", "width": 8}})
    _assert_same_state(m, encode.loads(plain, model=_like(m)))


def test_registered_custom_encoding_as_documented():
    """The module docstring's example: a sign (binary) encoding through the registry."""
    from deepshrink.encode import Encoded, Symbols, register_encoding
    from deepshrink.encode.encodings import _ENCODINGS

    def encode_sign(t, *, coder, **opts):
        if not t.is_floating_point() or not bool(((t == 1) | (t == -1)).all()):
            return None
        return Encoded(params={}, streams={"signs": Symbols((t.reshape(-1) > 0).numpy().astype("int64"), 2)})

    def decode_sign(params, dtype, shape, streams):
        s = torch.from_numpy(streams["signs"]).reshape(shape)
        return s.to(dtype) * 2 - 1

    register_encoding("test_sign", encode=encode_sign, decode=decode_sign, auto=False)
    try:
        m = nn.Linear(64, 32, bias=False)
        with torch.no_grad():
            m.weight.copy_(torch.randint(0, 2, (32, 64)).float() * 2 - 1)
        data = encode.dumps(m, encodings={"weight": "test_sign"})
        assert encode.stats(data).tensors[0].encoding == "test_sign"
        assert torch.equal(encode.loads(data).weight, m.weight)
        with pytest.raises(ValueError, match="does not apply"):
            encode.dumps(nn.Linear(3, 3), encodings={"weight": "test_sign"})
    finally:
        _ENCODINGS.pop("test_sign", None)
    with pytest.raises(FormatError, match="unknown tensor encoding"):
        encode.loads(data)


def test_unstorable_models_are_refused_clearly():
    from deepshrink.errors import UnsupportedLayerError

    with torch.device("meta"):
        meta = nn.Linear(2, 2)
    with pytest.raises(UnsupportedLayerError, match="meta"):
        encode.dumps(meta)
    m = nn.Linear(2, 2)
    m.deepshrink_history = [{"op": object()}]
    with pytest.raises(TypeError, match="JSON"):
        encode.dumps(m)
