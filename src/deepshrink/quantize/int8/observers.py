"""Calibration observers: min/max, percentile, MSE and entropy (KL) clipping ranges.

One observer class, `CalibrationObserver`, plugs into torch.ao's FX flow (it is a
`UniformQuantizationObserverBase`). It keeps the running min/max plus a bounded, seeded random
sample of the observed values, and turns them into a clipping range with the chosen `method`:

- ``minmax``: the full observed range.
- ``percentile``: the `percentile` / `100 - percentile` quantiles of the sample.
- ``mse``: the clipping range (a fraction of min/max, grid-searched) that minimizes the
  quantize-dequantize mean squared error on the sample.
- ``entropy``: TensorRT-style KL-divergence calibration on a 2048-bin histogram of the sample.

The same range functions (`clip_range`) serve the onnxruntime backend and the tests.

Example:
    >>> import torch
    >>> obs = CalibrationObserver(method="percentile", percentile=99.0)
    >>> _ = obs(torch.randn(10_000))
    >>> scale, zp = obs.calculate_qparams()
    >>> float(scale) < 8 / 255
    True
"""

from __future__ import annotations

import math

import torch
from torch.ao.quantization.observer import UniformQuantizationObserverBase

from ...errors import InputError

METHODS = ("minmax", "percentile", "mse", "entropy")
SAMPLE_CAP = 1 << 18  # values kept per observer (bounded memory whatever the calibration size)
PER_BATCH = 1 << 14  # values sampled from each observed batch


def check_method(method: str) -> str:
    """Validate a calibration method name."""
    if method not in METHODS:
        raise InputError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return method


def _fake_quant(x: torch.Tensor, lo: float, hi: float, levels: int) -> torch.Tensor:
    scale = max(hi - lo, 1e-12) / (levels - 1)
    return torch.clamp(torch.round((x - lo) / scale), 0, levels - 1) * scale + lo


def _mse_range(x: torch.Tensor, lo: float, hi: float, levels: int) -> tuple[float, float]:
    best, best_err = (lo, hi), math.inf
    for frac in torch.linspace(0.2, 1.0, 41).tolist():
        a, b = lo * frac, hi * frac
        err = float(((_fake_quant(x.clamp(a, b), a, b, levels) - x) ** 2).mean())
        if err < best_err:
            best, best_err = (a, b), err
    return best


def _kl_threshold(absx: torch.Tensor, levels: int, bins: int = 2048) -> float:
    """TensorRT's entropy calibration: the |x| threshold minimizing KL(P || Q)."""
    top = float(absx.max())
    if top <= 0:
        return 0.0
    hist = torch.histc(absx, bins=bins, min=0.0, max=top).double()
    width = top / bins
    best_t, best_kl = top, math.inf
    start = max(levels, 128)
    for i in range(start, bins + 1, 16):
        p = hist[:i].clone()
        p[-1] += hist[i:].sum()
        nz = p > 0
        # merge the i reference bins into `levels` quantized bins, then expand back over non-zeros
        idx = (torch.arange(i, dtype=torch.float64) * levels / i).floor().long()
        q_sum = torch.zeros(levels, dtype=torch.float64).index_add_(0, idx, hist[:i])
        q_cnt = torch.zeros(levels, dtype=torch.float64).index_add_(0, idx, nz.double())
        q = torch.where(nz, q_sum[idx] / q_cnt[idx].clamp(min=1), torch.zeros_like(p))
        p_n, q_n = p / p.sum(), q / max(float(q.sum()), 1e-12)
        mask = p_n > 0
        kl = float((p_n[mask] * torch.log(p_n[mask] / q_n[mask].clamp(min=1e-12))).sum())
        if kl < best_kl:
            best_kl, best_t = kl, (i + 0.5) * width
    return best_t


def clip_range(
    sample: torch.Tensor,
    lo: float,
    hi: float,
    method: str,
    *,
    percentile: float = 99.99,
    levels: int = 256,
) -> tuple[float, float]:
    """The clipping range `[lo', hi']` for `sample` (observed extremes `lo`, `hi`) under `method`."""
    check_method(method)
    lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be representable exactly
    if method == "minmax" or sample.numel() == 0 or hi - lo <= 0:
        return lo, hi
    x = sample.float()
    if method == "percentile":
        q = torch.tensor([1 - percentile / 100, percentile / 100], dtype=torch.float32)
        a, b = torch.quantile(x[: 1 << 24], q).tolist()
        return min(a, 0.0) if lo < 0 else lo, max(b, 0.0)
    if method == "mse":
        return _mse_range(x, lo, hi, levels)
    # entropy
    if lo >= 0:  # one-sided (after ReLU): all levels on [0, t]
        return 0.0, min(_kl_threshold(x, levels), hi)
    t = _kl_threshold(x.abs(), levels // 2)
    return max(-t, lo), min(t, hi)


class CalibrationObserver(UniformQuantizationObserverBase):
    """Per-tensor activation observer with a selectable clipping `method` (see module doc)."""

    min_val: torch.Tensor
    max_val: torch.Tensor

    def __init__(
        self,
        method: str = "minmax",
        percentile: float = 99.99,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        factory_kwargs=None,
        eps: float = torch.finfo(torch.float32).eps,
        is_dynamic: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(
            dtype=dtype,
            qscheme=qscheme,
            reduce_range=reduce_range,
            quant_min=quant_min,
            quant_max=quant_max,
            factory_kwargs=factory_kwargs,
            eps=eps,
            is_dynamic=is_dynamic,
            **kwargs,
        )
        self.method = check_method(method)
        self.percentile = float(percentile)
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self._samples: list[torch.Tensor] = []
        self._n_kept = 0
        self._gen = torch.Generator().manual_seed(0)

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().float().reshape(-1)
        self.min_val = torch.minimum(self.min_val, x.min())
        self.max_val = torch.maximum(self.max_val, x.max())
        if self.method != "minmax":
            if x.numel() > PER_BATCH:
                x = x[torch.randint(0, x.numel(), (PER_BATCH,), generator=self._gen)]
            self._samples.append(x.clone())
            self._n_kept += x.numel()
            if self._n_kept > SAMPLE_CAP:  # halve the pool, keep it representative
                pool = torch.cat(self._samples)
                keep = torch.randperm(pool.numel(), generator=self._gen)[: SAMPLE_CAP // 2]
                self._samples, self._n_kept = [pool[keep]], SAMPLE_CAP // 2
        return x_orig

    def clip(self) -> tuple[float, float]:
        """The clipping range chosen from what was observed."""
        lo, hi = float(self.min_val), float(self.max_val)
        if not math.isfinite(lo) or not math.isfinite(hi):
            return 0.0, 0.0
        sample = torch.cat(self._samples) if self._samples else torch.empty(0)
        levels = int(self.quant_max) - int(self.quant_min) + 1
        return clip_range(sample, lo, hi, self.method, percentile=self.percentile, levels=levels)

    def calculate_qparams(self):  # type: ignore[override]
        lo, hi = self.clip()
        return self._calculate_qparams(torch.tensor(lo), torch.tensor(hi))

    def extra_repr(self) -> str:
        return f"method={self.method}, min_val={float(self.min_val)}, max_val={float(self.max_val)}"
