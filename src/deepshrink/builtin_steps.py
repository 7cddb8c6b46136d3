"""General recipe steps that belong to no single technique: fine-tuning with the task's data.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> Recipe.from_list([{"type": "finetune", "epochs": 1}]).steps[0].epochs
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import RecipeError
from .recipe import StepContext, register_step


@register_step("finetune")
@dataclass(frozen=True)
class Finetune:
    """Train the model on `task.train_data` with `task.loss` (default cross-entropy)."""

    epochs: float = 1.0  # passes over the training data; fractions allowed
    lr: float = 1e-4  # small: the model is already trained
    optimizer: str = "adam"

    def __post_init__(self):
        object.__setattr__(self, "epochs", float(self.epochs))
        if self.epochs <= 0:
            raise RecipeError(f"finetune: epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise RecipeError(f"finetune: lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise RecipeError(f"finetune: optimizer must be adam, adamw or sgd, got {self.optimizer!r}")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .distill.loop import fit

        task = ctx.require_task("train_data")
        return fit(model, task.train_data, epochs=self.epochs, lr=self.lr, loss=task.loss,
                   optimizer=self.optimizer, n_inputs=task.n_inputs, progress=ctx.progress)
