"""The `Task`: what accuracy-aware steps need besides the model.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.tasks import Task
    >>> t = Task(name="toy", model=nn.Linear(4, 2), example_inputs=(torch.zeros(1, 4),))
    >>> t.name
    'toy'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class Task:
    """A model with its data and metric.

    Attributes:
        name: a short name for reports.
        model: the (trained) baseline model.
        example_inputs: tuple of tensors the model runs on (batch 1 is fine).
        train_data: re-iterable of `(*inputs, target)` batches for retraining steps.
        calib_data: iterable of input batches for calibration / activation statistics.
        eval_data: iterable of `(*inputs, target)` batches for `evaluate`.
        evaluate: `evaluate(model) -> float`, higher is better (accuracy as a fraction in [0, 1]).
        loss: `loss(output, target) -> tensor` for training; default cross-entropy.
        metric_name: what `evaluate` returns ("accuracy", "cosine", ...).
        n_inputs: how many leading items of a batch are model inputs.
    """

    name: str
    model: nn.Module
    example_inputs: tuple
    train_data: Iterable | None = None
    calib_data: Iterable | None = None
    eval_data: Iterable | None = None
    evaluate: Callable[[nn.Module], float] | None = None
    loss: Callable[[Any, Any], Any] | None = None
    metric_name: str = "accuracy"
    n_inputs: int = 1
