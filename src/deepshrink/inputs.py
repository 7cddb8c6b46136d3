"""Normalizing the inputs every public function accepts.

`example_inputs` is a tuple of tensors (a bare tensor is accepted as a 1-tuple). `calib_data` /
`data` is an iterable of such tuples (a bare tensor is accepted as one batch); extra trailing items
such as labels are dropped by steps that need no labels.

Example:
    >>> import torch
    >>> from deepshrink.inputs import as_inputs, iter_inputs
    >>> as_inputs(torch.zeros(2, 3))[0].shape
    torch.Size([2, 3])
    >>> [len(b) for b in iter_inputs([(torch.zeros(1, 3), torch.tensor([0]))], n_inputs=1)]
    [1]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import CalibrationError, ForwardError, InputError


def as_inputs(example_inputs: Any) -> tuple:
    """Return `example_inputs` as a tuple (a bare tensor becomes a 1-tuple; lists become tuples)."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)):
        if len(example_inputs) == 0:
            raise InputError("example_inputs is empty: pass a tensor or a tuple of tensors")
        return tuple(example_inputs)
    if isinstance(example_inputs, dict):
        raise InputError("example_inputs must be a tensor or a tuple of tensors, not a dict")
    raise InputError(f"example_inputs must be a tensor or a tuple of tensors, got {type(example_inputs).__name__}")


def as_batch(item: Any) -> tuple:
    """One item of a data iterable as a tuple (a bare tensor becomes a 1-tuple)."""
    if isinstance(item, torch.Tensor):
        return (item,)
    if isinstance(item, (tuple, list)):
        return tuple(item)
    if isinstance(item, dict):
        raise InputError("data batches must be tensors or tuples of tensors, not dicts")
    raise InputError(f"data batches must be tensors or tuples of tensors, got {type(item).__name__}")


def iter_inputs(data: Any, n_inputs: int | None = None, *, limit: int | None = None) -> Iterator[tuple]:
    """Iterate over the model-input part of each batch of `data`.

    Args:
        data: an iterable of batches (tuples), or a single tensor taken as one batch.
        n_inputs: how many leading items of each batch are model inputs (the rest, e.g. labels,
            are dropped). None keeps every item.
        limit: stop after this many batches.
    """
    if data is None:
        raise CalibrationError("no data given (got None)")
    if isinstance(data, torch.Tensor):
        data = [data]
    if not isinstance(data, Iterable):
        raise CalibrationError(f"data must be an iterable of batches, got {type(data).__name__}")
    for i, item in enumerate(data):
        if limit is not None and i >= limit:
            return
        batch = as_batch(item)
        yield batch if n_inputs is None else batch[:n_inputs]


def iter_labelled(data: Any, n_inputs: int = 1, *, limit: int | None = None) -> Iterator[tuple[tuple, Any]]:
    """Iterate `(inputs, target)` pairs from batches laid out as `(*inputs, target)`."""
    for i, item in enumerate(data):
        if limit is not None and i >= limit:
            return
        batch = as_batch(item)
        if len(batch) <= n_inputs:
            raise InputError(f"batch {i} has {len(batch)} item(s); expected {n_inputs} input(s) plus a target")
        yield batch[:n_inputs], batch[n_inputs]


def run_forward(model: nn.Module, inputs: tuple, *, what: str = "model") -> Any:
    """Run `model(*inputs)` under no_grad, turning any failure into a `ForwardError`."""
    try:
        with torch.no_grad():
            return model(*inputs)
    except Exception as exc:  # noqa: BLE001 - we re-raise with the cause attached
        shapes = ", ".join(
            str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in inputs
        )
        raise ForwardError(f"{what} forward failed on inputs of shape ({shapes}): {exc}") from exc


def first_tensor(output: Any) -> torch.Tensor:
    """The first tensor in a (possibly nested) model output: a tensor, tuple/list, dict or HF ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) or hasattr(output, "values"):
        for v in output.values():
            if isinstance(v, torch.Tensor):
                return v
    if isinstance(output, (tuple, list)):
        for v in output:
            try:
                return first_tensor(v)
            except InputError:
                continue
    raise InputError(f"model output holds no tensor (got {type(output).__name__})")


def flat_tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor in a (possibly nested) model output, in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict) or hasattr(output, "values"):
        items = list(output.values())
    elif isinstance(output, (tuple, list)):
        items = list(output)
    else:
        return []
    out: list[torch.Tensor] = []
    for v in items:
        out.extend(flat_tensors(v))
    return out


def rebatch(inputs: tuple, batch_size: int) -> tuple:
    """Inputs with dim 0 resized to `batch_size` by repeating/truncating the given rows."""
    out = []
    for t in inputs:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            out.append(t)
            continue
        n = t.shape[0]
        reps = -(-batch_size // n)
        out.append(t.repeat(reps, *([1] * (t.dim() - 1)))[:batch_size].contiguous())
    return tuple(out)
