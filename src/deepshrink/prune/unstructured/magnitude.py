"""Magnitude pruning (Han et al.; class-blind global ranking, See et al.) with persistent masks.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune import magnitude, finalize
    >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> p = magnitude(m, 0.5, scope="layer")
    >>> round(float((p[0].weight == 0).float().mean()), 2)
    0.5
    >>> plain = finalize(p)          # hooks and masks gone, zeros stay
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from .constraints import buffer_name, constrain, constraints_of, release_all
from .masks import ScoreFn, Target, plan_masks, targets, weight_names

log = logging.getLogger(__name__)


def prune_by_scores_(
    model: nn.Module,
    sparsity: float,
    score_fn: ScoreFn,
    *,
    scope: str = "global",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
) -> list[dict]:
    """Prune `model` in place by `score_fn(target) -> importance` and return per-tensor report rows
    (``layer``, ``granularity``, ``numel``, ``target``, and ``sparsity`` or ``skipped``)."""
    tgts = targets(
        model, sparsity, scope=scope, include=include, exclude=exclude, overrides=overrides, granularity=granularity
    )
    rows, masks = plan_masks(tgts, sparsity, score_fn)
    by_name = {t.name: t for t in tgts}
    for name, mask in masks.items():
        t = by_name[name]
        constrain(t.module, t.param, "mask", mask)
    for r in rows:
        if "skipped" in r:
            log.info("pruning skipped %s: %s", r["layer"], r["skipped"])
    return rows


def _abs(t: Target) -> torch.Tensor:
    return t.tensor.detach().abs()


def magnitude_(
    model: nn.Module,
    sparsity: float,
    *,
    scope: str = "global",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
) -> nn.Module:
    """In-place `magnitude`; returns `model`. See `magnitude` for the arguments.

    Example:
        >>> from torch import nn
        >>> m = magnitude_(nn.Linear(10, 10), 0.9)
        >>> int((m.weight == 0).sum())
        90
    """
    prune_by_scores_(
        model, sparsity, _abs, scope=scope, exclude=exclude, include=include, overrides=overrides,
        granularity=granularity,
    )
    return model


def magnitude(
    model: nn.Module,
    sparsity: float,
    *,
    scope: str = "global",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
) -> nn.Module:
    """A copy of `model` whose smallest-magnitude weights are zero and stay zero through training.

    The zeros are kept by a non-persistent mask buffer per weight plus gradient, optimizer-step and
    forward hooks, so they survive any training loop and optimizer (momentum, Adam, weight decay);
    ``state_dict()`` keys are unchanged. `finalize` removes the machinery, leaving plain tensors.

    Args:
        model: the model (left untouched).
        sparsity: fraction of the selected weights to prune, in [0, 1).
        scope: ``"global"`` ranks all selected weights together (class-blind), ``"layer"`` prunes
            every tensor to `sparsity`.
        exclude: selectors (name, ``re:``, ``type:``) of layers left dense.
        include: selectors of the layers to prune (default: every Linear, Conv, Embedding and
            RNN/LSTM/GRU weight).
        overrides: ``{selector: sparsity}`` or ``{selector: {"sparsity": s, "granularity": g}}``,
            first match wins; overridden layers leave the global ranking.
        granularity: ``"weight"``, ``"vector"``, ``"kernel"``, ``"N:M"`` or ``"balanced[:B]"``
            (see `deepshrink.prune.unstructured.masks`); N:M fixes a layer's sparsity at 1 - N/M.

    Raises:
        InputError: sparsity out of [0, 1), unknown scope/granularity, a selector matching nothing,
            or no prunable layer.

    Example:
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 10))
        >>> p = magnitude(m, 0.8, overrides={"1": 0.5})
        >>> [round(v, 2) for v in sparsity_report(p)["layers"].values()]
        [0.8, 0.5]
    """
    return magnitude_(
        copy.deepcopy(model), sparsity, scope=scope, exclude=exclude, include=include, overrides=overrides,
        granularity=granularity,
    )


def finalize(model: nn.Module) -> nn.Module:
    """Remove pruning masks and hooks in place, leaving plain parameters with exact zeros; returns `model`.

    Example:
        >>> from torch import nn
        >>> m = finalize(magnitude(nn.Linear(4, 4), 0.5))
        >>> sorted(m.state_dict())
        ['bias', 'weight']
    """
    return release_all(model, "mask")


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<module>.<param>": keep-mask}`` of the masks currently on `model`."""
    out = {}
    for mname, m in model.named_modules():
        for p, kind in constraints_of(m).items():
            if kind == "mask":
                out[f"{mname}.{p}" if mname else p] = getattr(m, buffer_name(p, "mask"))
    return out


def sparsity_report(model: nn.Module) -> dict:
    """Fraction of exact zeros per prunable weight and overall.

    Returns ``{"layers": {name: sparsity}, "zeros": int, "numel": int, "sparsity": float}``.
    """
    layers, zeros, numel = {}, 0, 0
    for mname, m in model.named_modules():
        for p in weight_names(m):
            w = getattr(m, p).detach()
            z = int((w == 0).sum())
            layers[f"{mname}.{p}" if mname else p] = z / max(w.numel(), 1)
            zeros += z
            numel += w.numel()
    return {"layers": layers, "zeros": zeros, "numel": numel, "sparsity": zeros / max(numel, 1)}
