"""Product quantization of fully connected layers (Gong et al., 2014; Jegou et al., 2011).

Each weight matrix (out x in) is split along its input dimension into `m = in / d` sub-vectors of
length `d`; the `out` sub-vectors of each subspace are clustered with k-means into `k` centroids.
A `PQLinear` keeps the codebooks (m x k x d, fp32) and one code per (row, subspace) (uint8 for
k <= 256): `out*m*log2(k)` bits plus the codebooks instead of `32*out*in` bits.

Execution: ``mode="decode"`` rebuilds the dense weight once (cached) and runs the fp32 GEMM -
as fast as the original layer; ``mode="lut"`` computes, per input, the dot products with every
centroid (B x m x k) and sums table entries selected by the codes (B x out x m gather): fewer
multiplications, but on a CPU the gather usually makes it slower than a dense GEMM (measure it).

`PQLinear` is registered with `deepshrink.encode`, so `encode.save/load` rebuild it without a
skeleton; its codes/codebooks are ordinary tensors stored by the .dsz encodings.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = product_quantize(nn.Sequential(nn.Linear(64, 32)), subvector=4, centroids=16)
    >>> type(m[0]).__name__, tuple(m[0].codes.shape)
    ('PQLinear', (32, 16))
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from ...errors import InputError
from ...selectors import select

log = logging.getLogger(__name__)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 25, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: `(centroids (k x d), assignment (n,))`."""
    n = x.shape[0]
    k = min(k, n)
    g = torch.Generator().manual_seed(seed)
    cent = x[torch.randint(0, n, (1,), generator=g)]
    for _ in range(1, k):  # k-means++
        d2 = torch.cdist(x, cent).min(1).values ** 2
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        cent = torch.cat([cent, x[torch.multinomial(probs, 1, generator=g)]])
    assign = torch.zeros(n, dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(x, cent).argmin(1)
        new = torch.zeros_like(cent).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        new = new / counts.clamp(min=1)[:, None]
        new[empty] = cent[empty]
        if torch.allclose(new, cent):
            cent = new
            break
        cent = new
    return cent, torch.cdist(x, cent).argmin(1)


class PQLinear(nn.Module):
    """A product-quantized Linear layer: codebooks (m, k, d) and codes (out, m)."""

    def __init__(self, in_features: int, out_features: int, subvector: int = 4, centroids: int = 256,
                 bias: bool = True, mode: str = "decode"):
        super().__init__()
        if in_features % subvector:
            raise InputError(f"in_features {in_features} is not a multiple of the sub-vector length {subvector}")
        if mode not in ("decode", "lut"):
            raise InputError(f"mode must be 'decode' or 'lut', got {mode!r}")
        self.in_features, self.out_features = in_features, out_features
        self.subvector, self.centroids, self.mode = subvector, centroids, mode
        m = in_features // subvector
        self.register_buffer("codebooks", torch.zeros(m, centroids, subvector))
        dtype = torch.uint8 if centroids <= 256 else torch.int16
        self.register_buffer("codes", torch.zeros(out_features, m, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._dense: torch.Tensor | None = None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, subvector: int = 4, centroids: int = 256, *, iters: int = 25,
                    mode: str = "decode", seed: int = 0) -> PQLinear:
        """Cluster `linear`'s weight sub-vectors; `centroids` is capped by the number of rows."""
        k = min(centroids, linear.out_features)
        pq = cls(linear.in_features, linear.out_features, subvector, k, linear.bias is not None, mode)
        w = linear.weight.detach().float().reshape(linear.out_features, -1, subvector)
        for j in range(w.shape[1]):
            cent, assign = kmeans(w[:, j], k, iters=iters, seed=seed + j)
            pq.codebooks[j, : cent.shape[0]] = cent
            pq.codes[:, j] = assign.to(pq.codes.dtype)
        if linear.bias is not None:
            pq.bias.copy_(linear.bias.detach())
        return pq

    def weight_dense(self) -> torch.Tensor:
        """The decoded (out x in) weight."""
        m = self.codebooks.shape[0]
        idx = self.codes.long()
        w = self.codebooks[torch.arange(m)[None, :], idx]  # (out, m, d)
        return w.reshape(self.out_features, self.in_features)

    def _load_from_state_dict(self, *args, **kwargs):
        self._dense = None
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "decode":
            if self._dense is None or self.training:
                self._dense = self.weight_dense()
            return nn.functional.linear(x, self._dense, self.bias)
        lead = x.shape[:-1]
        xs = x.reshape(-1, self.codebooks.shape[0], self.subvector)
        table = torch.einsum("bmd,mkd->bmk", xs, self.codebooks)  # dot with every centroid
        m = self.codebooks.shape[0]
        picked = table[:, torch.arange(m)[None, :], self.codes.long()]  # (B, out, m)
        y = picked.sum(-1)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def storage_bits(self) -> int:
        """Bits of codes (log2 k each) plus fp32 codebooks and bias."""
        import math

        code_bits = max(1, math.ceil(math.log2(max(self.centroids, 2))))
        return (self.codes.numel() * code_bits + self.codebooks.numel() * 32
                + (self.bias.numel() * 32 if self.bias is not None else 0))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, subvector={self.subvector}, "
                f"centroids={self.centroids}, mode={self.mode}")


def product_quantize(model: nn.Module, *, subvector: int = 4, centroids: int = 256, include=None, exclude=(),
                     mode: str = "decode", iters: int = 25, seed: int = 0) -> nn.Module:
    """A copy with selected `nn.Linear` layers replaced by `PQLinear`; layers whose input size is
    not a multiple of `subvector` stay dense (logged).

    Example:
        >>> import torch
        >>> m = product_quantize(torch.nn.Linear(8, 4), subvector=2, centroids=4)
        >>> m(torch.randn(3, 8)).shape
        torch.Size([3, 4])
    """
    from ..int8.graph import _set_submodule

    if isinstance(model, nn.Linear):
        return PQLinear.from_linear(model, subvector, centroids, iters=iters, mode=mode, seed=seed)
    out = copy.deepcopy(model)
    cands = [n for n, m in out.named_modules() if isinstance(m, nn.Linear)]
    for name in select(out, include, exclude, candidates=cands):
        lin = out.get_submodule(name)
        if lin.in_features % subvector:
            log.info("PQ: %s left dense (in_features %d not a multiple of %d)", name, lin.in_features, subvector)
            continue
        _set_submodule(out, name, PQLinear.from_linear(lin, subvector, centroids, iters=iters, mode=mode, seed=seed))
    return out


def decode(model: nn.Module) -> nn.Module:
    """A copy with every `PQLinear` turned back into a plain `nn.Linear` (decoded weights)."""
    from ..int8.graph import _set_submodule

    out = copy.deepcopy(model)
    for name, mod in list(out.named_modules()):
        if isinstance(mod, PQLinear):
            lin = nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
            with torch.no_grad():
                lin.weight.copy_(mod.weight_dense())
                if mod.bias is not None:
                    lin.bias.copy_(mod.bias)
            if not name:
                return lin
            _set_submodule(out, name, lin)
    return out


def _register() -> None:
    from ...encode import register_layer

    register_layer(PQLinear, "deepshrink.PQLinear",
                   args=("in_features", "out_features", "subvector", "centroids", "bias", "mode"))


_register()

__all__ = ["PQLinear", "decode", "kmeans", "product_quantize"]
