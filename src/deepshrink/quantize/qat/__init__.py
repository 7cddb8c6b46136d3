"""Quantization-aware training: fake quantization with straight-through estimators and learned scales.

`prepare(model, example_inputs, calib_data)` captures the graph, folds BatchNorm into the preceding
conv/linear (so training sees exactly the folded weights the int8 model will use: "BN-fold aware")
and the input normalization, then wraps every Conv/Linear in a `QATLayer` that fake-quantizes

- its weight per output channel, symmetric int8, with a learned step size per channel (LSQ,
  Esser et al. 2020: gradient through round() by the straight-through estimator, step-size
  gradient scaled by 1/sqrt(numel * qmax));
- its input activation per tensor with a learned step size (unsigned when the calibrated input is
  non-negative, else signed).

Train with `deepshrink.distill.loop.fit` (or any loop), then `convert(prepared, ...)` snaps the
weights to their learned grids, unwraps the layers and runs `deepshrink.quantize.int8` (static,
torch.ao x86 kernels) with the *learned* quantization parameters (`learned_qparams`): each
layer's int8 weight scales are its learned per-channel steps (so the int8 weights are exactly the
fake-quant integers) and the uint8 quantization of its input uses its learned activation step
(zero point 0 for an unsigned grid, 128 for a signed one). The real int8 model therefore equals
the fake-quant model up to rounding; only what QAT does not fake-quantize is calibrated (the
requantization of the last layer's output, int32 biases). `learned_scales=False` re-derives
scales from the snapped weights and calibration data instead (the older behaviour).

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> p = prepare(m, torch.randn(2, 8), [torch.randn(16, 8)])
    >>> sum(isinstance(x, QATLayer) for x in p.modules())
    2
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...inputs import as_inputs, iter_inputs

log = logging.getLogger(__name__)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() in the forward pass, identity gradient in the backward pass (straight-through)."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; gradient multiplied by `scale` (LSQ step-size gradient scaling)."""
    return (x - x * scale).detach() + x * scale


def lsq_quant(x: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """LSQ fake quantization: `round(clamp(x / s, qmin, qmax)) * s` with STE and scaled step gradient."""
    g = 1.0 / math.sqrt(max(x.numel() // max(step.numel(), 1), 1) * qmax)
    s = grad_scale(step, g)
    return round_ste(torch.clamp(x / s, qmin, qmax)) * s


class QATLayer(nn.Module):
    """A Conv/Linear with LSQ fake-quantized weight (per channel) and input (per tensor)."""

    def __init__(self, layer: nn.Module, act_min: float, act_max: float, bits: int = 8):
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            raise InputError(f"QATLayer wraps Linear/Conv layers, not {type(layer).__name__}")
        self.layer = layer
        self.bits = bits
        self.w_qmax = 2 ** (bits - 1) - 1
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        # LSQ initialisation 2*mean|w|/sqrt(qmax), never below the max/qmax range fit
        init = torch.maximum(2 * w.abs().mean(1) / math.sqrt(self.w_qmax), w.abs().amax(1) / self.w_qmax * 0.5)
        self.w_step = nn.Parameter(init.clamp(min=1e-8))
        self.unsigned = act_min >= 0
        self.a_qmin, self.a_qmax = (0, 2**bits - 1) if self.unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        span = act_max if self.unsigned else max(abs(act_min), abs(act_max))
        self.a_step = nn.Parameter(torch.tensor(max(span, 1e-6) / self.a_qmax))
        self.enabled = True

    def fake_weight(self) -> torch.Tensor:
        w = self.layer.weight
        step = self.w_step.reshape((-1,) + (1,) * (w.dim() - 1)).abs() + 1e-12
        return lsq_quant(w, step, -self.w_qmax - 1, self.w_qmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.layer(x)
        xq = lsq_quant(x, self.a_step.abs() + 1e-12, self.a_qmin, self.a_qmax)
        w = self.fake_weight()
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(xq, w, self.layer.bias)
        return self.layer._conv_forward(xq, w, self.layer.bias)


@torch.no_grad()
def prepare(model: nn.Module, example_inputs: Any, calib_data: Any, *, bits: int = 8,
            exclude: tuple = (), calib_batches: int = 8) -> nn.Module:
    """A traced, BN-folded copy of `model` whose Conv/Linear layers are `QATLayer`s.

    Args:
        model: float model (left untouched).
        example_inputs: tensor or tuple of tensors.
        calib_data: input batches used to initialise the activation step sizes.
        bits: fake-quantization bit width (8 for int8 conversion; 2-8 for low-bit experiments).
        exclude: layer names kept float.

    Example:
        >>> import torch
        >>> p = prepare(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(1, 4), [torch.randn(8, 4)])
        >>> type(p.get_submodule("0")).__name__
        'QATLayer'
    """
    from ..int8 import graph as G

    if not 2 <= bits <= 8:
        raise InputError(f"bits must be in [2, 8], got {bits}")
    inputs = as_inputs(example_inputs)
    gm = G.trace(model)
    G.fold_batchnorm(gm)
    G.view_to_reshape(gm)
    G.fold_input_affine(gm)
    names = [n for n in G.weighted_layers(gm) if n not in set(exclude)]
    ranges: dict[str, list[float]] = {n: [math.inf, -math.inf] for n in names}
    hooks = []
    for n in names:
        def hook(mod, args, _n=n):
            r = ranges[_n]
            r[0], r[1] = min(r[0], float(args[0].min())), max(r[1], float(args[0].max()))
        hooks.append(gm.get_submodule(n).register_forward_pre_hook(hook))
    batches = list(iter_inputs(calib_data, None, limit=calib_batches))
    if not batches:
        from ...errors import CalibrationError

        raise CalibrationError("QAT needs calibration batches to initialise activation scales")
    for b in batches:
        gm(*b[: len(inputs)])
    for h in hooks:
        h.remove()
    for n in names:
        lo, hi = ranges[n]
        G._set_submodule(gm, n, QATLayer(gm.get_submodule(n), lo, hi, bits))
    gm.recompile()
    return gm


@torch.no_grad()
def strip(prepared: nn.Module) -> nn.Module:
    """A float copy with each QATLayer replaced by its layer, weights snapped to the learned grid."""
    from ..int8 import graph as G

    out = copy.deepcopy(prepared).eval()
    for name, mod in list(out.named_modules()):
        if isinstance(mod, QATLayer):
            layer = mod.layer
            layer.weight.copy_(mod.fake_weight())
            G._set_submodule(out, name, layer)
    if isinstance(out, torch.fx.GraphModule):
        out.recompile()
    return out


@torch.no_grad()
def learned_qparams(prepared: nn.Module) -> dict[str, dict]:
    """Per QATLayer name: its learned weight scales and input activation scale / uint8 zero point.

    The format is `deepshrink.quantize.int8(..., fixed_qparams=...)`'s. Only 8-bit layers qualify.

    Example:
        >>> import torch
        >>> p = prepare(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(1, 4), [torch.randn(8, 4)])
        >>> sorted(learned_qparams(p)["0"])
        ['act_scale', 'act_zero_point', 'weight_scale']
    """
    out = {}
    for name, mod in prepared.named_modules():
        if isinstance(mod, QATLayer) and mod.enabled and mod.bits == 8:
            out[name] = {
                "weight_scale": (mod.w_step.detach().abs() + 1e-12).float().clone(),
                "act_scale": float(mod.a_step.detach().abs() + 1e-12),
                "act_zero_point": 0 if mod.unsigned else 2 ** (mod.bits - 1),
            }
    return out


def convert(prepared: nn.Module, example_inputs: Any, calib_data: Any, *, learned_scales: bool | None = None,
            **int8_kwargs: Any) -> nn.Module:
    """The real int8 model from a QAT-trained `prepared` model (`deepshrink.quantize.int8`, static).

    With `learned_scales` (default: on for backend "x86", the default) the int8 kernels use the learned LSQ weight and activation
    steps (`learned_qparams`), so the result equals the fake-quant model up to rounding; this needs
    backend "x86" and full-range (8-bit) activations, and disables CLE / bias correction (they would
    move the weights off their learned grid). `learned_scales=False` lets `int8` re-derive scales.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> p = prepare(nn.Sequential(nn.Linear(4, 2)), torch.randn(1, 4), [torch.randn(8, 4)])
        >>> q = convert(p, torch.randn(1, 4), [torch.randn(8, 4)], fallback_slow=False, engine="fbgemm")
        >>> q.quant_info.mode
        'static'
    """
    from ..int8.api import int8

    int8_kwargs.setdefault("equalize", False)  # training already shaped the weights
    int8_kwargs.setdefault("bias_correction", False)
    if learned_scales is None:
        learned_scales = int8_kwargs.get("backend", "x86") == "x86"
    if learned_scales:
        if int8_kwargs.get("backend", "x86") != "x86":
            raise InputError("learned_scales=True converts through backend 'x86'; pass learned_scales=False "
                             "to re-derive scales for another backend")
        if int8_kwargs["equalize"] or int8_kwargs["bias_correction"] or int8_kwargs.get("reduce_range"):
            raise InputError("learned_scales=True is incompatible with equalize, bias_correction and reduce_range")
        int8_kwargs["reduce_range"] = False
        int8_kwargs["fixed_qparams"] = learned_qparams(prepared)
    return int8(strip(prepared), example_inputs, calib_data, **int8_kwargs)


def qat(model: nn.Module, example_inputs: Any, train_data: Any, calib_data: Any, *, epochs: float = 1.0,
        lr: float = 1e-4, loss=None, bits: int = 8, exclude: tuple = (), convert_to_int8: bool = True,
        progress: bool = False, **int8_kwargs: Any) -> nn.Module:
    """Prepare, train with `deepshrink.distill.loop.fit`, and convert to the real int8 model.

    Args:
        model: float model (left untouched).
        example_inputs: tensor or tuple of tensors.
        train_data: re-iterable of `(*inputs, target)` batches.
        calib_data: input batches (scale initialisation and the int8 conversion's calibration).
        epochs, lr, loss: training settings (`fit`'s).
        bits: fake-quant bit width; conversion to int8 needs 8.
        convert_to_int8: return the int8 model (else the trained fake-quant model).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 3))
        >>> data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
        >>> q = qat(m, torch.randn(1, 4), data, [torch.randn(8, 4)], epochs=1, engine="fbgemm", fallback_slow=False)
        >>> q(torch.randn(2, 4)).shape
        torch.Size([2, 3])
    """
    from ...distill.loop import fit

    prepared = prepare(model, example_inputs, calib_data, bits=bits, exclude=exclude)
    fit(prepared, train_data, epochs=epochs, lr=lr, loss=loss, progress=progress,
        n_inputs=len(as_inputs(example_inputs)))
    if not convert_to_int8:
        return prepared.eval()
    if bits != 8:
        raise InputError("only bits=8 converts to the int8 model; use convert_to_int8=False for low-bit QAT")
    return convert(prepared, example_inputs, calib_data, **int8_kwargs)


__all__ = ["QATLayer", "convert", "learned_qparams", "lsq_quant", "prepare", "qat", "round_ste", "strip"]
