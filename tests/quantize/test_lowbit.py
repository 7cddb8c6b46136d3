"""Low-bit weights: fixed point, bit allocation, binarization, ternary, training, bit-packed .dsz."""

from __future__ import annotations

import torch
from torch import nn

import deepshrink.encode as E
from deepshrink.encode.encodings import encode_tensor
from deepshrink.quantize.lowbit import (
    BinaryActivation,
    allocate_bits,
    binarize,
    binary_weight,
    fixed_point,
    quantize_rows,
    ternarize,
    train_lowbit,
    weight_bytes,
)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))


def test_fixed_point_levels():
    w = torch.randn(8, 50)
    for bits in (2, 3, 4, 8):
        q = quantize_rows(w, bits)
        qmax = 2 ** (bits - 1) - 1
        for row, orig in zip(q, w, strict=True):
            assert row.unique().numel() <= 2 * qmax + 1
            assert (row - orig).abs().max() <= orig.abs().max() / qmax / 2 + 1e-6  # half a step


def test_xnor_binarization_is_sign_times_mean_abs():
    w = torch.randn(6, 3, 3, 3)
    b = binary_weight(w, "xnor")
    alpha = w.reshape(6, -1).abs().mean(1)
    assert torch.equal(b, torch.where(w >= 0, 1.0, -1.0) * alpha[:, None, None, None])
    bc = binary_weight(w, "binaryconnect")
    assert bc.abs().unique().numel() == 1


def test_binarize_model_keeps_first_and_last_and_binarizes_activations():
    m = _mlp()
    b = binarize(m, activations=True)
    assert torch.equal(b[0].weight, m[0].weight) and torch.equal(b[4].weight, m[4].weight)
    inner = b[2]
    assert isinstance(inner[0], BinaryActivation)
    assert all(row.abs().unique().numel() == 1 for row in inner[1].weight)
    x = torch.randn(3, 64)
    xb = inner[0](x)
    assert torch.allclose(xb.abs(), x.abs().mean(1, keepdim=True).expand_as(x))  # sign(x) * mean|x|
    assert b(torch.randn(5, 32)).shape == (5, 4)


def test_loss_aware_binarization_uses_curvature():
    m = _mlp()
    data = [(torch.randn(16, 32), torch.randint(0, 4, (16,))) for _ in range(2)]
    lab = binarize(m, method="lab", data=data)
    xnor = binarize(m)
    assert all(row.abs().unique().numel() == 1 for row in lab[2].weight)
    assert not torch.allclose(lab[2].weight.abs(), xnor[2].weight.abs())  # curvature-weighted scales


def test_ternary_and_ttq_training():
    m = _mlp()
    t = ternarize(m)
    assert t[2].weight.unique().numel() <= 3
    data = [(torch.randn(32, 32), torch.randint(0, 4, (32,))) for _ in range(3)]
    trained = train_lowbit(m, data, method="ttq", epochs=2, lr=1e-2)
    vals = trained[2].weight.unique()
    assert vals.numel() <= 3 and (vals == 0).any()
    assert torch.equal(trained[0].weight.isfinite(), torch.ones_like(trained[0].weight, dtype=torch.bool))


def test_binaryconnect_training_gives_binary_weights_and_learns():
    torch.manual_seed(0)
    x = torch.randn(256, 32)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    data = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    m = _mlp()
    trained = train_lowbit(m, data, method="xnor", epochs=8, lr=3e-3)
    assert all(row.abs().unique().numel() == 1 for row in trained[2].weight)
    acc = (trained(x).argmax(1) == y).float().mean()
    assert acc > 0.6


def test_bit_allocation_respects_budget_and_sensitivity():
    m = _mlp()
    data = [torch.randn(32, 32)]
    alloc = allocate_bits(m, torch.randn(1, 32), data, avg_bits=4, choices=(2, 4, 8))
    numel = sum(m.get_submodule(n).weight.numel() for n in alloc)
    assert weight_bytes(m, alloc) <= numel * 4 / 8
    assert set(alloc.values()) <= {2, 4, 8}
    q = fixed_point(m, alloc)
    assert q(torch.randn(2, 32)).shape == (2, 4)


def test_bit_packed_dsz_encodings(tmp_path):
    w = binary_weight(torch.randn(64, 256))
    name, enc = encode_tensor(w, encoding="binary_rows")
    assert len(enc.streams["signs"]) == 64 * 256 // 8  # 1 bit per weight
    name, _ = encode_tensor(w)  # the automatic choice picks it
    assert name == "binary_rows"
    f = quantize_rows(torch.randn(32, 40), 3)
    assert encode_tensor(f, encoding="fixed_rows")[1].params["bits"] == 3
    m = _mlp()
    for variant in (binarize(m), fixed_point(m, 4), ternarize(m)):
        path = tmp_path / "m.dsz"
        E.save(variant, path)
        back = E.load(path)
        for (k, a), b in zip(variant.state_dict().items(), back.state_dict().values(), strict=True):
            assert torch.equal(a, b), k
    E.save(m, tmp_path / "fp32.dsz")
    E.save(binarize(m, keep_first_last=False), tmp_path / "bin.dsz")
    assert (tmp_path / "bin.dsz").stat().st_size * 10 < (tmp_path / "fp32.dsz").stat().st_size
