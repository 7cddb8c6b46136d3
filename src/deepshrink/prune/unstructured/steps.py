"""Recipe steps of this capability (registered with `deepshrink.recipe.register_step`).

- ``magnitude_prune``: magnitude pruning (global or per layer) with optional retraining, one-shot,
  iterative (Han et al.) or gradual (Zhu & Gupta).
- ``obd_prune``: Optimal Brain Damage saliency (diagonal Fisher from the task's training data).
- ``obs_prune``: layer-wise Optimal Brain Surgeon with weight compensation (calibration data).
- ``apoz_prune``: zero the fully connected neurons with the highest APoZ.
- ``sparse_exec``: run sparse Linear / 1×1 Conv layers with CSR/BSR kernels where measured faster.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> r = Recipe.from_list([{"type": "magnitude_prune", "sparsity": 0.9, "retrain_epochs": 2}])
    >>> r.steps[0].schedule
    'oneshot'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ...errors import RecipeError
from ...recipe import StepContext, register_step
from .magnitude import _abs, finalize, prune_by_scores_, sparsity_report
from .masks import check_sparsity, parse_granularity


def _validate_common(step) -> None:
    try:
        check_sparsity(step.sparsity)
        parse_granularity(step.granularity)
    except Exception as exc:
        raise RecipeError(str(exc)) from exc
    if getattr(step, "retrain_epochs", 0) < 0:
        raise RecipeError(f"retrain_epochs must be >= 0, got {step.retrain_epochs}")
    if getattr(step, "lr", 1.0) <= 0:
        raise RecipeError(f"lr must be > 0, got {step.lr}")
    if step.overrides is not None:
        for sel, v in step.overrides.items():
            s = v.get("sparsity", 0.0) if isinstance(v, dict) else v
            try:
                check_sparsity(s, f"override sparsity of {sel!r}")
            except Exception as exc:
                raise RecipeError(str(exc)) from exc


def _retrain(model: nn.Module, ctx: StepContext, epochs: float, lr: float, optimizer: str, weight_decay: float):
    if epochs <= 0:
        return model
    from ...distill.loop import fit

    task = ctx.require_task("train_data")
    return fit(model, task.train_data, epochs=epochs, lr=lr, loss=task.loss, optimizer=optimizer,
               weight_decay=weight_decay, n_inputs=getattr(task, "n_inputs", 1), progress=ctx.progress)


def _record(model: nn.Module, ctx: StepContext, rows: list[dict] | None, do_finalize: bool) -> nn.Module:
    for r in rows or []:
        if "skipped" in r:
            ctx.skip(r["layer"], r["skipped"])
    rep = sparsity_report(model)
    ctx.row_extras["sparsity"] = round(rep["sparsity"], 5)
    ctx.row_extras["layer_sparsity"] = {k: round(v, 5) for k, v in rep["layers"].items()}
    if do_finalize:
        finalize(model)
    return model


@register_step("magnitude_prune")
@dataclass(frozen=True)
class MagnitudePrune:
    """Magnitude pruning with optional retraining (the Deep Compression pruning stage)."""

    sparsity: float = 0.9  # fraction of the selected weights zeroed (global pool, or every layer)
    scope: Literal["global", "layer"] = "global"  # global = class-blind ranking (See et al.)
    exclude: tuple = ()  # selectors left dense
    include: tuple | None = None  # selectors to prune (default: all Linear/Conv/Embedding/RNN)
    overrides: dict | None = None  # {selector: sparsity | {"sparsity", "granularity"}}
    granularity: str = "weight"  # weight | vector | kernel | N:M | balanced[:B]
    schedule: Literal["oneshot", "iterative", "gradual"] = "oneshot"
    retrain_epochs: float = 0.0  # total retraining epochs (all rounds / the whole gradual run)
    rounds: int = 3  # prune→retrain rounds for schedule="iterative"
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    finalize: bool = True  # drop the masks at the end of the step (zeros stay)

    def __post_init__(self):
        _validate_common(self)
        if self.rounds < 1:
            raise RecipeError(f"rounds must be >= 1, got {self.rounds}")
        if self.schedule != "oneshot" and self.retrain_epochs <= 0:
            raise RecipeError(f"schedule {self.schedule!r} needs retrain_epochs > 0")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        kw = dict(scope=self.scope, exclude=self.exclude, include=self.include, overrides=self.overrides,
                  granularity=self.granularity)
        rows = None
        if self.schedule == "oneshot":
            rows = prune_by_scores_(model, self.sparsity, _abs, **kw)
            model = _retrain(model, ctx, self.retrain_epochs, self.lr, self.optimizer, self.weight_decay)
        else:
            from .schedule import gradual_prune, iterative_prune

            task = ctx.require_task("train_data")
            common = dict(lr=self.lr, loss=task.loss, optimizer=self.optimizer, weight_decay=self.weight_decay,
                          n_inputs=getattr(task, "n_inputs", 1), progress=ctx.progress, **kw)
            if self.schedule == "iterative":
                model = iterative_prune(model, self.sparsity, task.train_data, rounds=self.rounds,
                                        epochs_per_round=self.retrain_epochs / self.rounds, **common)
            else:
                model = gradual_prune(model, self.sparsity, task.train_data, epochs=self.retrain_epochs, **common)
            rows = prune_by_scores_(model, self.sparsity, _abs, **kw)  # exact final masks (no-op if reached)
        return _record(model, ctx, rows, self.finalize)


@register_step("obd_prune")
@dataclass(frozen=True)
class ObdPrune:
    """Optimal Brain Damage: saliency ½·F_ii·w² with the Fisher diagonal from task.train_data."""

    sparsity: float = 0.9
    scope: Literal["global", "layer"] = "global"
    exclude: tuple = ()
    include: tuple | None = None
    overrides: dict | None = None
    granularity: str = "weight"
    max_batches: int | None = 16  # batches of train_data for the Fisher estimate
    retrain_epochs: float = 0.0
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    finalize: bool = True

    def __post_init__(self):
        _validate_common(self)

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .saliency import obd_

        task = ctx.require_task("train_data")
        rows = obd_(model, self.sparsity, task.train_data, loss=task.loss, n_inputs=getattr(task, "n_inputs", 1),
                    max_batches=self.max_batches, scope=self.scope, exclude=self.exclude, include=self.include,
                    overrides=self.overrides, granularity=self.granularity)
        model = _retrain(model, ctx, self.retrain_epochs, self.lr, self.optimizer, self.weight_decay)
        return _record(model, ctx, rows, self.finalize)


@register_step("obs_prune")
@dataclass(frozen=True)
class ObsPrune:
    """Layer-wise Optimal Brain Surgeon (Linear / Conv2d) with compensation from calibration data."""

    sparsity: float = 0.5  # per layer
    exclude: tuple = ()
    include: tuple | None = None
    overrides: dict | None = None
    granularity: str = "weight"  # weight | N:M
    max_batches: int | None = None
    damp: float = 0.01
    retrain_epochs: float = 0.0
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    finalize: bool = True

    def __post_init__(self):
        _validate_common(self)

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .saliency import obs_

        task = ctx.task
        data = getattr(task, "calib_data", None) or getattr(task, "train_data", None)
        if data is None:
            data = [ctx.example_inputs]
        rows = obs_(model, self.sparsity, data, exclude=self.exclude, include=self.include, overrides=self.overrides,
                    granularity=self.granularity, n_inputs=getattr(task, "n_inputs", 1) if task else len(ctx.example_inputs),
                    max_batches=self.max_batches, damp=self.damp)
        model = _retrain(model, ctx, self.retrain_epochs, self.lr, self.optimizer, self.weight_decay)
        return _record(model, ctx, rows, self.finalize)


@register_step("apoz_prune")
@dataclass(frozen=True)
class ApozPrune:
    """Zero the `ratio` of neurons with the highest APoZ in each fully connected layer."""

    ratio: float = 0.3
    exclude: tuple = ()
    include: tuple | None = None
    overrides: dict | None = None  # {selector: ratio}
    max_batches: int | None = None
    retrain_epochs: float = 0.0
    lr: float = 1e-3
    optimizer: str = "adam"
    finalize: bool = True

    def __post_init__(self):
        try:
            check_sparsity(self.ratio, "ratio")
        except Exception as exc:
            raise RecipeError(str(exc)) from exc

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from .saliency import apoz_prune

        task = ctx.require_task("calib_data")
        model = apoz_prune(model, self.ratio, task.calib_data, include=self.include, exclude=self.exclude,
                           overrides=self.overrides, n_inputs=getattr(task, "n_inputs", 1),
                           max_batches=self.max_batches)
        model = _retrain(model, ctx, self.retrain_epochs, self.lr, self.optimizer, 0.0)
        return _record(model, ctx, None, self.finalize)


@register_step("sparse_exec")
@dataclass(frozen=True)
class SparseExec:
    """Run sparse Linear / 1×1 Conv layers through CSR/BSR kernels where measured faster than dense."""

    batch_size: int | None = None  # batch size the decision is timed at (default: example inputs')
    threads: int | None = None  # torch threads for the timing (default: available cores, max 4)
    formats: tuple = ("csr", "bsr")
    min_sparsity: float = 0.5
    min_speedup: float = 1.05
    exclude: tuple = ()
    include: tuple | None = None
    repeats: int = 100
    # Only the execution format changes (values and outputs are kept), so an artifact written by an
    # earlier `encode` step still describes the model and `compress` keeps it as the final artifact.
    keeps_weights = True

    def __post_init__(self):
        from ..sparse import FORMATS

        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise RecipeError(f"unknown sparse format(s) {bad}; use {FORMATS}")
        if self.batch_size is not None and self.batch_size < 1:
            raise RecipeError(f"batch_size must be >= 1, got {self.batch_size}")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        from ..sparse import sparsify

        model, table = sparsify(model, ctx.example_inputs, batch_size=self.batch_size, threads=self.threads,
                                formats=self.formats, min_sparsity=self.min_sparsity, min_speedup=self.min_speedup,
                                include=self.include, exclude=self.exclude, repeats=self.repeats)
        for r in table:
            if r["chosen"] == "dense":
                ctx.skip(r["layer"], f"kept dense: {r['reason']}")
        ctx.row_extras["sparse_exec"] = table
        ctx.row_extras["sparse_layers"] = [r["layer"] for r in table if r["chosen"] != "dense"]
        return model
