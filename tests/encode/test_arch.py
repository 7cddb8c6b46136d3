"""Architecture as data: every registered layer kind rebuilds without code and runs identically."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepshrink import encode
from deepshrink.encode.arch import build, describe
from deepshrink.errors import FormatError

CASES = [
    (nn.Sequential(nn.Conv1d(4, 6, 3, padding="same", dilation=2), nn.BatchNorm1d(6), nn.ELU(0.5),
                   nn.AvgPool1d(2, ceil_mode=True), nn.AdaptiveMaxPool1d(3), nn.Flatten()), (2, 4, 10)),
    (nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, output_padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                   nn.Upsample(scale_factor=2.0, mode="nearest"), nn.ZeroPad2d(1), nn.AvgPool2d(3, 2),
                   nn.InstanceNorm2d(4, affine=True), nn.Hardswish(), nn.Dropout2d(0.2),
                   nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(1), nn.Unflatten(1, (4, 4)), nn.LogSoftmax(-1)), (1, 3, 8, 8)),
    (nn.Sequential(nn.Linear(6, 8), nn.PReLU(8), nn.LeakyReLU(0.2), nn.Hardtanh(-0.5, 0.5), nn.Softplus(2.0),
                   nn.Mish(), nn.ReLU6(), nn.Tanh(), nn.Sigmoid(), nn.LayerNorm(8, bias=False)), (3, 6)),
    (nn.Sequential(nn.Conv3d(2, 3, 2), nn.BatchNorm3d(3), nn.MaxPool3d(2), nn.Flatten()), (1, 2, 5, 5, 5)),
]


@pytest.mark.parametrize("i", range(len(CASES)))
def test_layer_zoo_round_trip(i):
    torch.manual_seed(i)
    model, shape = CASES[i]
    model.eval()
    out = encode.loads(encode.dumps(model))
    x = torch.randn(*shape)
    assert torch.equal(model(x), out(x))


def test_rnns_and_attention():
    torch.manual_seed(0)
    m = nn.ModuleList([nn.LSTM(5, 7, proj_size=3, batch_first=True), nn.RNN(5, 4, nonlinearity="relu"),
                       nn.MultiheadAttention(8, 2, batch_first=True, kdim=6, vdim=6)]).eval()
    out = encode.loads(encode.dumps(m))
    x = torch.randn(2, 4, 5)
    assert torch.equal(m[0](x)[0], out[0](x)[0]) and torch.equal(m[1](x)[0], out[1](x)[0])
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    assert torch.equal(m[2](q, kv, kv)[0], out[2](q, kv, kv)[0])


def test_subclass_or_hooks_are_not_rebuildable():
    class MyLinear(nn.Linear):
        pass

    from deepshrink.encode.arch import rebuildable

    assert rebuildable(nn.Sequential(MyLinear(2, 2)))[0] is None
    m = nn.Sequential(nn.Linear(2, 2))
    m[0].register_forward_hook(lambda *a: None)
    node, reason = rebuildable(m)
    assert node is None and "hooks" in reason


def test_build_refuses_unknown_and_bad_nodes():
    node = describe(nn.Sequential(nn.Linear(2, 3)))
    for bad in ({"type": "torch.nn.Linear"}, {"type": "nn.Linear", "args": {"evil": 1}},
                {"type": "nn.Linear", "args": {"in_features": "x", "out_features": 2}},
                {"type": "nn.ModuleList", "children": {"a": node}}, [1, 2]):
        with pytest.raises(FormatError):
            build(bad)
    deep = node
    for _ in range(100):
        deep = {"type": "nn.Sequential", "children": {"0": deep}}
    with pytest.raises(FormatError, match="deeper"):
        build(deep)
    with torch.device("meta"):  # a huge declared layer never allocates: built on meta
        assert build({"type": "nn.Linear", "args": {"in_features": 10**6, "out_features": 10**6}}).weight.is_meta
