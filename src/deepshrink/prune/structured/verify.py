"""Run-time checks of a structural pruning (``verify=True``).

1. The pruned model runs on the example inputs and on a different batch size, and every output
   keeps its shape.
2. Exactness: a copy of the model *before* slicing, with the input columns of every removed class
   zeroed in its consumers, must give the same outputs as the pruned model (removing channels
   that contribute nothing is exact). Skipped, and said so, when a pruned group passes through an
   op for which removal is not exact (LayerNorm statistics, softmax/mean over channels).

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Linear(3, 2)
    >>> check_runs(m, m, (torch.randn(2, 3),))
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import VerificationError
from ...inputs import flat_tensors, rebatch


def _outputs(model: nn.Module, inputs: tuple, what: str) -> list[torch.Tensor]:
    try:
        with torch.no_grad():
            return flat_tensors(model(*inputs))
    except Exception as exc:  # noqa: BLE001 - reported as a verification failure with its cause
        raise VerificationError(f"the {what} model fails to run: {type(exc).__name__}: {exc}") from exc


def check_runs(reference: nn.Module, pruned: nn.Module, inputs: tuple) -> None:
    """Raise `VerificationError` unless `pruned` runs and its output shapes match `reference`'s."""
    ref = _outputs(reference, inputs, "original")
    out = _outputs(pruned, inputs, "pruned")
    if [tuple(t.shape) for t in ref] != [tuple(t.shape) for t in out]:
        raise VerificationError(
            f"output shapes changed: {[tuple(t.shape) for t in ref]} -> {[tuple(t.shape) for t in out]}"
        )
    if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].dim() > 0:
        _outputs(pruned, rebatch(inputs, inputs[0].shape[0] + 1), "pruned (another batch size)")


def check_exact(masked: nn.Module, pruned: nn.Module, inputs: tuple, *, rtol: float = 1e-4) -> float:
    """Max relative difference between `masked` and `pruned`; `VerificationError` above `rtol`."""
    ref = _outputs(masked, inputs, "masked")
    out = _outputs(pruned, inputs, "pruned")
    worst = 0.0
    for a, b in zip(ref, out, strict=False):
        if not a.is_floating_point():
            if not torch.equal(a, b):
                raise VerificationError("removing all-zero channels changed an integer output")
            continue
        scale = float(a.abs().max()) + 1e-6
        worst = max(worst, float((a - b).abs().max()) / scale)
    if worst > rtol:
        raise VerificationError(
            f"removing channels whose contributions are zero changed the outputs (max relative "
            f"difference {worst:.2e} > {rtol:.0e}): the pruned model computes something different"
        )
    return worst
