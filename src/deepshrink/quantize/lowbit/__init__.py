"""Low-bit and binary weights: fixed-point 2-8 bits, BinaryConnect / XNOR-Net, LAB, ternary (TTQ).

Every function returns a copy whose Conv/Linear layers are still plain `torch.nn` layers holding the
low-bit values in float (so any runtime runs them), plus the bit-packed storage in .dsz through
the encodings registered in `deepshrink.quantize.lowbit.dsz` ("binary_rows", "fixed_rows"):
a binarized weight costs 1 bit per element plus one fp32 scale per output channel.

- `fixed_point(model, bits)`: symmetric per-channel k-bit weights (`bits` an int or
  `{selector: bits}`); `allocate_bits(...)` picks per-layer bit widths under a size budget from
  measured sensitivities (greedy on error increase per byte saved).
- `binarize(model, method=...)`: post-training ``xnor`` (sign * per-channel mean|w|, Rastegari et
  al.), ``binaryconnect`` (sign, one scale per layer, Courbariaux et al.), ``lab`` (loss-aware:
  scale = ||d*w||_1 / ||d||_1 with d a diagonal curvature estimate from data, Hou et al.);
  ``activations=True`` also binarizes layer inputs (XNOR-Net: sign(x) * mean|x| per sample).
- `ternarize(model)`: {-Wn, 0, +Wp} per layer (TTQ initialisation, threshold t * max|w|).
- `train_lowbit(model, data, method=...)`: training with straight-through estimators
  (parametrizations over the latent float weights; TTQ learns Wp/Wn), then baked in.

CPU execution: the layers run the ordinary fp32 kernels on the low-bit values: correct, and exactly
as fast as fp32 (PyTorch has no popcount/bit-serial GEMM); the gain is storage, not speed.

Example:
    >>> import torch
    >>> from torch import nn
    >>> b = binarize(nn.Linear(8, 4))
    >>> int(b.weight.abs().unique().numel()) <= 4   # one |value| per output row
    True
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ...errors import InputError
from ...inputs import as_inputs, iter_inputs, iter_labelled
from ...selectors import override_for, select

log = logging.getLogger(__name__)

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _targets(model: nn.Module, include, exclude) -> list[str]:
    cands = [n for n, m in model.named_modules() if n and isinstance(m, _LAYERS)]
    if not cands and isinstance(model, _LAYERS):
        return [""]
    return select(model, include, exclude, candidates=cands)


def _rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def quantize_rows(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel fixed-point: `q * scale` with q in [-(2^(b-1)-1), 2^(b-1)-1]."""
    if not 2 <= bits <= 8:
        raise InputError(f"bits must be in [2, 8], got {bits}")
    qmax = 2 ** (bits - 1) - 1
    scale = (_rows(w).abs().amax(1) / qmax).clamp(min=1e-12).to(torch.float32)
    q = torch.clamp(torch.round(_rows(w) / scale[:, None]), -qmax, qmax)
    return (q * scale[:, None]).reshape(w.shape).to(w.dtype)  # exactly what the "fixed_rows" decoder computes


@torch.no_grad()
def fixed_point(model: nn.Module, bits: int | dict = 4, *, include=None, exclude=()) -> nn.Module:
    """A copy with k-bit symmetric per-channel weights (`bits`: int or `{selector: bits}`).

    Example:
        >>> import torch
        >>> m = fixed_point(torch.nn.Linear(16, 2), bits=2)
        >>> int(m.weight[0].unique().numel()) <= 3
        True
    """
    out = copy.deepcopy(model)
    for name in _targets(out, include, exclude):
        mod = out.get_submodule(name) if name else out
        b = override_for(name, mod, bits, None) if isinstance(bits, dict) else bits
        if b is None or b >= 32:
            continue
        mod.weight.copy_(quantize_rows(mod.weight, int(b)))
    return out


def weight_bytes(model: nn.Module, bits: dict[str, int]) -> int:
    """Storage of the Conv/Linear weights at `bits` per layer (plus one fp32 scale per row; 32 = fp32)."""
    total = 0
    for name, b in bits.items():
        w = model.get_submodule(name).weight
        total += (w.numel() * b + 7) // 8 + (4 * w.shape[0] if b < 32 else 0)
    return total


@torch.no_grad()
def _cosine(ref: nn.Module, cand: nn.Module, batches: list[tuple]) -> float:
    from ...measure.fidelity import compare_outputs

    return compare_outputs(ref, cand, batches, n_inputs=len(batches[0])).cosine


@torch.no_grad()
def allocate_bits(model: nn.Module, example_inputs: Any, data: Any, *, budget_bytes: int | None = None,
                  avg_bits: float | None = None, choices: tuple = (2, 3, 4, 6, 8), include=None,
                  exclude=(), batches: int = 4) -> dict[str, int]:
    """Per-layer bit widths under a weight-size budget, driven by measured sensitivity.

    Each layer's output error (1 - cosine to the float model on `data`) is measured with only that
    layer at each bit width; starting from the widest choice, the layer whose next narrower width
    adds the least error per byte saved is narrowed until the budget holds.

    Args:
        budget_bytes: weight storage budget (see `weight_bytes`), or
        avg_bits: the same expressed as average bits per weight.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> alloc = allocate_bits(m, torch.randn(1, 8), [torch.randn(16, 8)], avg_bits=4)
        >>> sorted(alloc) == ["0", "2"]
        True
    """
    inputs = as_inputs(example_inputs)
    names = _targets(model, include, exclude)
    if not names:
        raise InputError("no Conv/Linear layer to allocate bits to")
    numel = sum(model.get_submodule(n).weight.numel() for n in names)
    if budget_bytes is None:
        if avg_bits is None:
            raise InputError("give budget_bytes or avg_bits")
        budget_bytes = int(numel * avg_bits / 8)
    data_b = [b[: len(inputs)] for b in iter_inputs(data, None, limit=batches)]
    choices = tuple(sorted(set(int(c) for c in choices), reverse=True))
    err: dict[tuple[str, int], float] = {}
    for n in names:
        for b in choices:
            err[(n, b)] = 1.0 - _cosine(model, fixed_point(model, {n: b}), data_b)
    alloc = {n: choices[0] for n in names}
    while weight_bytes(model, alloc) > budget_bytes:
        best, best_rate = None, None
        for n in names:
            i = choices.index(alloc[n])
            if i + 1 >= len(choices):
                continue
            nb = choices[i + 1]
            saved = weight_bytes(model, {n: alloc[n]}) - weight_bytes(model, {n: nb})
            rate = max(err[(n, nb)] - err[(n, alloc[n])], 0.0) / max(saved, 1)
            if best_rate is None or rate < best_rate:
                best, best_rate = (n, nb), rate
        if best is None:
            log.warning("budget %d bytes unreachable with bit choices %s", budget_bytes, choices)
            break
        alloc[best[0]] = best[1]
    return alloc


class BinaryActivation(nn.Module):
    """XNOR-Net input binarization: sign(x) * mean|x| per sample, straight-through gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = x.abs().reshape(x.shape[0], -1).mean(1).reshape((-1,) + (1,) * (x.dim() - 1))
        xb = _sign(x) * beta
        xc = x.clamp(-1, 1)  # gradient passes where |x| <= 1 (hard-tanh STE)
        return (xb - xc).detach() + xc


def _sign(w: torch.Tensor) -> torch.Tensor:
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


def binary_weight(w: torch.Tensor, method: str = "xnor", curvature: torch.Tensor | None = None) -> torch.Tensor:
    """`alpha * sign(w)`: per-row mean|w| (xnor), per-layer mean|w| (binaryconnect), or LAB's
    curvature-weighted per-row scale ||d*w||_1 / ||d||_1."""
    s = _sign(w)
    if method == "xnor":
        alpha = _rows(w).abs().mean(1)
    elif method == "binaryconnect":
        alpha = w.abs().mean().expand(w.shape[0])
    elif method == "lab":
        if curvature is None:
            raise InputError("loss-aware binarization needs a curvature estimate (pass data)")
        d = _rows(curvature).clamp(min=0) + 1e-12
        alpha = (d * _rows(w).abs()).sum(1) / d.sum(1)
    else:
        raise InputError(f"unknown binarization {method!r}; use 'xnor', 'binaryconnect' or 'lab'")
    alpha = alpha.to(torch.float32)
    return (_rows(s) * alpha[:, None]).reshape(w.shape).to(w.dtype)


def curvature(model: nn.Module, data: Any, names: list[str], *, n_inputs: int = 1, batches: int = 8,
              loss: Callable | None = None) -> dict[str, torch.Tensor]:
    """Diagonal curvature (empirical Fisher: mean squared gradient) of each named layer's weight."""
    from ...distill.loop import default_loss

    loss = loss or default_loss
    acc = {n: torch.zeros_like(model.get_submodule(n).weight) for n in names}
    count = 0
    model.eval()
    for inputs, target in iter_labelled(data, n_inputs, limit=batches):
        model.zero_grad(set_to_none=True)
        loss(model(*inputs), target).backward()
        for n in names:
            g = model.get_submodule(n).weight.grad
            if g is not None:
                acc[n] += g.detach() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    if count == 0:
        raise InputError("curvature estimation needs labelled data batches")
    return {n: a / count for n, a in acc.items()}


def _wrap_activation(model: nn.Module, name: str) -> nn.Module:
    from ..int8.graph import _set_submodule

    layer = model.get_submodule(name)
    wrapped = nn.Sequential(BinaryActivation(), layer)
    if not name:
        return wrapped
    _set_submodule(model, name, wrapped)
    return model


def binarize(model: nn.Module, *, method: str = "xnor", activations: bool = False, data: Any = None,
             include=None, exclude=(), keep_first_last: bool = True) -> nn.Module:
    """Post-training binarization of Conv/Linear weights (optionally activations); returns a copy.

    Args:
        method: "xnor", "binaryconnect" or "lab" (needs labelled `data` for the curvature).
        activations: also binarize each binarized layer's input (XNOR-Net); layers keep their name
            inside an `nn.Sequential(BinaryActivation(), layer)`.
        keep_first_last: leave the first and last layer in float (standard practice).

    Example:
        >>> import torch
        >>> m = binarize(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)), keep_first_last=False)
        >>> set(m[0].weight[0].abs().tolist()) == {float(m[0].weight[0].abs()[0])}
        True
    """
    out = copy.deepcopy(model)
    names = _targets(out, include, exclude)
    if keep_first_last and len(names) > 2 and include is None:
        names = names[1:-1]
    curv = curvature(out, data, names) if method == "lab" else {}
    with torch.no_grad():
        for n in names:
            mod = out.get_submodule(n) if n else out
            mod.weight.copy_(binary_weight(mod.weight, method, curv.get(n)))
    if activations:
        for n in names:
            out = _wrap_activation(out, n)
    return out


def ternary_weight(w: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor, threshold: float) -> torch.Tensor:
    delta = threshold * w.abs().max()
    pos, neg = (w > delta).to(w.dtype), (w < -delta).to(w.dtype)
    return wp * pos - wn * neg


def ternarize(model: nn.Module, *, threshold: float = 0.05, include=None, exclude=(),
              keep_first_last: bool = True) -> nn.Module:
    """Post-training ternary weights {-Wn, 0, +Wp} per layer (TTQ's initialisation); returns a copy.

    Example:
        >>> import torch
        >>> int(ternarize(torch.nn.Linear(16, 4)).weight.unique().numel()) <= 3
        True
    """
    out = copy.deepcopy(model)
    names = _targets(out, include, exclude)
    if keep_first_last and len(names) > 2 and include is None:
        names = names[1:-1]
    with torch.no_grad():
        for n in names:
            mod = out.get_submodule(n) if n else out
            w = mod.weight
            delta = threshold * w.abs().max()
            wp = w[w > delta].mean() if (w > delta).any() else w.abs().mean()
            wn = (-w[w < -delta]).mean() if (w < -delta).any() else w.abs().mean()
            mod.weight.copy_(ternary_weight(w, wp, wn, threshold))
    return out


class _BinarySTE(nn.Module):
    """Parametrization: forward binarized weight, gradient straight through to the latent weight."""

    def __init__(self, method: str):
        super().__init__()
        self.method = method

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        b = binary_weight(w.detach(), self.method)
        wc = w.clamp(-1, 1)  # BinaryConnect: no gradient once a latent weight leaves [-1, 1]
        return (b - wc).detach() + wc


class _TernarySTE(nn.Module):
    """TTQ parametrization with learned positive/negative scales Wp, Wn."""

    def __init__(self, w: torch.Tensor, threshold: float):
        super().__init__()
        self.threshold = threshold
        delta = threshold * w.abs().max()
        self.wp = nn.Parameter(w[w > delta].mean().detach().clone() if (w > delta).any() else w.abs().mean())
        self.wn = nn.Parameter((-w[w < -delta]).mean().detach().clone() if (w < -delta).any() else w.abs().mean())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        delta = self.threshold * w.detach().abs().max()
        pos, neg = (w.detach() > delta).to(w.dtype), (w.detach() < -delta).to(w.dtype)
        t = self.wp * pos - self.wn * neg
        # latent weights get the TTQ-scaled gradient: Wp on positives, 1 in the dead zone, Wn on negatives
        scale = (self.wp.detach() * pos + self.wn.detach() * neg + (1 - pos - neg))
        return t + (w * scale - (w * scale).detach())


def train_lowbit(model: nn.Module, train_data: Any, *, method: str = "xnor", epochs: float = 1.0,
                 lr: float = 1e-3, threshold: float = 0.05, include=None, exclude=(),
                 keep_first_last: bool = True, loss=None, n_inputs: int = 1, progress: bool = False) -> nn.Module:
    """Train binary ("xnor", "binaryconnect") or ternary ("ttq") weights with straight-through
    estimators via `deepshrink.distill.loop.fit`, then bake them into plain layers (a copy).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> data = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
        >>> t = train_lowbit(m, data, method="ttq", epochs=1)
        >>> int(t[2].weight.unique().numel()) <= 3
        True
    """
    from ...distill.loop import fit

    if method not in ("xnor", "binaryconnect", "ttq"):
        raise InputError(f"unknown low-bit training method {method!r}; use 'xnor', 'binaryconnect' or 'ttq'")
    out = copy.deepcopy(model)
    names = _targets(out, include, exclude)
    if keep_first_last and len(names) > 2 and include is None:
        names = names[1:-1]
    for n in names:
        mod = out.get_submodule(n)
        p = _TernarySTE(mod.weight.detach(), threshold) if method == "ttq" else _BinarySTE(method)
        parametrize.register_parametrization(mod, "weight", p)
    fit(out, train_data, epochs=epochs, lr=lr, loss=loss, n_inputs=n_inputs, progress=progress)
    for n in names:
        parametrize.remove_parametrizations(out.get_submodule(n), "weight", leave_parametrized=True)
    if method != "ttq":  # re-binarize exactly (the forward already did; this fixes dtype/row scales)
        with torch.no_grad():
            for n in names:
                w = out.get_submodule(n).weight
                w.copy_(binary_weight(w, method))
    return out.eval()


__all__ = [
    "BinaryActivation", "allocate_bits", "binarize", "binary_weight", "curvature", "fixed_point",
    "quantize_rows", "ternarize", "ternary_weight", "train_lowbit", "weight_bytes",
]


def _register_dsz() -> None:
    from . import dsz  # noqa: F401 - registers the bit-packed .dsz encodings


_register_dsz()
