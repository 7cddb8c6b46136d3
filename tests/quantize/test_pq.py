"""Product quantization of Linear layers: codebooks, table lookup vs decode, .dsz round trip."""

from __future__ import annotations

import torch
from torch import nn

import deepshrink.encode as E
from deepshrink.quantize.pq import PQLinear, decode, kmeans, product_quantize


def test_kmeans_recovers_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centers])
    cent, assign = kmeans(x, 3)
    assert torch.cdist(centers, cent).min(1).values.max() < 0.2
    assert assign.unique().numel() == 3


def test_pq_exact_when_centroids_cover_rows():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    pq = PQLinear.from_linear(lin, subvector=4, centroids=8)  # 8 rows, 8 centroids: lossless
    assert torch.allclose(pq.weight_dense(), lin.weight, atol=1e-6)
    x = torch.randn(5, 16)
    assert torch.allclose(pq(x), lin(x), atol=1e-5)


def test_lut_matches_decode_and_compresses():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    dec = product_quantize(m, subvector=8, centroids=16, mode="decode")
    lut = product_quantize(m, subvector=8, centroids=16, mode="lut")
    x = torch.randn(7, 64)
    assert torch.allclose(dec(x), lut(x), atol=1e-4)
    assert isinstance(dec[0], PQLinear) and dec[0].codes.dtype == torch.uint8
    assert dec[0].storage_bits() < 0.25 * 32 * (64 * 128 + 128)
    cos = torch.nn.functional.cosine_similarity(dec(x), m(x)).mean()
    assert cos > 0.8
    plain = decode(dec)
    assert isinstance(plain[0], nn.Linear) and torch.allclose(plain(x), dec(x), atol=1e-5)


def test_pq_dsz_round_trip(tmp_path):
    torch.manual_seed(0)
    m = product_quantize(nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)), subvector=4, centroids=8)
    E.save(m, tmp_path / "pq.dsz")
    back = E.load(tmp_path / "pq.dsz")  # rebuilt without a skeleton
    assert isinstance(back[0], PQLinear)
    x = torch.randn(3, 32)
    assert torch.allclose(back(x), m(x), atol=1e-6)
