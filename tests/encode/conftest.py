"""Shared builders for the encode tests: pruned + clustered weights like Deep Compression's."""

from __future__ import annotations

import pytest
import torch


def prune_and_cluster_(model: torch.nn.Module, sparsity: float = 0.92, bits: int = 5, seed: int = 0) -> None:
    """Global magnitude pruning of every weight, then per-layer linear-init k-means (a few Lloyd steps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
        for w in ws:  # realistic (not uniform) weight distribution
            w.copy_(torch.randn(w.shape, generator=g) * w.abs().mean())
        allw = torch.cat([w.abs().flatten() for w in ws])
        thr = allw.kthvalue(int(sparsity * len(allw))).values
        for w in ws:
            w.mul_(w.abs() > thr)
            nz = w[w != 0]
            c = torch.linspace(float(nz.min()), float(nz.max()), 2**bits)
            for _ in range(5):
                idx = (nz.unsqueeze(-1) - c).abs().argmin(-1)
                for k in range(len(c)):
                    if (idx == k).any():
                        c[k] = nz[idx == k].mean()
            idx = (w.unsqueeze(-1) - c).abs().argmin(-1)
            w.copy_(torch.where(w != 0, c[idx], w))


@pytest.fixture
def clustered_lenet300():
    from deepshrink.tasks.models import LeNet300

    torch.manual_seed(0)
    m = LeNet300().eval()
    prune_and_cluster_(m)
    return m
