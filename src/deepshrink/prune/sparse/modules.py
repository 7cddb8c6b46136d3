"""Inference modules that run a pruned Linear / 1×1 Conv2d through torch's sparse CSR/BSR kernels.

Their ``state_dict`` holds a dense ``weight`` and ``bias`` under the same keys as the layer they
replace, so weights load and save like the original. They are for inference (no autograd through
the sparse weight) and accept any batch size.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune.sparse.modules import SparseLinear
    >>> lin = nn.Linear(8, 4)
    >>> with torch.no_grad():
    ...     lin.weight[:, :6] = 0
    >>> s = SparseLinear.from_dense(lin, "csr")
    >>> x = torch.randn(3, 8)
    >>> torch.allclose(s(x), lin(x), atol=1e-6)
    True
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ...errors import InputError

FORMATS = ("csr", "bsr")


def to_sparse(weight: torch.Tensor, fmt: str, blocksize: tuple[int, int] = (4, 4)) -> torch.Tensor:
    """A 2-D dense `weight` as a CSR or BSR tensor (BSR needs the shape divisible by `blocksize`)."""
    w = weight.detach().contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        if fmt == "csr":
            return w.to_sparse_csr()
        if fmt == "bsr":
            if w.shape[0] % blocksize[0] or w.shape[1] % blocksize[1]:
                raise InputError(f"BSR blocksize {blocksize} does not divide weight shape {tuple(w.shape)}")
            return w.to_sparse_bsr(blocksize)
    raise InputError(f"unknown sparse format {fmt!r}; use one of {FORMATS}")


def _sparse_matmul(weight: torch.Tensor, bias: torch.Tensor | None, x2: torch.Tensor, fmt: str) -> torch.Tensor:
    """``x2 @ weightᵀ + bias`` for a sparse (out × in) `weight` and dense (rows × in) `x2`."""
    if fmt == "csr" and x2.shape[0] == 1:  # matrix-vector: MKL's sparse mv, no transposes
        v = x2[0]
        y = torch.mv(weight, v) if bias is None else torch.addmv(bias, weight, v)
        return y.unsqueeze(0)
    xt = x2.t()
    if bias is None:
        return torch.sparse.mm(weight, xt).t()
    return torch.sparse.addmm(bias.unsqueeze(1).expand(-1, x2.shape[0]), weight, xt).t()


class _SparseBase(nn.Module):
    fmt: str

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, fmt: str, blocksize: tuple[int, int]):
        super().__init__()
        if fmt not in FORMATS:
            raise InputError(f"unknown sparse format {fmt!r}; use one of {FORMATS}")
        self.fmt = fmt
        self.blocksize = tuple(blocksize)
        self.weight_shape = tuple(weight.shape)
        self.register_buffer("weight_sparse", to_sparse(weight.reshape(weight.shape[0], -1), fmt, blocksize),
                             persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    # the state_dict looks like the dense layer's: `weight` (dense) and `bias`
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        destination[prefix + "weight"] = self.weight_sparse.to_dense().reshape(self.weight_shape)
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            w = state_dict[key]
            if tuple(w.shape) != self.weight_shape:
                error_msgs.append(f"size mismatch for {key}: {tuple(w.shape)} vs {self.weight_shape}")
            else:
                self.weight_sparse = to_sparse(w.reshape(w.shape[0], -1), self.fmt, self.blocksize)
        elif strict:
            missing_keys.append(key)
        bkey = prefix + "bias"
        if self.bias is not None:
            if bkey in state_dict:
                with torch.no_grad():
                    self.bias.copy_(state_dict[bkey])
            elif strict:
                missing_keys.append(bkey)

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight (a copy), for inspection."""
        return self.weight_sparse.to_dense().reshape(self.weight_shape)

    def extra_repr(self) -> str:
        nnz = self.weight_sparse.values().numel()
        total = 1
        for d in self.weight_shape:
            total *= d
        return f"shape={self.weight_shape}, format={self.fmt}, stored={nnz}/{total}"


class SparseLinear(_SparseBase):
    """A Linear layer computed with a sparse CSR/BSR weight (inference only)."""

    @classmethod
    def from_dense(cls, linear: nn.Linear, fmt: str = "csr", blocksize: tuple[int, int] = (4, 4)) -> SparseLinear:
        return cls(linear.weight.detach(), linear.bias, fmt, blocksize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "csr" and x.dim() == 2 and x.shape[0] == 1:  # batch-1 fast path: one sparse mv
            v = x[0]
            y = torch.mv(self.weight_sparse, v) if self.bias is None else torch.addmv(self.bias, self.weight_sparse, v)
            return y.unsqueeze(0)
        lead = x.shape[:-1]
        y = _sparse_matmul(self.weight_sparse, self.bias, x.reshape(-1, x.shape[-1]), self.fmt)
        return y.reshape(*lead, self.weight_shape[0])


class SparseConv1x1(_SparseBase):
    """A 1×1, stride-1, unpadded, ungrouped Conv2d computed as a sparse matrix product."""

    @staticmethod
    def supports(conv: nn.Module) -> bool:
        return (
            isinstance(conv, nn.Conv2d)
            and tuple(conv.kernel_size) == (1, 1)
            and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1)
            and conv.groups == 1
            and (conv.padding in ("valid", (0, 0)) or tuple(conv.padding) == (0, 0))
        )

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, fmt: str = "csr", blocksize: tuple[int, int] = (4, 4)) -> SparseConv1x1:
        if not cls.supports(conv):
            raise InputError("SparseConv1x1 needs a 1x1, stride-1, unpadded, ungrouped Conv2d")
        return cls(conv.weight.detach(), conv.bias, fmt, blocksize)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # (N*H*W, C)
        y = _sparse_matmul(self.weight_sparse, self.bias, rows, self.fmt)  # (N*H*W, O)
        return y.reshape(n, h, w, -1).permute(0, 3, 1, 2)
