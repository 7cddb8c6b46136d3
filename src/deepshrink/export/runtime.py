"""Runtime choice: the same model timed on eager PyTorch, torch.compile (inductor, CPU) and onnxruntime.

`compare_runtimes` builds each runtime's version of the model, checks its outputs against eager
PyTorch, and times them side by side (interleaved, pinned threads, warm-up, median).
`recommend_runtime` returns the fastest runtime whose outputs match. A runtime that cannot take the
model (e.g. torch.ao int8 modules in ONNX) is listed with its error, never silently dropped.

Example:
    >>> import torch
    >>> from torch import nn
    >>> rep = compare_runtimes(nn.Linear(8, 8), torch.randn(4, 8), runtimes=("eager", "onnxruntime"), repeats=5)
    >>> sorted(r.runtime for r in rep.rows)
    ['eager', 'onnxruntime']
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..inputs import as_inputs, flat_tensors, rebatch

log = logging.getLogger(__name__)

RUNTIMES = ("eager", "compile", "onnxruntime")


@dataclass
class RuntimeRow:
    runtime: str
    median_ms: float | None = None
    min_ms: float | None = None
    matches: bool = False
    max_abs_err: float | None = None
    error: str | None = None


@dataclass
class RuntimeReport:
    """Rows per runtime, the recommended runtime and the settings used."""

    rows: list[RuntimeRow] = field(default_factory=list)
    best: str = "eager"
    threads: int = 1
    batch_size: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def row(self, runtime: str) -> RuntimeRow:
        return next(r for r in self.rows if r.runtime == runtime)


def build_runtime(model: nn.Module, inputs: tuple, runtime: str) -> nn.Module:
    """`model` wrapped for `runtime` ("eager", "compile" or "onnxruntime")."""
    if runtime == "eager":
        return model
    if runtime == "compile":
        if getattr(model, "onnx_model_bytes", None) is not None:
            raise InputError("an onnxruntime-backed model runs in onnxruntime only (nothing to compile)")
        compiled = torch.compile(copy.deepcopy(model), backend="inductor", dynamic=False)
        return compiled
    if runtime == "onnxruntime":
        if getattr(model, "onnx_model_bytes", None) is not None:
            return model
        from ..quantize.int8.ort_backend import OrtModule
        from .onnx_io import onnx_bytes

        data, ins, outs = onnx_bytes(model, inputs)
        with torch.no_grad():
            single = isinstance(model(*inputs), torch.Tensor)
        return OrtModule(data, ins, outs, single_output=single)
    raise InputError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")


def compare_runtimes(
    model: nn.Module,
    example_inputs: Any,
    *,
    runtimes: Sequence[str] = RUNTIMES,
    batch_size: int | None = None,
    threads: int | None = None,
    repeats: int = 30,
    warmup: int = 5,
    rtol: float = 1e-3,
    atol: float = 1e-3,
) -> RuntimeReport:
    """Time `model` on each runtime and check its outputs against eager PyTorch.

    Args:
        model: any model (fp32, half, int8).
        example_inputs: tensor or tuple of tensors.
        runtimes: subset of ("eager", "compile", "onnxruntime").
        batch_size: resize inputs' dim 0 first.
        threads: torch (and onnxruntime) intra-op threads.
        repeats, warmup: timed / untimed runs per runtime (interleaved rounds).
        rtol, atol: output tolerance for `matches`.

    Returns:
        `RuntimeReport`; `.best` is the fastest runtime whose outputs match ("eager" otherwise).

    Example:
        >>> import torch
        >>> compare_runtimes(torch.nn.ReLU(), torch.randn(2, 2), runtimes=("eager",), repeats=3).best
        'eager'
    """
    from ..measure.latency import interleaved_ms, pinned_threads

    inputs = as_inputs(example_inputs)
    if batch_size is not None:
        inputs = rebatch(inputs, batch_size)
    model = model.eval()
    report = RuntimeReport(batch_size=int(inputs[0].shape[0]) if inputs[0].dim() else 1)
    with pinned_threads(threads) as n, torch.inference_mode():
        report.threads = n
        ref = flat_tensors(model(*inputs))
        built: dict[str, nn.Module] = {}
        for rt in runtimes:
            row = RuntimeRow(rt)
            report.rows.append(row)
            try:
                m = build_runtime(model, inputs, rt)
                out = flat_tensors(m(*inputs))
                errs = [float((r.float() - o.float()).abs().max()) if r.shape == o.shape else float("inf")
                        for r, o in zip(ref, out, strict=False)]
                row.max_abs_err = max(errs) if errs else 0.0
                row.matches = len(out) == len(ref) and all(
                    r.shape == o.shape and bool(((r.float() - o.float()).abs() <= atol + rtol * r.float().abs()).all())
                    for r, o in zip(ref, out, strict=False))
                for _ in range(warmup):
                    m(*inputs)
                built[rt] = m
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot run the model is reported
                row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                log.info("runtime %s unavailable for this model: %s", rt, row.error)
        # Turns of several consecutive calls, each after one untimed call: the runtimes have their
        # own thread pools, and alternating single calls would time their idle threads spinning
        # against each other rather than each runtime as it runs when deployed.
        block = max(1, min(10, repeats // 3))
        times = interleaved_ms({rt: (lambda m=m: m(*inputs)) for rt, m in built.items()},
                               rounds=-(-repeats // block), block=block, settle=True)
    for row in report.rows:
        ts = sorted(times.get(row.runtime, []))
        if ts:
            row.median_ms, row.min_ms = ts[len(ts) // 2], ts[0]
    ok = [r for r in report.rows if r.matches and r.median_ms is not None]
    report.best = min(ok, key=lambda r: r.median_ms).runtime if ok else "eager"
    return report


def recommend_runtime(model: nn.Module, example_inputs: Any, **kwargs: Any) -> str:
    """The fastest runtime whose outputs match eager PyTorch (see `compare_runtimes`).

    Example:
        >>> import torch
        >>> recommend_runtime(torch.nn.ReLU(), torch.randn(2, 2), runtimes=("eager",), repeats=3)
        'eager'
    """
    return compare_runtimes(model, example_inputs, **kwargs).best
