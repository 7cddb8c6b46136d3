"""`layers`: remove whole residual blocks (layer pruning).

A candidate is a member of an ``nn.Sequential``/``nn.ModuleList`` whose output has the same shape
as its input (a residual block: ``x + f(x)``, or a transformer layer). Blocks are ranked by how
little they change their input on the example inputs (``||block(x) - x|| / ||x||``) and the
lowest `ratio` of them are replaced by `SkippedBlock` (identity), which is recorded in the history
(``{"op": "skip", ...}``) so `replay` rebuilds the same architecture.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Res(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.f = nn.Linear(8, 8)
    ...     def forward(self, x):
    ...         return x + self.f(x)
    >>> m = nn.Sequential(nn.Linear(4, 8), *[Res() for _ in range(4)], nn.Linear(8, 2))
    >>> small = layers(m, torch.randn(3, 4), 0.5)
    >>> sum(isinstance(b, SkippedBlock) for b in small)
    2
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...inputs import as_inputs
from .verify import check_runs

log = logging.getLogger(__name__)


class SkippedBlock(nn.Module):
    """Identity stand-in for a removed block; returns its first input (in a tuple of the original
    length when the block returned a tuple)."""

    def __init__(self, tuple_len: int = 0):
        super().__init__()
        self.tuple_len = tuple_len

    def forward(self, *args, **kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        if self.tuple_len:
            return (x,) + (None,) * (self.tuple_len - 1)
        return x


def _candidates(model: nn.Module) -> list[str]:
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Sequential, nn.ModuleList)):
            out.extend(f"{name}.{k}" if name else k for k, _ in mod.named_children())
    return out


def layers(model: nn.Module, example_inputs: Any, ratio: float, *, candidates: list[str] | None = None,
           verify: bool = True) -> nn.Module:
    """Return a copy of `model` with the least useful `ratio` of its shape-preserving blocks removed.

    Args:
        model: the model (left untouched).
        example_inputs: a tensor or tuple of tensors.
        ratio: share of the candidate blocks to remove, in [0, 1).
        candidates: qualified names of removable blocks (default: every shape-preserving member
            of an nn.Sequential / nn.ModuleList).
        verify: check the result runs with unchanged output shapes.
    """
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"ratio must be in [0, 1), got {ratio}")
    inputs = as_inputs(example_inputs)
    new = copy.deepcopy(model).eval()
    names = candidates if candidates is not None else _candidates(new)
    stats: dict[str, tuple[float, int]] = {}
    handles = []
    for n in names:
        try:
            mod = new.get_submodule(n)
        except AttributeError as exc:
            raise InputError(f"candidate {n!r} is not a module of {type(model).__name__}") from exc

        def hook(m, args, kwargs, out, n=n):
            x = args[0] if args else next(iter(kwargs.values()), None)
            y = out[0] if isinstance(out, tuple) else out
            if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape:
                change = float((y - x).norm() / (x.norm() + 1e-12))
                stats[n] = (change, len(out) if isinstance(out, tuple) else 0)

        handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            new(*inputs)
    finally:
        for h in handles:
            h.remove()
    ranked = sorted(stats, key=lambda n: stats[n][0])
    k = int(round(ratio * len(ranked)))
    history = list(getattr(model, "deepshrink_history", []))
    for n in ranked[:k]:
        _skip(new, n, stats[n][1])
        history.append({"op": "skip", "module": n, "tuple_len": stats[n][1]})
    new.deepshrink_history = history
    new.deepshrink_report = {"removed_blocks": ranked[:k], "candidates": len(ranked)}
    if verify:
        check_runs(copy.deepcopy(model).eval(), new, inputs)
    new.train(model.training)
    return new


def _skip(model: nn.Module, name: str, tuple_len: int) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, SkippedBlock(tuple_len))
