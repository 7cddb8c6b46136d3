"""fp16 / bf16 conversion: the whole model in half precision, fp32 in and out.

`fp16(model)` / `bf16(model)` return a `HalfPrecision` wrapper around a half-precision copy: floating
inputs are cast to the half dtype, floating outputs back to float32, so callers keep passing fp32.
Integer inputs (token ids) pass through unchanged.

On CPUs without native fp16 arithmetic (this project's AMD EPYC has AVX-512 BF16 but not
AVX-512 FP16) fp16 kernels convert to fp32 internally and are usually *slower* than fp32; bf16 uses
oneDNN's native bf16 GEMM where available. `benchmarks/bench_quant_half.py` measures both; measure
before you ship either (`deepshrink.measure.compare_latency`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = bf16(nn.Linear(4, 2))
    >>> m(torch.randn(3, 4)).dtype
    torch.float32
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ...errors import InputError

_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_cast(v, dtype) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        out = copy.copy(value)
        for k in list(value.keys()):
            out[k] = _cast(value[k], dtype)
        return out
    return value


class HalfPrecision(nn.Module):
    """Runs `module` (already converted to `dtype`) with fp32 inputs and outputs."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.module(*_cast(args, self.dtype), **_cast(kwargs, self.dtype))
        return _cast(out, torch.float32)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


def half(model: nn.Module, dtype: str | torch.dtype = "fp16") -> HalfPrecision:
    """A half-precision copy of `model` (fp16 or bf16) that takes and returns fp32 tensors.

    Args:
        model: the float model (left untouched).
        dtype: "fp16"/"float16"/torch.float16 or "bf16"/"bfloat16"/torch.bfloat16.

    Example:
        >>> import torch
        >>> half(torch.nn.Linear(2, 2), "fp16").module.weight.dtype
        torch.float16
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise InputError(f"unknown half dtype {dtype!r}; use 'fp16' or 'bf16'")
        dtype = _DTYPES[dtype]
    if dtype not in (torch.float16, torch.bfloat16):
        raise InputError(f"half precision dtype must be float16 or bfloat16, got {dtype}")
    inner = copy.deepcopy(model).eval().to(dtype)
    return HalfPrecision(inner, dtype).eval()


def fp16(model: nn.Module) -> HalfPrecision:
    """`half(model, "fp16")`.

    Example:
        >>> import torch
        >>> fp16(torch.nn.Linear(2, 2))(torch.randn(1, 2)).dtype
        torch.float32
    """
    return half(model, torch.float16)


def bf16(model: nn.Module) -> HalfPrecision:
    """`half(model, "bf16")`.

    Example:
        >>> import torch
        >>> bf16(torch.nn.Linear(2, 2))(torch.randn(1, 2)).dtype
        torch.float32
    """
    return half(model, torch.bfloat16)


__all__ = ["HalfPrecision", "bf16", "fp16", "half"]
