"""Recipe steps of structural pruning.

- ``channel_prune``: `deepshrink.prune.channels` (+ optional fine-tune with the shared `fit`).
- ``layer_prune``: `deepshrink.prune.layers` (remove whole residual blocks).
- ``sparsity_train``: train with a structured-sparsity regularizer (``bn_l1`` network slimming or
  ``group_lasso`` SSL) before a ``channel_prune`` with ``bn_scale`` / ``l2``.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> r = Recipe.from_list([{"type": "channel_prune", "ratio": 0.5, "importance": "l1", "round_to": 8}])
    >>> r.steps[0].round_to
    8
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from ...errors import RecipeError
from ...recipe import StepContext, register_step

log = logging.getLogger(__name__)


def _limit(data: Any, n: int):
    from ...inputs import iter_inputs

    return list(iter_inputs(data, None, limit=n))


def _finetune(model: nn.Module, ctx: StepContext, epochs: float, lr: float, optimizer: str) -> nn.Module:
    from ...distill.loop import fit

    task = ctx.require_task("train_data")
    return fit(model, task.train_data, epochs=epochs, lr=lr, optimizer=optimizer, loss=task.loss,
               n_inputs=getattr(task, "n_inputs", 1), progress=ctx.progress)


@register_step("channel_prune")
@dataclass(frozen=True)
class ChannelPrune:
    """Remove `ratio` of the channels/neurons/heads of every prunable coupled group.

    Fields mirror `deepshrink.prune.channels`; data-driven importances ("taylor", "obd", "apoz",
    "reconstruction") read up to `calib_batches` batches of ``task.calib_data``;
    ``finetune_epochs > 0`` retrains on ``task.train_data`` afterwards.
    """

    ratio: float = 0.3
    importance: str = "l2"  # l1 l2 bn_scale fpgm random taylor obd apoz reconstruction
    scope: str = "uniform"  # or "global"
    exclude: tuple = ()  # selectors of modules to leave alone
    round_to: int = 1  # keep a multiple of this many channels per group
    overrides: dict | None = None  # {selector: ratio}
    kinds: tuple | None = None  # restrict to channels / heads / blocks / hidden / recurrent
    refit: bool | None = None  # least-squares refit of the next layers (default: with reconstruction)
    calib_batches: int = 32
    finetune_epochs: float = 0.0
    lr: float = 1e-3
    optimizer: str = "adam"
    verify: bool = True

    def __post_init__(self) -> None:
        from .channels import KINDS
        from .importance import CRITERIA

        if not 0.0 <= float(self.ratio) < 1.0:
            raise RecipeError(f"channel_prune: ratio must be in [0, 1), got {self.ratio}")
        if self.importance not in CRITERIA:
            raise RecipeError(f"channel_prune: unknown importance {self.importance!r}; choose from {CRITERIA}")
        if self.scope not in ("uniform", "global"):
            raise RecipeError(f"channel_prune: scope must be 'uniform' or 'global', got {self.scope!r}")
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise RecipeError(f"channel_prune: round_to must be a positive integer, got {self.round_to!r}")
        if self.kinds is not None and any(k not in KINDS for k in self.kinds):
            raise RecipeError(f"channel_prune: kinds must be among {KINDS}, got {self.kinds}")
        if self.finetune_epochs < 0 or self.lr <= 0 or self.calib_batches < 1:
            raise RecipeError("channel_prune: finetune_epochs must be >= 0, lr > 0, calib_batches >= 1")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .channels import channels
        from .importance import DATA_CRITERIA

        calib = None
        if self.importance in DATA_CRITERIA or self.refit:
            calib = _limit(ctx.require_task("calib_data").calib_data, self.calib_batches)
        new = channels(model, ctx.example_inputs, float(self.ratio), importance=self.importance, scope=self.scope,
                       exclude=tuple(self.exclude), round_to=self.round_to, calib_data=calib,
                       overrides=dict(self.overrides) if self.overrides else None,
                       kinds=tuple(self.kinds) if self.kinds is not None else None, refit_consumers=self.refit,
                       verify=self.verify)
        rep = new.deepshrink_report
        for row in rep["skipped"]:
            ctx.skip(row["layer"], row["reason"])
        ctx.row_extras["pruned_groups"] = len(rep["pruned"])
        ctx.row_extras["removed_classes"] = sum(r["removed"] for r in rep["pruned"])
        if self.finetune_epochs > 0:
            history, report = new.deepshrink_history, rep
            new = _finetune(new, ctx, self.finetune_epochs, self.lr, self.optimizer)
            new.deepshrink_history, new.deepshrink_report = history, report
        return new


@register_step("layer_prune")
@dataclass(frozen=True)
class LayerPrune:
    """Remove the `ratio` least useful shape-preserving blocks (optionally fine-tune)."""

    ratio: float = 0.25
    candidates: tuple | None = None
    finetune_epochs: float = 0.0
    lr: float = 1e-3
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.ratio) < 1.0:
            raise RecipeError(f"layer_prune: ratio must be in [0, 1), got {self.ratio}")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .layers import layers

        new = layers(model, ctx.example_inputs, float(self.ratio),
                     candidates=list(self.candidates) if self.candidates else None)
        ctx.row_extras["removed_blocks"] = len(new.deepshrink_report["removed_blocks"])
        if self.finetune_epochs > 0:
            history = new.deepshrink_history
            new = _finetune(new, ctx, self.finetune_epochs, self.lr, self.optimizer)
            new.deepshrink_history = history
        return new


@register_step("sparsity_train")
@dataclass(frozen=True)
class SparsityTrain:
    """Train with a structured-sparsity regularizer: "bn_l1" (network slimming) or "group_lasso" (SSL)."""

    regularizer: str = "bn_l1"
    strength: float = 1e-4
    epochs: float = 1.0
    lr: float = 1e-3
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        if self.regularizer not in ("bn_l1", "group_lasso"):
            raise RecipeError(f"sparsity_train: regularizer must be 'bn_l1' or 'group_lasso', got {self.regularizer!r}")
        if self.strength < 0 or self.epochs <= 0 or self.lr <= 0:
            raise RecipeError("sparsity_train: strength must be >= 0, epochs > 0, lr > 0")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ...distill.loop import fit
        from .regularizers import bn_l1, group_lasso

        task = ctx.require_task("train_data")
        reg = bn_l1(model, self.strength) if self.regularizer == "bn_l1" else group_lasso(
            model, ctx.example_inputs, self.strength)
        return fit(model, task.train_data, epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, loss=task.loss,
                   regularizer=reg, n_inputs=getattr(task, "n_inputs", 1), progress=ctx.progress)
