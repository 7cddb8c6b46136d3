"""CPU latency, measured honestly: pinned threads, warm-up, many runs, median and p90.

`compare_latency` times two models in one process, interleaved run by run, so that machine noise
(another process, frequency changes) hits both alike and the ratio stays meaningful.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.measure import compare_latency
    >>> m = nn.Linear(64, 64)
    >>> r = compare_latency(m, m, torch.randn(8, 64), repeats=20)
    >>> 0.5 < r.speedup < 2.0
    True
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..inputs import as_inputs, rebatch, run_forward


def default_threads() -> int:
    """Threads used when none are given: the physical cores available to this process (max 4)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block and restore it afterwards."""
    n = threads or default_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def machine_info() -> dict[str, Any]:
    """Facts a timing depends on: CPU, cores, torch version and backends."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quantized_engine": torch.backends.quantized.engine,
    }


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass
class LatencyResult:
    """Median and p90 of `repeats` timed runs, in milliseconds, with the settings used."""

    median_ms: float
    p90_ms: float
    min_ms: float
    threads: int
    batch_size: int
    warmup: int
    repeats: int
    torch_version: str = torch.__version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ComparisonResult:
    """Interleaved timing of a baseline and a candidate; `speedup` = baseline / candidate medians."""

    baseline_ms: float
    candidate_ms: float
    baseline_p90_ms: float
    candidate_p90_ms: float
    speedup: float
    threads: int
    batch_size: int
    warmup: int
    repeats: int
    torch_version: str = torch.__version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _batch_size(inputs: tuple) -> int:
    for t in inputs:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return 1


def _timed(model: nn.Module, inputs: tuple) -> float:
    t0 = time.perf_counter()
    model(*inputs)
    return (time.perf_counter() - t0) * 1000.0


def interleaved_ms(
    calls: Mapping[str, Callable[[], Any]],
    *,
    rounds: int,
    block: int | Mapping[str, int] = 1,
    settle: bool | None = None,
    deadline: float | None = None,
    min_rounds: int = 5,
) -> dict[str, list[float]]:
    """Per-call times (ms) of each callable, timed round-robin in this process.

    Each round gives every callable one turn of `block` consecutive timed calls (a number, or one
    per name); the order reverses every other round to cancel drift. With `settle` (default: when
    a block is longer than one call) each turn starts with one untimed call, so the previous
    callable's thread pool (onnxruntime, inductor, PyTorch) has gone idle before timing. After
    `min_rounds`, rounds stop once `time.perf_counter()` passes `deadline`.

    Example:
        >>> times = interleaved_ms({"a": lambda: None, "b": lambda: None}, rounds=3, block=2)
        >>> [len(v) for v in times.values()]
        [6, 6]
    """
    sizes = {k: block[k] if isinstance(block, Mapping) else block for k in calls}
    if any(n < 1 for n in sizes.values()):
        raise InputError(f"block must be >= 1, got {block}")
    if settle is None:
        settle = max(sizes.values(), default=1) > 1
    times: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for i in range(rounds):
        for k in order if i % 2 == 0 else order[::-1]:
            fn = calls[k]
            if settle:
                fn()
            for _ in range(sizes[k]):
                t0 = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t0) * 1000.0)
        if deadline is not None and i + 1 >= min_rounds and time.perf_counter() > deadline:
            break
    return times


def interleaved_medians(calls: Mapping[str, Callable[[], Any]], threads: int | None = None, *, rounds: int = 7,
                        budget_s: float = 0.05) -> dict[str, float]:
    """Median ms per call of each callable, timed round-robin (`interleaved_ms`) on `threads`.

    Used to choose between candidates (backends, graph variants): each gets a warm-up and turns
    of about `budget_s` worth of calls (3 to 200), so machine noise hits all alike; the median is
    the typical latency (a minimum favours paths that are fast only at their best).

    Example:
        >>> t = interleaved_medians({"a": lambda: None, "b": lambda: sum(range(100))}, 1, rounds=2)
        >>> sorted(t)
        ['a', 'b']
    """
    with pinned_threads(threads), torch.no_grad():
        per_turn = {}
        for k, fn in calls.items():  # warm-up, and size each candidate's turn
            for _ in range(3):
                fn()
            t = time.perf_counter()
            fn()
            per_turn[k] = max(3, min(200, int(budget_s / max(time.perf_counter() - t, 1e-6))))
        samples = interleaved_ms(calls, rounds=rounds, block=per_turn, settle=True)
    return {k: statistics.median(v) for k, v in samples.items()}


def measured_faster(trial: Callable[[], Any], current: Callable[[], Any], threads: int | None = None, *,
                    margin: float = 0.97) -> tuple[bool, float, float]:
    """Whether `trial` runs faster than `current` by more than noise: its median (interleaved with
    `current`, see `interleaved_medians`) below `margin` times `current`'s. Returns
    `(faster, trial_ms, current_ms)`; used to keep a graph change only where it pays.

    Example:
        >>> faster, t, c = measured_faster(lambda: None, lambda: sum(range(20000)), 1)
        >>> faster
        True
    """
    t = interleaved_medians({"current": current, "trial": trial}, threads or torch.get_num_threads())
    return t["trial"] < margin * t["current"], t["trial"], t["current"]


def latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    batch_size: int | None = None,
    max_seconds: float = 20.0,
) -> LatencyResult:
    """Median/p90 latency of `model(*example_inputs)` on the CPU in eval mode under no_grad.

    Args:
        model: the model to time.
        example_inputs: a tensor or tuple of tensors.
        threads: torch intra-op threads (default: available cores, at most 4); restored afterwards.
        warmup: untimed runs first (allocator, oneDNN primitive caches, lazy init).
        repeats: timed runs (fewer if `max_seconds` would be exceeded; at least 5).
        batch_size: resize the inputs' dim 0 to this (rows repeated) before timing.
        max_seconds: time budget for the timed runs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> latency(nn.Linear(8, 8), torch.zeros(1, 8), repeats=5).repeats
        5
    """
    inputs = as_inputs(example_inputs)
    if batch_size is not None:
        inputs = rebatch(inputs, batch_size)
    was_training = model.training
    model.eval()
    try:
        with pinned_threads(threads) as n, torch.inference_mode():
            run_forward(model, inputs, what="timed model")
            for _ in range(warmup):
                model(*inputs)
            times: list[float] = []
            deadline = time.perf_counter() + max_seconds
            for i in range(repeats):
                times.append(_timed(model, inputs))
                if i >= 4 and time.perf_counter() > deadline:
                    break
    finally:
        model.train(was_training)
    return LatencyResult(
        median_ms=statistics.median(times),
        p90_ms=_percentile(times, 0.9),
        min_ms=min(times),
        threads=n,
        batch_size=_batch_size(inputs),
        warmup=warmup,
        repeats=len(times),
    )


def compare_latency(
    baseline: nn.Module,
    candidate: nn.Module,
    example_inputs: Any,
    *,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    batch_size: int | None = None,
    candidate_inputs: Any = None,
    max_seconds: float = 40.0,
    block: int = 1,
) -> ComparisonResult:
    """Time `baseline` and `candidate` interleaved (A, B, A, B, ...) in this process.

    Args:
        baseline, candidate: the two models; both run on the same inputs unless
            `candidate_inputs` is given (e.g. a channels-last copy).
        example_inputs: a tensor or tuple of tensors.
        threads: torch intra-op threads for both (default: available cores, at most 4).
        warmup: untimed runs of each first.
        repeats: timed runs of each (the order alternates every round to cancel drift).
        batch_size: resize the inputs' dim 0 to this before timing.
        max_seconds: time budget for the timed runs (at least 5 rounds are run).
        block: consecutive calls of one model per turn (A×block, B×block, ...), each turn
            starting with one untimed call. Use ~50 when the two models run on different thread
            pools (onnxruntime or inductor-compiled code vs eager PyTorch): alternating single
            calls then times their idle threads spinning against each other for the two cores,
            a contention that does not exist when either model is deployed alone.

    Returns:
        `ComparisonResult` with medians, p90s and `speedup = baseline_ms / candidate_ms`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Linear(8, 8)
        >>> compare_latency(m, m, torch.zeros(1, 8), repeats=5).repeats
        5
    """
    a_inputs = as_inputs(example_inputs)
    b_inputs = as_inputs(candidate_inputs) if candidate_inputs is not None else a_inputs
    if batch_size is not None:
        a_inputs, b_inputs = rebatch(a_inputs, batch_size), rebatch(b_inputs, batch_size)
    modes = (baseline.training, candidate.training)
    baseline.eval()
    candidate.eval()
    try:
        with pinned_threads(threads) as n, torch.inference_mode():
            run_forward(baseline, a_inputs, what="baseline")
            run_forward(candidate, b_inputs, what="candidate")
            for _ in range(warmup):
                baseline(*a_inputs)
                candidate(*b_inputs)
            times = interleaved_ms({"a": lambda: baseline(*a_inputs), "b": lambda: candidate(*b_inputs)},
                                   rounds=-(-repeats // max(block, 1)), block=block,
                                   deadline=time.perf_counter() + max_seconds)
            ta, tb = times["a"], times["b"]
    finally:
        baseline.train(modes[0])
        candidate.train(modes[1])
    ma, mb = statistics.median(ta), statistics.median(tb)
    return ComparisonResult(
        baseline_ms=ma,
        candidate_ms=mb,
        baseline_p90_ms=_percentile(ta, 0.9),
        candidate_p90_ms=_percentile(tb, 0.9),
        speedup=ma / mb if mb > 0 else float("inf"),
        threads=n,
        batch_size=_batch_size(a_inputs),
        warmup=warmup,
        repeats=len(ta),
    )
