"""Recipe steps of this capability (registered with `deepshrink.recipe.register_step`).

- ``cluster``: per-layer weight sharing (k-means / Hessian-weighted / uniform) with optional
  centroid fine-tuning on the task's training data.

Example:
    >>> from deepshrink.recipe import Recipe
    >>> Recipe.from_list([{"type": "cluster", "bits": 4, "overrides": {"re:.*conv.*": 8}}]).steps[0].bits
    4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ...errors import RecipeError
from ...recipe import StepContext, register_step
from .kmeans import INITS
from .shared import cluster_, distinct_values, finalize, finetune_centroids


def _bits_ok(b) -> bool:
    return isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16


@register_step("cluster")
@dataclass(frozen=True)
class Cluster:
    """Weight sharing: at most 2**bits distinct non-zero values per weight tensor; zeros stay zero."""

    bits: int = 5  # default bits per shared value
    overrides: dict | None = None  # {selector: bits}, first match wins
    init: Literal["linear", "forgy", "density"] = "linear"
    method: Literal["kmeans", "hessian", "uniform"] = "kmeans"
    exact: bool | None = None  # optimal 1-D k-means; None = where it pays (<= 100k values)
    exclude: tuple = ()
    include: tuple | None = None
    cluster_bias: bool = False  # also share the biases' values
    max_batches: int | None = 16  # train_data batches for the Hessian (method hessian/uniform)
    finetune_epochs: float = 0.0  # centroid fine-tuning (assignments fixed)
    lr: float = 1e-4
    optimizer: str = "adam"
    only_centroids: bool = False  # fine-tune only the shared values (else biases etc. too)
    finalize: bool = True  # drop the assignments at the end (values stay the centroids)

    def __post_init__(self):
        if not _bits_ok(self.bits):
            raise RecipeError(f"bits must be an integer in [1, 16], got {self.bits!r}")
        for sel, b in (self.overrides or {}).items():
            if not _bits_ok(b):
                raise RecipeError(f"override bits for {sel!r} must be an integer in [1, 16], got {b!r}")
        if self.init not in INITS:
            raise RecipeError(f"unknown init {self.init!r}; use one of {INITS}")
        if self.finetune_epochs < 0 or self.lr <= 0:
            raise RecipeError("finetune_epochs must be >= 0 and lr > 0")

    def apply(self, model: nn.Module, ctx: StepContext) -> nn.Module:
        task = ctx.task
        data = None
        if self.method == "hessian" or self.finetune_epochs > 0:
            task = ctx.require_task("train_data")
            data = task.train_data
        n_inputs = getattr(task, "n_inputs", 1) if task is not None else 1
        rows = cluster_(
            model, self.bits, init=self.init, method=self.method, exclude=self.exclude, include=self.include,
            overrides=self.overrides, data=data if self.method != "kmeans" else None,
            loss=getattr(task, "loss", None), n_inputs=n_inputs, max_batches=self.max_batches, exact=self.exact,
            cluster_bias=self.cluster_bias,
        )
        for r in rows:
            if "skipped" in r:
                ctx.skip(r["layer"], r["skipped"])
        if self.finetune_epochs > 0:
            finetune_centroids(model, data, epochs=self.finetune_epochs, lr=self.lr, loss=task.loss,
                               optimizer=self.optimizer, only_centroids=self.only_centroids, n_inputs=n_inputs,
                               progress=ctx.progress)
        ctx.row_extras["bits"] = {r["layer"]: r["bits"] for r in rows if "skipped" not in r}
        ctx.row_extras["distinct_values"] = distinct_values(model, include_bias=self.cluster_bias)
        if self.finalize:
            finalize(model)
        return model
