"""A small, replaceable training loop used by every step that retrains (pruning, clustering, QAT, KD).

It is deliberately plain: an optimizer, a loss, epochs over a re-iterable of `(*inputs, target)`
batches, and hooks that steps use to keep their constraints (masks, shared weights) after each
optimizer update. Anything fancier belongs in the user's own loop; every step that trains also
accepts a user-supplied `train_fn(model) -> model` through the task.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.distill.loop import fit
    >>> m = nn.Linear(4, 2)
    >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    >>> fit(m, data, epochs=1).training
    False
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import TaskError
from ..inputs import first_tensor, iter_labelled

log = logging.getLogger(__name__)

Hook = Callable[[nn.Module], None]


def default_loss(output: Any, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the first output tensor (classification tasks)."""
    return nn.functional.cross_entropy(first_tensor(output), target)


def make_optimizer(params, name: str, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """`adam`, `adamw` or `sgd` (momentum 0.9)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise TaskError(f"unknown optimizer {name!r}; use 'adam', 'adamw' or 'sgd'")


def fit(
    model: nn.Module,
    data: Iterable,
    *,
    epochs: float = 1,
    lr: float = 1e-3,
    loss: Callable[[Any, torch.Tensor], torch.Tensor] | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    n_inputs: int = 1,
    after_step: Hook | None = None,
    before_epoch: Callable[[nn.Module, int], None] | None = None,
    regularizer: Callable[[nn.Module], torch.Tensor] | None = None,
    params: Iterable[nn.Parameter] | None = None,
    progress: bool = False,
    seed: int | None = 0,
) -> nn.Module:
    """Train `model` in place on `data` and return it in eval mode.

    Args:
        model: the model to train (changed in place).
        data: re-iterable of batches `(*inputs, target)`.
        epochs: passes over `data`; a fraction trains on that share of the batches.
        lr: learning rate.
        loss: `loss(output, target)`; default cross-entropy on the first output tensor.
        optimizer: "adam", "adamw" or "sgd".
        n_inputs: how many leading batch items are model inputs.
        after_step: called after every optimizer step (re-apply masks, re-share weights...).
        before_epoch: called as `before_epoch(model, epoch)` (gradual pruning schedules).
        regularizer: extra loss term `regularizer(model)` (group lasso, BN-scale L1, ...).
        params: the parameters to optimize (default: all that require grad).
        progress: show a tqdm bar per epoch.
        seed: seeds torch's RNG for reproducible shuffling/dropout (None leaves it alone).
    """
    if data is None:
        raise TaskError("training needs data (task.train_data is None)")
    if seed is not None:
        torch.manual_seed(seed)
    loss_fn = loss or default_loss
    trainable = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if not trainable:
        raise TaskError("model has no trainable parameters")
    opt = make_optimizer(trainable, optimizer, lr, weight_decay)
    n_batches = None
    try:
        n_batches = len(data)  # type: ignore[arg-type]
    except TypeError:
        pass
    full_epochs = int(epochs)
    frac = epochs - full_epochs
    plan = [(e, None) for e in range(full_epochs)]
    if frac > 0:
        if n_batches is None:
            raise TaskError("fractional epochs need data with a len()")
        plan.append((full_epochs, max(1, int(round(frac * n_batches)))))
    model.train()
    for epoch, limit in plan:
        if before_epoch is not None:
            before_epoch(model, epoch)
        batches = iter_labelled(data, n_inputs, limit=limit)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=limit or n_batches, desc=f"epoch {epoch + 1}", leave=False)
        total, count = 0.0, 0
        for inputs, target in batches:
            opt.zero_grad(set_to_none=True)
            out = model(*inputs)
            value = loss_fn(out, target)
            if regularizer is not None:
                value = value + regularizer(model)
            value.backward()
            opt.step()
            if after_step is not None:
                after_step(model)
            total += float(value.detach())
            count += 1
        log.debug("epoch %d: mean loss %.4f over %d batches", epoch + 1, total / max(count, 1), count)
    model.eval()
    return model
