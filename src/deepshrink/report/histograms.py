"""Weight-value histograms per layer: the near-zero peak that motivates pruning and coding.

Example:
    >>> from torch import nn
    >>> from deepshrink.report.histograms import weight_histograms
    >>> h = weight_histograms(nn.Linear(20, 20), nn.Linear(20, 20), bins=11)
    >>> len(h["weight"]["edges"]), sum(h["weight"]["baseline"])
    (12, 400)
"""

from __future__ import annotations

import torch
from torch import nn


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor) or not name.endswith("weight") or t.dim() < 2:
            continue
        if t.is_quantized:
            t = t.dequantize()
        if t.is_floating_point():
            out[name.removesuffix(".weight") or name] = t.detach().float().reshape(-1)
    return out


def weight_histograms(baseline: nn.Module, final: nn.Module | None = None, *, bins: int = 81, max_layers: int = 16) -> dict[str, dict]:
    """``{layer: {"edges", "baseline", "final", "baseline_zero_frac", "final_zero_frac"}}``.

    Edges are shared by both models (the baseline's symmetric range), so the plots compare.
    """
    base = _weights(baseline)
    fin = _weights(final) if final is not None else {}
    out: dict[str, dict] = {}
    for name, w in list(base.items())[:max_layers]:
        lim = float(w.abs().max()) or 1.0
        edges = torch.linspace(-lim, lim, bins + 1)
        row = {
            "edges": [round(float(e), 6) for e in edges],
            "baseline": torch.histc(w.clamp(-lim, lim), bins=bins, min=-lim, max=lim).long().tolist(),
            "baseline_zero_frac": float((w == 0).float().mean()),
        }
        if name in fin:
            f = fin[name]
            row["final"] = torch.histc(f.clamp(-lim, lim), bins=bins, min=-lim, max=lim).long().tolist()
            row["final_zero_frac"] = float((f == 0).float().mean())
            row["final_distinct"] = int(torch.unique(f).numel())
        out[name] = row
    return out
