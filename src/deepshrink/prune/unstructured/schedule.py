"""Pruning with retraining: iterative prune→retrain and the gradual polynomial schedule.

`gradual_prune` follows Zhu & Gupta ("To prune, or not to prune", 2017): sparsity rises from
`initial_sparsity` to `sparsity` as ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n·Δt))^3`` while the
model trains, pruning every `frequency` optimizer steps, then training goes on at the final
sparsity. `iterative_prune` is Han et al.'s loop: prune a share, retrain, repeat, with the kept
fraction shrinking geometrically over `rounds`. Both train with `deepshrink.distill.loop.fit`
and return a masked model (zeros kept through further training; `finalize` to drop the masks).

Example:
    >>> from deepshrink.prune.unstructured.schedule import polynomial_sparsity
    >>> [round(polynomial_sparsity(t, 0.9, end=10), 3) for t in (0, 5, 10, 20)]
    [0.0, 0.787, 0.9, 0.9]
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from torch import nn

from ...errors import InputError
from .magnitude import _abs, prune_by_scores_
from .masks import ScoreFn, check_sparsity

log = logging.getLogger(__name__)


def polynomial_sparsity(
    step: int, final: float, *, initial: float = 0.0, begin: int = 0, end: int, power: float = 3.0
) -> float:
    """Zhu & Gupta's sparsity at optimizer step `step` (pruning from step `begin` to `end`)."""
    if end <= begin:
        return final if step >= begin else initial
    p = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - p) ** power


def _scale_overrides(overrides: Any, fn: Callable[[float], float]) -> Any:
    """Apply `fn` to every override sparsity (floats or ``{"sparsity": ...}`` dicts)."""
    if not overrides:
        return overrides
    pairs = overrides.items() if isinstance(overrides, dict) else overrides
    out = []
    for sel, v in pairs:
        if isinstance(v, dict):
            v = dict(v)
            if "sparsity" in v:
                v["sparsity"] = fn(check_sparsity(v["sparsity"], f"override sparsity of {sel!r}"))
        elif v is not None:
            v = fn(check_sparsity(v, f"override sparsity of {sel!r}"))
        out.append((sel, v))
    return out


def _n_batches(data: Iterable) -> int:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        raise InputError("gradual/iterative pruning needs training data with a len()") from None


def gradual_prune(
    model: nn.Module,
    sparsity: float,
    data: Iterable,
    *,
    epochs: float = 4,
    lr: float = 1e-3,
    loss: Callable | None = None,
    initial_sparsity: float = 0.0,
    begin_step: int = 0,
    end_step: int | None = None,
    frequency: int | None = None,
    scope: str = "global",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    n_inputs: int = 1,
    score_fn: ScoreFn = _abs,
    progress: bool = False,
    seed: int | None = 0,
) -> nn.Module:
    """Train a copy of `model` while raising its sparsity on Zhu & Gupta's cubic schedule.

    Args:
        model: the trained model (left untouched).
        sparsity: final sparsity (per-layer `overrides` are final values too; each follows the
            same cubic ramp).
        data: re-iterable of ``(*inputs, target)`` training batches with a ``len()``.
        epochs: total training epochs (pruning stops at `end_step`, training goes on after).
        lr, loss, optimizer, weight_decay, n_inputs, progress, seed: as `deepshrink.distill.loop.fit`.
        initial_sparsity: sparsity at `begin_step`.
        begin_step, end_step: optimizer steps between which the sparsity ramps (default end:
            two thirds of all steps).
        frequency: optimizer steps between pruning updates (default: ~20 updates in the ramp).
        scope, exclude, include, overrides, granularity: as `magnitude`.
        score_fn: importance of a `Target` (default: weight magnitude).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> data = [(torch.randn(16, 8), torch.randint(0, 2, (16,)))] * 4
        >>> m = gradual_prune(nn.Linear(8, 2), 0.75, data, epochs=2)
        >>> int((m.weight == 0).sum())
        12
    """
    check_sparsity(sparsity)
    check_sparsity(initial_sparsity, "initial_sparsity")
    from ...distill.loop import fit

    model = copy.deepcopy(model)
    total = max(1, int(round(epochs * _n_batches(data))))
    end = int(end_step) if end_step is not None else max(begin_step + 1, (2 * total) // 3)
    freq = int(frequency) if frequency else max(1, (end - begin_step) // 20)
    if freq < 1:
        raise InputError(f"frequency must be >= 1, got {frequency}")
    state = {"step": 0, "last": None}

    def prune_to(step: int) -> None:
        s = polynomial_sparsity(step, sparsity, initial=initial_sparsity, begin=begin_step, end=end)
        if state["last"] is not None and abs(s - state["last"]) < 1e-9:
            return
        frac = 0.0 if sparsity == initial_sparsity else (s - initial_sparsity) / (sparsity - initial_sparsity)

        def ramp(final: float) -> float:
            return initial_sparsity + (final - initial_sparsity) * frac

        prune_by_scores_(
            model, s, score_fn, scope=scope, exclude=exclude, include=include,
            overrides=_scale_overrides(overrides, ramp), granularity=granularity,
        )
        state["last"] = s
        log.debug("gradual pruning: step %d sparsity %.4f", step, s)

    def after_step(m: nn.Module) -> None:
        state["step"] += 1
        t = state["step"]
        if begin_step <= t <= end and (t - begin_step) % freq == 0:
            prune_to(t)

    prune_to(0 if begin_step == 0 else -1)
    fit(
        model, data, epochs=epochs, lr=lr, loss=loss, optimizer=optimizer, weight_decay=weight_decay,
        n_inputs=n_inputs, after_step=after_step, progress=progress, seed=seed,
    )
    if state["last"] != sparsity:  # training ended before the ramp did
        prune_to(end)
    return model


def iterative_prune(
    model: nn.Module,
    sparsity: float,
    data: Iterable,
    *,
    rounds: int = 3,
    epochs_per_round: float = 1,
    lr: float = 1e-3,
    loss: Callable | None = None,
    scope: str = "global",
    exclude: Sequence[str] = (),
    include: Sequence[str] | None = None,
    overrides: dict | Sequence | None = None,
    granularity: str = "weight",
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    n_inputs: int = 1,
    score_fn: ScoreFn = _abs,
    progress: bool = False,
    seed: int | None = 0,
) -> nn.Module:
    """Prune a copy of `model` in `rounds` prune→retrain cycles (Han et al.).

    Round k of K prunes to ``1 - (1 - s)^(k/K)`` (the kept fraction shrinks geometrically),
    then retrains `epochs_per_round` epochs with the masks held.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> data = [(torch.randn(16, 8), torch.randint(0, 2, (16,)))] * 2
        >>> m = iterative_prune(nn.Linear(8, 2), 0.5, data, rounds=2)
        >>> int((m.weight == 0).sum())
        8
    """
    check_sparsity(sparsity)
    if not isinstance(rounds, int) or rounds < 1:
        raise InputError(f"rounds must be a positive integer, got {rounds!r}")
    from ...distill.loop import fit

    model = copy.deepcopy(model)
    for k in range(1, rounds + 1):
        expo = k / rounds

        def at(final: float, expo: float = expo) -> float:
            return 1.0 - (1.0 - final) ** expo

        prune_by_scores_(
            model, at(sparsity), score_fn, scope=scope, exclude=exclude, include=include,
            overrides=_scale_overrides(overrides, at), granularity=granularity,
        )
        if epochs_per_round > 0:
            fit(
                model, data, epochs=epochs_per_round, lr=lr, loss=loss, optimizer=optimizer,
                weight_decay=weight_decay, n_inputs=n_inputs, progress=progress,
                seed=None if seed is None else seed + k,
            )
    return model


__all__ = ["gradual_prune", "iterative_prune", "polynomial_sparsity"]
