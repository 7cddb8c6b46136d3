"""Timing-driven decisions inside `int8`: which quantized engine, which slow layers fall back.

Decisions time the real kernels on the calibration batch. Layer-level checks use the fastest of
repeated one-thread runs (a stable lower bound on a shared machine); anything that changes the
shipped model is confirmed on the whole model with interleaved medians
(`deepshrink.measure.latency.measured_faster`).

Example:
    >>> import torch
    >>> ms = best_ms(lambda: torch.ones(8).sum(), repeats=3)
    >>> ms > 0
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ...errors import BackendUnavailableError
from ...measure.latency import measured_faster, pinned_threads


def best_ms(fn: Callable[[], Any], repeats: int = 15, threads: int = 1) -> float:
    """Fastest of `repeats` timed calls (after warm-up), in ms.

    Decisions inside `int8` use the minimum on one thread: on a shared machine the median swings
    with other load, and multi-threaded kernels stall at OpenMP barriers when a core is taken,
    while the single-thread minimum is a stable lower bound of the kernel's own cost.
    """
    with pinned_threads(threads):
        return _min_time(fn, repeats)


def _min_time(fn: Callable[[], Any], repeats: int) -> float:
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


@torch.no_grad()
def slow_layers(float_model: nn.Module, qmodel: nn.Module, batch: tuple, *, margin: float = 1.1) -> dict[str, str]:
    """Quantized layers whose kernel (timed alone on its real input) is slower than the fp32 layer."""
    from .torch_backend import is_quantized_module

    qmods = {n: m for n, m in qmodel.named_modules() if n and is_quantized_module(m)}
    fmods = dict(float_model.named_modules())
    captured: dict[str, Any] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, _n=n: captured.setdefault(_n, a[0]))
             for n, m in qmods.items() if n in fmods]
    try:
        qmodel(*batch)
    finally:
        for h in hooks:
            h.remove()
    slow = {}
    for name, x in captured.items():
        fx_in = x.dequantize() if x.is_quantized else x
        f_ms = q_ms = 0.0
        for _ in range(2):  # interleave twice to cancel drift
            q_ms += best_ms(lambda _m=qmods[name], _x=x: _m(_x)) / 2
            f_ms += best_ms(lambda _m=fmods[name], _x=fx_in: _m(_x)) / 2
        if q_ms > margin * f_ms:
            slow[name] = f"int8 kernel slower than fp32 on its input ({q_ms:.3f} ms vs {f_ms:.3f} ms)"
    return slow


def keep_faster_fallbacks(build: Callable[[set[str]], nn.Module], excluded: set[str], qmodel: nn.Module,
                           slow: dict[str, str], batch: tuple, margin: float = 0.97):
    """Fall back the `slow` layers one at a time, each kept only if the WHOLE model gets faster.

    A layer's int8 kernel timed alone can lose to fp32 while the model still wins with it int8
    (falling back adds a dequantize and a quantize, and breaks int8 chains): the pretrained digit
    CNN's first conv measured 0.67 vs 0.60 ms alone, yet the model ran ~2x slower with it fp32.
    Returns (kept layer names, model, {layer: "kept/rejected (trial ms vs current ms)"}).
    """
    kept: list[str] = []
    trials: dict[str, str] = {}
    for name in slow:
        trial = build(excluded | set(kept) | {name})
        keep, trial_ms, current_ms = measured_faster(lambda q=trial: q(*batch), lambda q=qmodel: q(*batch),
                                                     margin=margin)
        trials[name] = f"{'kept' if keep else 'rejected'} ({trial_ms:.3f} ms vs {current_ms:.3f} ms whole model)"
        if keep:
            kept.append(name)
            qmodel = trial
    return kept, qmodel, trials


ENGINES = ("fbgemm", "x86", "onednn")


@torch.no_grad()
def pick_engine(build: Callable[[str], nn.Module], batch: tuple,
                candidates: Sequence[str] = ("fbgemm", "x86")) -> tuple[str, dict[str, float]]:
    """Build the int8 model with each quantized engine and keep the fastest on `batch` (timed).

    On this project's AMD EPYC (AVX-512 VNNI) the "x86" engine picks oneDNN kernels for small
    convolutions that run ~2x slower than fbgemm's, so the choice is measured, not assumed.
    """
    available = [e for e in candidates if e in torch.backends.quantized.supported_engines]
    if not available:
        raise BackendUnavailableError(f"none of the quantized engines {candidates} is available")
    models = {e: build(e) for e in available}
    times: dict[str, float] = {}
    for _ in range(2):  # interleaved rounds
        for e, m in models.items():
            times[e] = min(times.get(e) or float("inf"), best_ms(lambda _m=m: _m(*batch), repeats=10))
    best = min(times, key=times.get)
    torch.backends.quantized.engine = best
    return best, {e: round(t, 4) for e, t in times.items()}
