"""`torch.export` programs with a dynamic batch axis, saved atomically.

Example:
    >>> import torch
    >>> ep = program(torch.nn.Linear(4, 2), torch.randn(2, 4))
    >>> ep.module()(torch.randn(5, 4)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from ..errors import TraceError, VerificationError
from ..inputs import as_inputs, flat_tensors, rebatch
from ..outputs import atomic_file
from .onnx_io import compare

log = logging.getLogger(__name__)


def program(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike | None = None,
    *,
    dynamic_batch: bool = True,
    strict: bool = False,
    verify: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> torch.export.ExportedProgram:
    """Capture `model` with `torch.export` (batch axis dynamic), optionally save it to `path`.

    Args:
        model: the model (fp32, half, or anything torch.export can capture).
        example_inputs: tensor or tuple of tensors.
        path: where to save the program (`torch.export.save`, written atomically); None = don't.
        dynamic_batch: make dim 0 of every tensor input dynamic.
        strict: torch.export's strict mode.
        verify: compare the program's outputs with the model's (example batch and batch 3).

    Returns:
        The `ExportedProgram`.

    Raises:
        TraceError: torch.export cannot capture the model.
        VerificationError: outputs differ, listing every mismatching output.

    Example:
        >>> import torch
        >>> program(torch.nn.ReLU(), torch.randn(2, 3)).module()(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """
    inputs = as_inputs(example_inputs)
    model = model.eval()
    ex = rebatch(inputs, 2) if dynamic_batch else inputs  # batch 1 would be specialized away
    shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1)
        shapes = tuple({0: batch} if isinstance(t, torch.Tensor) and t.dim() else None for t in ex)
    try:
        ep = torch.export.export(model, ex, dynamic_shapes=shapes, strict=strict)
    except Exception as exc:  # noqa: BLE001 - one typed error for any capture failure
        raise TraceError(f"torch.export cannot capture {type(model).__name__}: {exc}") from exc
    if verify:
        problems = []
        for bs in (None, 3) if dynamic_batch else (None,):
            x = inputs if bs is None else rebatch(inputs, bs)
            with torch.no_grad():
                ref = flat_tensors(model(*x))
                got = flat_tensors(ep.module()(*x))
            problems += compare(ref, got, [f"output_{i}" for i in range(len(ref))], rtol=rtol, atol=atol,
                                label=f"[batch {x[0].shape[0]}] ")
        if problems:
            raise VerificationError("exported program differs from the model:\n  " + "\n  ".join(problems))
    if path is not None:
        with atomic_file(path, suffix=".tmp.pt2") as tmp:
            torch.export.save(ep, tmp)
        log.info("saved exported program to %s", path)
    return ep
