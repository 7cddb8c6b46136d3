"""Recipe steps of the quantization capability (registered with `deepshrink.recipe.register_step`).

- ``int8``: post-training int8 on real kernels (`deepshrink.quantize.int8`); static with the task's
  calibration data, dynamic otherwise (or with ``dynamic: true``).
- ``fp16`` / ``bf16``: half-precision copies taking fp32 inputs (`deepshrink.quantize.half`).

Heavy modules are imported inside `apply`, so loading a recipe stays cheap.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> r = Recipe.from_list([{"type": "int8", "backend": "onnxruntime", "calibration": "entropy"}])
    >>> r.steps[0].per_channel
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ...errors import RecipeError
from ...recipe import StepContext, register_step
from .observers import METHODS


@register_step("int8")
@dataclass(frozen=True)
class Int8Step:
    """Post-training int8 quantization running real int8 kernels."""

    backend: Literal["x86", "onnxruntime", "x86_inductor", "auto"] = "x86"  # auto: build all, keep the fastest
    calibration: Literal["minmax", "percentile", "mse", "entropy"] = "minmax"  # activation ranges
    percentile: float = 99.99  # for calibration="percentile"
    per_channel: bool = True  # per-output-channel weight scales
    reduce_range: bool | None = None  # 7-bit activations; None = only on CPUs without VNNI
    dynamic: bool = False  # ignore calibration data: weights int8, activations quantized per batch
    fold_bn: bool = True  # fold BatchNorm into the preceding conv/linear (exact)
    equalize: bool | Literal["auto"] = "auto"  # cross-layer equalization (kept if it helps)
    bias_correction: bool | Literal["auto"] = "auto"  # weight-quantization bias correction
    fallback: bool = True  # fall back the most sensitive layers to fp32 ...
    min_cosine: float = 0.99  # ... until outputs have this mean cosine to fp32
    max_fallback: int = 8  # at most this many sensitivity fallbacks
    fallback_slow: bool = True  # fall back layers whose int8 kernel is slower (timed)
    exclude: tuple = ()  # selectors kept fp32
    calib_batches: int = 32  # calibration batches used at most
    engine: Literal["auto", "fbgemm", "x86", "onednn"] = "auto"  # torch quantized engine (x86 backend)
    align_channels: bool | Literal["auto"] = "auto"  # pad conv channels to 32 where measured faster
    keep_fp32_if_slower: bool = True  # int8 measured slower than fp32 here: keep the fp32 model (recorded)

    def __post_init__(self):
        if self.calibration not in METHODS:
            raise RecipeError(f"int8: unknown calibration {self.calibration!r}; choose from {', '.join(METHODS)}")
        if self.backend not in ("x86", "onnxruntime", "x86_inductor", "auto"):
            raise RecipeError(f"int8: unknown backend {self.backend!r}")
        if not 0.0 < self.min_cosine <= 1.0:
            raise RecipeError(f"int8: min_cosine must be in (0, 1], got {self.min_cosine}")
        if not 50.0 < self.percentile <= 100.0:
            raise RecipeError(f"int8: percentile must be in (50, 100], got {self.percentile}")
        if self.max_fallback < 0 or self.calib_batches < 1:
            raise RecipeError("int8: max_fallback must be >= 0 and calib_batches >= 1")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .api import int8 as quantize
        from .auto import int8_auto

        calib = None
        if not self.dynamic and ctx.task is not None and getattr(ctx.task, "calib_data", None) is not None:
            calib = ctx.task.calib_data
        kwargs = dict(
            calibration=self.calibration, percentile=self.percentile, per_channel=self.per_channel,
            reduce_range=self.reduce_range, fold_bn=self.fold_bn, equalize=self.equalize,
            bias_correction=self.bias_correction, fallback=self.fallback, min_cosine=self.min_cosine,
            max_fallback=self.max_fallback, fallback_slow=self.fallback_slow, exclude=self.exclude,
            calib_batches=self.calib_batches, engine=self.engine, align_channels=self.align_channels,
        )
        if self.backend == "auto":
            q = int8_auto(model, ctx.example_inputs, calib, **kwargs)
        else:
            q = quantize(model, ctx.example_inputs, calib, backend=self.backend, **kwargs)
        info = q.quant_info
        for row in info.fallback:
            ctx.skip(row["layer"], row["reason"])
        ctx.row_extras.update({
            "int8_backend": info.backend, "int8_mode": info.mode, "int8_layers": len(info.quantized),
            "int8_cosine": None if info.cosine is None else round(info.cosine, 6),
            "int8_slower_than_fp32": info.slower_than_fp32,
        })
        if info.slower_than_fp32 and self.keep_fp32_if_slower:
            ms = info.latency_ms
            ctx.skip("(whole model)", f"int8 ({info.backend}) measured slower than fp32 on this CPU "
                     f"({ms.get('int8')} ms vs {ms.get('fp32')} ms at batch {ms.get('batch')}, "
                     f"{ms.get('threads')} thread): kept the fp32 model")
            ctx.row_extras["int8_kept_fp32"] = True
            return model
        return q


@register_step("fp16")
@dataclass(frozen=True)
class Fp16Step:
    """Convert to float16 (fp32 in/out). Often slower than fp32 on CPUs without native fp16."""

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..half import fp16

        return fp16(model)


@register_step("bf16")
@dataclass(frozen=True)
class Bf16Step:
    """Convert to bfloat16 (fp32 in/out); fast only where the CPU has native bf16 (AVX-512 BF16/AMX)."""

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..half import bf16

        return bf16(model)


@register_step("qat")
@dataclass(frozen=True)
class QatStep:
    """Quantization-aware training (LSQ fake quant, BN folded) then conversion to the real int8 model."""

    epochs: float = 1.0  # training epochs over task.train_data
    lr: float = 1e-4  # learning rate (small: the model is already trained)
    backend: Literal["x86", "onnxruntime"] = "x86"  # int8 backend of the converted model
    calibration: Literal["minmax", "percentile", "mse", "entropy"] = "minmax"
    exclude: tuple = ()  # layers kept float during QAT and conversion
    engine: Literal["auto", "fbgemm", "x86", "onednn"] = "auto"

    def __post_init__(self):
        if self.epochs <= 0 or self.lr <= 0:
            raise RecipeError("qat: epochs and lr must be > 0")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..qat import qat

        task = ctx.require_task("train_data", "calib_data")
        q = qat(model, ctx.example_inputs, task.train_data, task.calib_data, epochs=self.epochs, lr=self.lr,
                loss=task.loss, exclude=self.exclude, backend=self.backend, calibration=self.calibration,
                engine=self.engine, progress=ctx.progress)
        for row in q.quant_info.fallback:
            ctx.skip(row["layer"], row["reason"])
        ctx.row_extras["int8_cosine"] = q.quant_info.cosine
        return q


@register_step("binarize")
@dataclass(frozen=True)
class BinarizeStep:
    """Binary weights (XNOR / BinaryConnect / loss-aware), optionally trained with STE; 1 bit in .dsz."""

    method: Literal["xnor", "binaryconnect", "lab"] = "xnor"
    activations: bool = False  # XNOR-Net: binarize the inputs of binarized layers too
    train_epochs: float = 0.0  # > 0: train with straight-through estimators (xnor/binaryconnect)
    lr: float = 1e-3
    keep_first_last: bool = True  # first and last layer stay float
    exclude: tuple = ()

    def __post_init__(self):
        if self.train_epochs < 0 or self.lr <= 0:
            raise RecipeError("binarize: train_epochs must be >= 0 and lr > 0")
        if self.train_epochs > 0 and self.method == "lab":
            raise RecipeError("binarize: method 'lab' is post-training only here; use train_epochs=0")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..lowbit import binarize, train_lowbit

        data = None
        if self.method == "lab" or self.train_epochs > 0:
            data = ctx.require_task("train_data").train_data
        if self.train_epochs > 0:
            model = train_lowbit(model, data, method=self.method, epochs=self.train_epochs, lr=self.lr,
                                 exclude=self.exclude, keep_first_last=self.keep_first_last,
                                 loss=getattr(ctx.task, "loss", None), progress=ctx.progress)
        return binarize(model, method=self.method, activations=self.activations, data=data,
                        exclude=self.exclude, keep_first_last=self.keep_first_last)


@register_step("ternarize")
@dataclass(frozen=True)
class TernarizeStep:
    """Ternary weights {-Wn, 0, +Wp} per layer; `train_epochs` > 0 runs Trained Ternary Quantization."""

    threshold: float = 0.05  # zero where |w| < threshold * max|w|
    train_epochs: float = 0.0
    lr: float = 1e-3
    keep_first_last: bool = True
    exclude: tuple = ()

    def __post_init__(self):
        if not 0.0 <= self.threshold < 1.0 or self.train_epochs < 0:
            raise RecipeError("ternarize: threshold must be in [0, 1) and train_epochs >= 0")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..lowbit import ternarize, train_lowbit

        if self.train_epochs > 0:
            task = ctx.require_task("train_data")
            return train_lowbit(model, task.train_data, method="ttq", epochs=self.train_epochs, lr=self.lr,
                                threshold=self.threshold, exclude=self.exclude,
                                keep_first_last=self.keep_first_last, loss=task.loss, progress=ctx.progress)
        return ternarize(model, threshold=self.threshold, exclude=self.exclude,
                         keep_first_last=self.keep_first_last)


@register_step("fixed_point")
@dataclass(frozen=True)
class FixedPointStep:
    """k-bit per-channel weights: one width (`bits`) or a sensitivity-driven allocation (`avg_bits`)."""

    bits: int | None = 4  # every layer at this width (2..8), unless avg_bits is given
    avg_bits: float | None = None  # size budget in average bits/weight: per-layer widths allocated
    choices: tuple = (2, 3, 4, 6, 8)  # candidate widths for the allocation
    exclude: tuple = ()

    def __post_init__(self):
        if self.avg_bits is None and (self.bits is None or not 2 <= self.bits <= 8):
            raise RecipeError("fixed_point: bits must be in [2, 8] (or give avg_bits)")
        if self.avg_bits is not None and not 1.0 <= self.avg_bits <= 8.0:
            raise RecipeError("fixed_point: avg_bits must be in [1, 8]")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..lowbit import allocate_bits, fixed_point

        if self.avg_bits is None:
            return fixed_point(model, self.bits, exclude=self.exclude)
        data = ctx.require_task("calib_data").calib_data
        alloc = allocate_bits(model, ctx.example_inputs, data, avg_bits=self.avg_bits, choices=self.choices,
                              exclude=self.exclude)
        ctx.row_extras["bits"] = alloc
        return fixed_point(model, alloc, exclude=self.exclude)


@register_step("product_quantize")
@dataclass(frozen=True)
class ProductQuantizeStep:
    """Product quantization of Linear layers (sub-vector k-means codebooks)."""

    subvector: int = 4  # sub-vector length d (in_features must be a multiple)
    centroids: int = 256  # codebook size per subspace (<= 256: uint8 codes)
    mode: Literal["decode", "lut"] = "decode"  # run decoded dense weights, or table lookup
    exclude: tuple = ()

    def __post_init__(self):
        if self.subvector < 1 or not 2 <= self.centroids <= 65536:
            raise RecipeError("product_quantize: subvector >= 1 and 2 <= centroids <= 65536")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..pq import product_quantize

        return product_quantize(model, subvector=self.subvector, centroids=self.centroids, mode=self.mode,
                                exclude=self.exclude)
