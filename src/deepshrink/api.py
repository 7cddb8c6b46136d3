"""`compress`: run a recipe on a copy of a model and measure every step.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import deepshrink
    >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> res = deepshrink.compress(m, torch.randn(1, 8), [], measure_latency=False)
    >>> res.report.baseline.params
    90
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import DeepshrinkError, FormatError, RecipeError, UnsupportedLayerError
from .inputs import as_inputs, rebatch, run_forward
from .measure import compare_latency, fp32_bytes, latency, machine_info, profile
from .measure.size import state_dict_bytes
from .recipe import Recipe, StepContext, as_recipe
from .report import Report, Row
from .report.histograms import weight_histograms

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What `compress` returns: the compressed model, its report, and the encoded artifact if any."""

    model: nn.Module
    report: Report
    artifact: bytes | None = None
    artifact_suffix: str = ".dsz"


def artifact_size(model: nn.Module) -> tuple[int, str]:
    """Bytes of the model's storage artifact and what was measured.

    The .dsz container without entropy coding (sparse tensors with relative indices, codebooks) when
    the encoder can store the model; otherwise a plain `torch.save` of the state_dict.
    """
    try:
        from .encode import dumps
    except (ImportError, AttributeError):
        dumps = None
    if dumps is not None:
        try:
            return len(dumps(model, coder="none")), ".dsz (no entropy coding)"
        except (UnsupportedLayerError, FormatError, NotImplementedError) as exc:
            log.debug("model not storable as .dsz (%s); measuring torch.save bytes", exc)
    return state_dict_bytes(model), "torch.save state_dict"


@dataclass
class _Measure:
    inputs: tuple
    task: Any
    latency: bool
    latency_batch: int | None
    threads: int | None
    repeats: int

    def row(self, model: nn.Module, name: str, *, size: int, artifact: str, seconds: float = 0.0) -> Row:
        prof = profile(model, self.inputs)
        r = Row(name=name, size_bytes=size, params=prof.params, macs=prof.macs, seconds=seconds, artifact=artifact)
        if self.task is not None and getattr(self.task, "evaluate", None) is not None:
            r.accuracy = float(self.task.evaluate(model))
        if self.latency:
            one = latency(model, rebatch(self.inputs, 1), threads=self.threads, repeats=self.repeats)
            r.latency_ms, r.latency_p90_ms = one.median_ms, one.p90_ms
            if self.latency_batch:
                big = latency(model, rebatch(self.inputs, self.latency_batch), threads=self.threads,
                              repeats=max(5, self.repeats // 2))
                r.latency_batch_ms, r.latency_batch = big.median_ms, self.latency_batch
        return r


def compress(
    model: nn.Module,
    example_inputs: Any,
    recipe: Any,
    *,
    task: Any = None,
    measure_latency: bool = True,
    latency_batch: int | None = 32,
    threads: int | None = None,
    repeats: int = 30,
    progress: bool = False,
) -> Result:
    """Run `recipe` on a copy of `model`; measure the baseline and every step.

    Args:
        model: the trained model; it is never modified.
        example_inputs: a tensor or tuple of tensors the model runs on.
        recipe: a `Recipe`, a list of step dicts (``{"type": ..., ...}``), a .yaml/.json path or a
            bundled recipe name such as ``"deep_compression"``.
        task: a `Task` (or a task spec string) giving data and `evaluate` for accuracy-aware steps.
        measure_latency: time each stage (batch 1 and `latency_batch`) and compare baseline vs final.
        latency_batch: the larger batch size timed besides batch 1 (None to skip).
        threads: torch threads for timing (default: available cores, at most 4).
        repeats: timed runs per latency measurement.
        progress: let steps show progress bars.

    Returns:
        `Result(model, report, artifact)`.

    Raises:
        RecipeError: the recipe is invalid (checked before any work is done).
        ForwardError: the model fails on `example_inputs`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> res = compress(nn.Linear(4, 2), torch.zeros(1, 4), [], measure_latency=False)
        >>> res.report.compression_ratio > 0
        True
    """
    recipe = as_recipe(recipe)
    if isinstance(task, str):
        from .tasks import load_task

        task = load_task(task)
    inputs = as_inputs(example_inputs)
    if not isinstance(model, nn.Module):
        raise RecipeError(f"compress needs a torch.nn.Module, got {type(model).__name__}")
    t_start = time.perf_counter()
    original = copy.deepcopy(model).eval()
    work = copy.deepcopy(model).eval()
    run_forward(work, inputs, what="input model")
    meas = _Measure(inputs, task, measure_latency, latency_batch, threads, repeats)
    report = Report(
        task=getattr(task, "name", "") or type(model).__name__,
        metric_name=getattr(task, "metric_name", "accuracy") if task is not None else "accuracy",
        recipe=recipe.to_list(),
        machine=machine_info(),
        settings={"threads": threads or torch.get_num_threads(), "latency_batch": latency_batch, "repeats": repeats,
                  "input_shapes": [list(t.shape) for t in inputs if isinstance(t, torch.Tensor)]},
    )
    from .measure.latency import default_threads

    report.settings["threads"] = threads or default_threads()
    report.baseline = meas.row(work, "baseline", size=fp32_bytes(work), artifact="fp32 state_dict")
    ctx = StepContext(example_inputs=inputs, task=task, original=original, progress=progress)
    artifact: bytes | None = None
    suffix = ".dsz"
    steps = list(enumerate(recipe.steps))
    if progress and steps:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="recipe", unit="step")
    for i, step in steps:
        name = f"{i + 1}. {type(step).type_name}"
        ctx.current_step, ctx.row_extras, ctx.artifact = type(step).type_name, {}, None
        log.info("step %s", name)
        t0 = time.perf_counter()
        try:
            out = step.apply(work, ctx)
        except DeepshrinkError:
            raise
        except Exception as exc:
            raise DeepshrinkError(f"step {name} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, nn.Module):
            raise DeepshrinkError(f"step {name} returned {type(out).__name__}, not an nn.Module")
        work = out.eval()
        seconds = time.perf_counter() - t0
        run_forward(work, inputs, what=f"model after step {name}")
        if ctx.artifact is not None:
            artifact, suffix = ctx.artifact, ctx.artifact_suffix
            size, label = len(artifact), f"{suffix} file"
        elif artifact is not None and getattr(step, "keeps_weights", False):
            # The step changed how the model runs, not what it computes or stores (e.g. sparse
            # kernels): the artifact written before it still describes the model, so it stays.
            size, label = len(artifact), f"{suffix} file (from an earlier step)"
        else:
            artifact = None
            size, label = artifact_size(work)
        row = meas.row(work, name, size=size, artifact=label, seconds=seconds)
        row.extras = dict(ctx.row_extras)
        report.steps.append(row)
    report.final = report.steps[-1] if report.steps else report.baseline
    report.compression_ratio = report.baseline.size_bytes / report.final.size_bytes if report.final.size_bytes else None
    report.skipped = list(ctx.skipped)
    if measure_latency:
        cmp1 = compare_latency(original, work, rebatch(inputs, 1), threads=threads, repeats=max(repeats, 20))
        report.speedup = cmp1.speedup
        if latency_batch:
            cmpb = compare_latency(original, work, rebatch(inputs, latency_batch), threads=threads,
                                   repeats=max(repeats // 2, 10))
            report.speedup_batch = cmpb.speedup
        _latency_warnings(report)
    report.layers = {
        "baseline": [vars(r) for r in profile(original, inputs).layers],
        "final": [vars(r) for r in profile(work, inputs).layers],
    }
    report.histograms = weight_histograms(original, work)
    report.seconds = time.perf_counter() - t_start
    return Result(model=work, report=report, artifact=artifact, artifact_suffix=suffix)


def _latency_warnings(report: Report) -> None:
    """Flag a compressed model that is slower, and MAC ratios that the measured speedup does not follow."""
    b, f = report.baseline, report.final
    for label, s in (("batch 1", report.speedup), (f"batch {report.settings.get('latency_batch')}", report.speedup_batch)):
        if s is not None and s < 0.95:
            report.warnings.append(f"the compressed model is SLOWER than the baseline at {label}: {s:.2f}x")
    if b and f and f.macs:
        mac_ratio = b.macs / f.macs
        s = report.speedup_batch or report.speedup
        if s is not None and mac_ratio > 1.5 and s < 0.5 * mac_ratio:
            report.warnings.append(
                f"MACs fell {mac_ratio:.1f}x but the measured speedup is only {s:.2f}x: "
                "the MAC ratio is not a speedup on this CPU (sparse zeros still computed densely, layout, overheads)"
            )


__all__ = ["Recipe", "Result", "artifact_size", "compress"]
