"""`int8(model, example_inputs, calib_data=None, *, backend=...)`: post-training int8 on real kernels.

Pipeline (static mode, `calib_data` given):

1. capture the graph (torch.fx), fold BatchNorm into the preceding conv/linear, turn `.view` into
   `.reshape` (int8 conv outputs are channels-last);
2. optionally cross-layer equalization and bias correction, each kept only if it lowers the output
   error on the calibration data ("auto");
3. quantize (torch.ao FX on engine "x86", onnxruntime QDQ, or torchao PT2E lowered by inductor
   on "x86_inductor"), calibrating activations with
   min/max, percentile, MSE or entropy (KL); per-channel symmetric int8 weights;
4. measure the output fidelity (mean cosine to fp32 on calibration batches); while it is below
   `min_cosine`, fall back the most sensitive layer (each layer's error measured alone) to fp32;
5. optionally fall back layers whose int8 kernel is slower than fp32 at the calibration batch
   (kept only if the whole model gets faster; timing decisions live in `speed.py`).

Dynamic mode (`calib_data=None`) quantizes Linear/LSTM/GRU weights and quantizes activations per
batch at run time; convolutions stay fp32 (recorded: no dynamic int8 conv kernel exists).

The returned model carries `quant_info` (a `QuantInfo`): what was quantized, what fell back and why.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    >>> q = int8(m, torch.randn(2, 16), fallback_slow=False)
    >>> q.quant_info.mode, len(q.quant_info.quantized)
    ('dynamic', 2)
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import CalibrationError, InputError, TraceError
from ...inputs import as_inputs, iter_inputs, run_forward
from ...selectors import select
from . import graph as G
from .observers import check_method
from .speed import ENGINES, best_ms, keep_faster_fallbacks, pick_engine, slow_layers

log = logging.getLogger(__name__)

BACKENDS = ("x86", "onnxruntime", "x86_inductor")
_QUANTIZABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.LSTM, nn.GRU)


@dataclass
class QuantInfo:
    """What `int8` did. `fallback` rows are `{"layer", "reason"}`; `cosine` is output fidelity."""

    backend: str
    mode: str
    calibration: str | None
    per_channel: bool
    reduce_range: bool
    quantized: list[str] = field(default_factory=list)
    fallback: list[dict] = field(default_factory=list)
    cosine: float | None = None
    passes: dict = field(default_factory=dict)
    engine: str | None = None
    latency_ms: dict = field(default_factory=dict)
    slower_than_fp32: bool | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_calibration(batches: list[tuple], example: tuple) -> None:
    """Raise `CalibrationError` for an empty set or batches that do not match the example inputs."""
    if not batches:
        raise CalibrationError("the calibration set is empty (calib_data yielded no batches)")
    for i, b in enumerate(batches):
        if len(b) < len(example):
            raise CalibrationError(f"calibration batch {i} has {len(b)} item(s); the model takes {len(example)}")
        for j, (t, e) in enumerate(zip(b, example, strict=False)):
            if not isinstance(t, torch.Tensor):
                raise CalibrationError(f"calibration batch {i} item {j} is {type(t).__name__}, not a tensor")
            if not isinstance(e, torch.Tensor):
                continue
            same = t.dim() == e.dim() and (
                tuple(t.shape[1:]) == tuple(e.shape[1:])
                or (not e.is_floating_point() and tuple(t.shape[2:]) == tuple(e.shape[2:]))
            )
            if not same or t.is_floating_point() != e.is_floating_point():
                raise CalibrationError(
                    f"calibration batch {i} input {j} has shape {tuple(t.shape)} ({t.dtype}); the example "
                    f"input is {tuple(e.shape)} ({e.dtype}) - only the batch dimension may differ"
                )


@torch.no_grad()
def output_cosine(reference: nn.Module, candidate: nn.Module, batches: list[tuple]) -> float:
    """Mean per-sample cosine similarity of the first outputs over `batches`."""
    from ...measure.fidelity import compare_outputs

    return compare_outputs(reference, candidate, batches, n_inputs=len(batches[0])).cosine


class _Builder:
    """Builds the int8 model for a given set of fp32 (excluded) layers."""

    def __init__(self, model, inputs, calib, *, backend, method, percentile, per_channel, reduce_range, engine,
                 fixed_qparams=None):
        self.model, self.inputs, self.calib = model, inputs, calib
        self.backend, self.method, self.percentile = backend, method, percentile
        self.per_channel, self.reduce_range, self.engine = per_channel, reduce_range, engine
        self.fixed_qparams = fixed_qparams

    def __call__(self, exclude: set[str], calib_limit: int | None = None) -> nn.Module:
        calib = self.calib if calib_limit is None or self.calib is None else self.calib[:calib_limit]
        if self.backend == "x86_inductor":
            from .inductor_backend import quantize_inductor

            # probes (calib_limit set) run the converted graph eagerly: same numerics, no compile
            return quantize_inductor(self.model, self.inputs, calib, exclude=exclude, method=self.method,
                                     per_channel=self.per_channel, reduce_range=bool(self.reduce_range),
                                     compiled=calib_limit is None)
        if self.backend == "onnxruntime":
            from .ort_backend import quantize_ort

            return quantize_ort(self.model, self.inputs, calib, exclude=exclude, method=self.method,
                                percentile=self.percentile, per_channel=self.per_channel,
                                reduce_range=bool(self.reduce_range))
        from . import torch_backend as T

        if calib is None:
            return T.quantize_dynamic_torch(self.model, exclude=exclude, per_channel=self.per_channel,
                                            reduce_range=self.reduce_range, engine=self.engine)
        prepared = T.prepare_static(self.model, self.inputs, exclude=exclude, method=self.method,
                                    percentile=self.percentile, per_channel=self.per_channel,
                                    reduce_range=self.reduce_range, engine=self.engine)
        with torch.no_grad():
            for b in calib:
                prepared(*b)
        if self.fixed_qparams:
            T.apply_fixed_qparams(prepared, self.fixed_qparams)
        return T.convert_static(prepared)


def _preprocess(model, inputs, calib, eval_batches, *, static, fold_bn, equalize, bias_correction,
                per_channel, info: QuantInfo, build_probe) -> nn.Module:
    """Trace + exact passes; CLE and bias correction kept only where they lower the output error."""
    try:
        gm = G.trace(model)
    except TraceError as exc:
        if static:
            raise
        info.notes.append(f"graph capture failed, no graph passes: {exc}")
        return copy.deepcopy(model).eval()
    if fold_bn:
        n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
        G.fold_batchnorm(gm)
        info.passes["bn_folded"] = n_bn - sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    G.view_to_reshape(gm)
    info.passes["affine_folded"] = G.fold_input_affine(gm)
    if not static:
        return gm
    candidates = []
    if equalize in (True, "auto") and G.equalizable_pairs(gm):
        candidates.append("equalize")
    if bias_correction in (True, "auto"):
        candidates.append("bias_correction")
    best = gm
    best_cos = output_cosine(model, build_probe(best), eval_batches) if candidates else 0.0
    for what in candidates:
        trial = copy.deepcopy(best)
        if what == "equalize":
            info.passes["equalized_pairs"] = G.equalize(trial)
        else:
            G.bias_correct(trial, calib, G.weighted_layers(trial), per_channel=per_channel)
        forced = (equalize if what == "equalize" else bias_correction) is True
        if forced:
            best = trial
            info.passes[what] = "applied"
            continue
        after = output_cosine(model, build_probe(trial), eval_batches)
        keep = after > best_cos + 1e-6
        info.passes[what] = f"{'kept' if keep else 'rejected'} (cosine {best_cos:.5f} -> {after:.5f})"
        if keep:
            best, best_cos = trial, after
    return best


def int8(
    model: nn.Module,
    example_inputs: Any,
    calib_data: Any = None,
    *,
    backend: str = "x86",
    calibration: str = "minmax",
    percentile: float = 99.99,
    per_channel: bool = True,
    reduce_range: bool | None = None,
    fold_bn: bool = True,
    equalize: bool | str = "auto",
    bias_correction: bool | str = "auto",
    fallback: bool = True,
    min_cosine: float = 0.99,
    max_fallback: int = 8,
    fallback_slow: bool = True,
    exclude: Sequence[str] = (),
    calib_batches: int = 32,
    engine: str = "auto",
    fidelity_data: Any = None,
    check_speed: bool = True,
    fixed_qparams: dict[str, dict] | None = None,
    align_channels: bool | str = "auto",
) -> nn.Module:
    """Post-training int8 quantization that runs real int8 kernels; returns a new model.

    Args:
        model: a float model (left untouched).
        example_inputs: tensor or tuple of tensors the model runs on.
        calib_data: iterable of input batches for static quantization; None = dynamic quantization
            (weights int8, activations quantized per batch at run time; Linear/LSTM/GRU only).
        backend: "x86" (PyTorch fbgemm/oneDNN kernels via torch.ao), "onnxruntime" (QDQ ONNX run
            in an `OrtModule`) or "x86_inductor" (torchao PT2E with `X86InductorQuantizer`, lowered
            by `torch.compile` into fused oneDNN int8 kernels; needs torchao; calibration "minmax"
            or "mse").
        calibration: "minmax", "percentile", "mse" (x86 only) or "entropy" (KL).
        percentile: the percentile for `calibration="percentile"`.
        per_channel: per-output-channel weight scales (else per tensor).
        reduce_range: 7-bit activations; None = only on CPUs without VNNI.
        fold_bn: fold BatchNorm into the preceding conv/linear first (exact).
        equalize, bias_correction: cross-layer equalization / bias correction: True, False or
            "auto" (kept only when it raises the output cosine on calibration data; static only).
        fallback: fall back the most sensitive layers to fp32 until the output cosine to fp32 on
            the calibration batches is at least `min_cosine` (at most `max_fallback` layers).
        fallback_slow: fall back layers whose int8 kernel alone is slower than fp32, each kept fp32
            only if the whole model then measures faster (x86 backend; timed).
        exclude: selectors (name, "re:...", "type:...") of layers kept fp32.
        calib_batches: use at most this many calibration batches.
        engine: torch quantized engine for backend "x86": "fbgemm", "x86", "onednn" or "auto"
            (build with fbgemm and x86, keep the faster on a calibration batch).
        fidelity_data: input batches on which output fidelity (and so the fallback) is measured;
            default: the first 8 calibration batches, or the example inputs in dynamic mode.
        check_speed: time fp32 vs int8 (one thread, fastest of repeated runs, first fidelity
            batch) and record `quant_info.latency_ms` / `slower_than_fp32` (with a note if slower).
        fixed_qparams: static x86 only: per layer name, quantization parameters to use instead of
            observed ones: `{"weight_scale": tensor (per output channel), "act_scale": float,
            "act_zero_point": int}` (uint8 input activation). QAT conversion passes its learned
            LSQ steps here (see `torch_backend.apply_fixed_qparams`); needs full-range activations.
        align_channels: static only: pad conv output channels to a multiple of 32 with zero
            filters (exact; see `align.py`) where the int8 kernels vectorize over channels:
            "auto" keeps each padding only if the int8 model measures faster (timed, torch's
            thread count, first fidelity batch), True pads every site, False never.

    Returns:
        The int8 model, with `.quant_info` (`QuantInfo`).

    Raises:
        CalibrationError: empty calibration set or batches of the wrong shape.
        BackendUnavailableError: the backend is not installed.
        InputError: unknown backend or calibration method.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)).eval()
        >>> calib = [torch.randn(4, 1, 8, 8) for _ in range(2)]
        >>> q = int8(m, torch.randn(1, 1, 8, 8), calib, fallback_slow=False)
        >>> q(torch.randn(3, 1, 8, 8)).shape
        torch.Size([3, 2])
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown int8 backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "onnxruntime":
        from ...export.onnx_io import _require_ort

        _require_ort()
    if backend == "x86_inductor":
        from .inductor_backend import INDUCTOR_METHODS, _require_torchao

        _require_torchao()
        if calib_data is not None and calibration not in INDUCTOR_METHODS:
            raise InputError(f"calibration {calibration!r} is not available with backend 'x86_inductor'; "
                             f"use one of {', '.join(INDUCTOR_METHODS)}")
    check_method(calibration)
    if engine not in (*ENGINES, "auto"):
        raise InputError(f"unknown quantized engine {engine!r}; choose from {', '.join(ENGINES)} or 'auto'")
    if fixed_qparams and (backend != "x86" or calib_data is None):
        raise InputError("fixed_qparams (e.g. learned QAT scales) need backend='x86' with calib_data (static)")
    if any(v not in (True, False, "auto") for v in (equalize, bias_correction, align_channels)):
        raise InputError("equalize, bias_correction and align_channels must be True, False or 'auto'")
    if not 0.0 < min_cosine <= 1.0:
        raise InputError(f"min_cosine must be in (0, 1], got {min_cosine}")
    inputs = as_inputs(example_inputs)
    model = copy.deepcopy(model).eval()
    run_forward(model, inputs)
    calib = None
    if calib_data is not None:
        calib = list(iter_inputs(calib_data, None, limit=calib_batches))
        check_calibration(calib, inputs)
        calib = [b[: len(inputs)] for b in calib]
    static = calib is not None
    eval_batches = (calib or [inputs])[:8]
    if fidelity_data is not None:
        eval_batches = [b[: len(inputs)] for b in iter_inputs(fidelity_data, None, limit=8)]
        check_calibration(eval_batches, inputs)
    from .torch_backend import resolve_reduce_range

    rr = resolve_reduce_range(reduce_range) if backend in ("x86", "x86_inductor") else bool(reduce_range)
    info = QuantInfo(backend=backend, mode="static" if static else "dynamic",
                     calibration=calibration if static else None, per_channel=per_channel, reduce_range=rr)

    excluded: set[str] = set()
    if exclude:
        all_names = [n for n, _ in model.named_modules() if n]
        keep = set(select(model, None, exclude, candidates=all_names))
        excluded = {n for n in all_names if n not in keep}
        for n in sorted(excluded):
            if isinstance(model.get_submodule(n), _QUANTIZABLE):
                info.fallback.append({"layer": n, "reason": "excluded by the caller"})

    def builder_for(m, with_engine: str | None = None):
        # `engine` is read at call time: "auto" builds with fbgemm until `pick_engine` has chosen
        eng = with_engine or ("fbgemm" if engine == "auto" else engine)
        return _Builder(m, inputs, calib, backend=backend, method=calibration, percentile=percentile,
                        per_channel=per_channel, reduce_range=rr, engine=eng, fixed_qparams=fixed_qparams)

    probe = (lambda m: builder_for(m)(excluded, calib_limit=8)) if static else None
    try:
        float_model = _preprocess(model, inputs, calib, eval_batches, static=static, fold_bn=fold_bn,
                                  equalize=equalize, bias_correction=bias_correction, per_channel=per_channel,
                                  info=info, build_probe=probe)
    except TraceError as exc:
        if backend in ("onnxruntime", "x86_inductor"):
            info.notes.append(f"graph capture failed, no graph passes: {exc}")
            float_model = model
        else:
            raise TraceError(f"{exc}. Static int8 on backend 'x86' needs an FX-traceable model; use "
                             "calib_data=None (dynamic) or backend='onnxruntime'") from exc
    if backend == "x86" and engine == "auto":
        engine, timings = pick_engine(lambda e: builder_for(float_model, e)(excluded), eval_batches[0])
        info.passes["engine"] = {"chosen": engine, "best_ms": timings}
    if static and align_channels and not fixed_qparams and isinstance(float_model, torch.fx.GraphModule):
        # after the engine pick: each padding is timed on the kernels the model will ship with
        from .align import align_channels as align

        float_model, record = align(float_model, lambda g: builder_for(g)(excluded), eval_batches[0],
                                    measure=align_channels == "auto")
        if record:
            info.passes["channel_alignment"] = record
    info.engine = engine if backend == "x86" else None
    build = builder_for(float_model)
    qmodel = build(excluded)
    layers = [n for n, m in float_model.named_modules() if n and isinstance(m, _QUANTIZABLE) and n not in excluded]
    cos = output_cosine(model, qmodel, eval_batches)
    if fallback and cos < min_cosine and layers:
        sens = []
        for name in layers:
            only = build(excluded | (set(layers) - {name}), calib_limit=4)
            sens.append((1.0 - output_cosine(model, only, eval_batches), name))
        sens.sort(reverse=True)
        info.passes["sensitivity"] = {n: round(s, 6) for s, n in sens}
        for s, name in sens[:max_fallback]:
            excluded = excluded | {name}
            qmodel = build(excluded)
            new_cos = output_cosine(model, qmodel, eval_batches)
            info.fallback.append({"layer": name, "reason": f"sensitive: alone it costs {s:.2e} cosine; "
                                  f"model cosine {cos:.5f} -> {new_cos:.5f} in fp32 (target {min_cosine})"})
            cos = new_cos
            if cos >= min_cosine:
                break
        if cos < min_cosine:
            info.notes.append(f"output cosine {cos:.5f} still below {min_cosine} after {max_fallback} fallbacks")
    if fallback_slow and backend == "x86":
        slow = slow_layers(float_model, qmodel, eval_batches[0])
        if slow:
            kept, qmodel, trials = keep_faster_fallbacks(build, excluded, qmodel, slow, eval_batches[0])
            info.passes["slow_fallback"] = trials
            if kept:
                excluded = excluded | set(kept)
                info.fallback += [{"layer": n, "reason": slow[n] + "; the whole model measured faster with it fp32"}
                                  for n in kept]
                cos = output_cosine(model, qmodel, eval_batches)
    _record(info, float_model, qmodel, excluded, static, backend)
    info.cosine = cos
    if check_speed:
        with torch.no_grad():
            f_ms = best_ms(lambda: model(*eval_batches[0]), repeats=10)
            q_ms = best_ms(lambda: qmodel(*eval_batches[0]), repeats=10)
        info.latency_ms = {"fp32": round(f_ms, 4), "int8": round(q_ms, 4), "threads": 1,
                           "batch": int(eval_batches[0][0].shape[0]) if eval_batches[0][0].dim() else 1}
        info.slower_than_fp32 = q_ms > f_ms
        if info.slower_than_fp32:
            info.notes.append(f"int8 is SLOWER than fp32 on this CPU at this batch ({q_ms:.3f} ms vs "
                              f"{f_ms:.3f} ms, 1 thread): keep the fp32 model or try another backend")
            log.warning("int8 (%s) is slower than fp32 here: %.3f ms vs %.3f ms", backend, q_ms, f_ms)
    qmodel.quant_info = info
    return qmodel


def _record(info: QuantInfo, float_model: nn.Module, qmodel: nn.Module, excluded: set[str], static: bool,
            backend: str) -> None:
    """Fill `quantized` and record every weighted layer left fp32 (with the reason)."""
    fallen = {r["layer"] for r in info.fallback}
    if backend == "x86_inductor":
        from .inductor_backend import inductor_quantized_ops

        info.notes.append(f"x86_inductor: {inductor_quantized_ops(qmodel)} quantize ops in the PT2E graph, "
                          "compiled by inductor (freezing) on first use per thread count")
        info.quantized = [n for n, m in float_model.named_modules()
                          if n and isinstance(m, _QUANTIZABLE) and n not in excluded]
        return
    if backend == "onnxruntime":
        from .ort_backend import ort_quantized_ops

        ops = ort_quantized_ops(qmodel)
        info.notes.append(f"onnxruntime quantized ops: {', '.join(ops) or 'none'}")
        info.quantized = [n for n, m in float_model.named_modules()
                          if n and isinstance(m, _QUANTIZABLE) and n not in excluded]
        return
    from .torch_backend import is_quantized_module

    qnames = {n for n, m in qmodel.named_modules() if n and is_quantized_module(m)}
    info.quantized = sorted(qnames & {n for n, _ in float_model.named_modules()}) or sorted(qnames)
    for n, m in float_model.named_modules():
        if not n or n in qnames or n in fallen or not isinstance(m, (*_QUANTIZABLE, nn.Embedding)):
            continue
        if not static and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            reason = "dynamic mode: no dynamic int8 conv kernel; pass calib_data for static int8"
        else:
            reason = f"no int8 kernel for {type(m).__name__} in this configuration; runs fp32"
        info.fallback.append({"layer": n, "reason": reason})

