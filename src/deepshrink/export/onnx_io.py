"""ONNX export with output-by-output verification in onnxruntime.

`onnx(model, example_inputs, path)` exports fp32 models with the TorchScript exporter (fast; falls
back to the dynamo exporter, which needs onnxscript) and int8 models produced by
`deepshrink.quantize.int8(..., backend="onnxruntime")` (already QDQ ONNX). The batch axis of every
input is dynamic (and the sequence axis of integer token inputs). With `verify=True` the written
file is run in onnxruntime at the example batch and at another batch size and compared with the
PyTorch model output by output; every mismatching output is listed in one `VerificationError`.

Example:
    >>> import torch, tempfile, os
    >>> from torch import nn
    >>> path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> str(onnx(nn.Linear(4, 2), (torch.randn(2, 4),), path)).endswith("m.onnx")
    True
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BackendUnavailableError, InputError, UnsupportedLayerError, VerificationError
from ..inputs import as_inputs, flat_tensors, rebatch
from ..outputs import atomic_file

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17


def _require_ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError("onnxruntime is not installed: pip install 'deepshrink[onnx]'") from exc
    return onnxruntime


def _check_exportable(model: nn.Module) -> None:
    from ..quantize.int8.torch_backend import is_quantized_module

    bad = [n or type(model).__name__ for n, m in model.named_modules() if is_quantized_module(m)]
    if bad:
        raise UnsupportedLayerError(
            "torch.ao int8 modules cannot be exported to ONNX (no exporter supports them; e.g. "
            f"{', '.join(bad[:3])}). Quantize with deepshrink.quantize.int8(..., backend='onnxruntime') "
            "for a QDQ ONNX model, or export the fp32 model."
        )


def dynamic_axes_for(inputs: tuple, n_outputs: int, input_names: list[str], output_names: list[str]) -> dict:
    """Batch axis 0 of every input/output dynamic; axis 1 too for integer (token) inputs."""
    axes: dict[str, dict[int, str]] = {}
    for name, t in zip(input_names, inputs, strict=False):
        if isinstance(t, torch.Tensor) and t.dim() >= 1:
            axes[name] = {0: "batch"}
            if t.dim() >= 2 and not t.is_floating_point():
                axes[name][1] = "sequence"
    for name in output_names[:n_outputs]:
        axes[name] = {0: "batch"}
    return axes


def onnx_bytes(
    model: nn.Module,
    example_inputs: Any,
    *,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    exporter: str = "auto",
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
) -> tuple[bytes, list[str], list[str]]:
    """Export `model` to ONNX in memory: `(model bytes, input names, output names)`.

    Example:
        >>> import torch
        >>> data, ins, outs = onnx_bytes(torch.nn.Linear(3, 1), (torch.randn(2, 3),))
        >>> ins, outs
        (['input_0'], ['output_0'])
    """
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise InputError(f"exporter must be 'auto', 'torchscript' or 'dynamo', got {exporter!r}")
    if getattr(model, "onnx_model_bytes", None) is not None:  # an onnxruntime-backed module
        return model.onnx_model_bytes, list(model.input_names), list(model.output_names)
    _check_exportable(model)
    inputs = as_inputs(example_inputs)
    model = model.eval()
    with torch.no_grad():
        n_out = len(flat_tensors(model(*inputs)))
    input_names = list(input_names or [f"input_{i}" for i in range(len(inputs))])
    output_names = list(output_names or [f"output_{i}" for i in range(n_out)])
    errors = []
    if exporter in ("auto", "torchscript"):
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, inputs, buf, dynamo=False, opset_version=opset,
                    input_names=input_names, output_names=output_names,
                    dynamic_axes=dynamic_axes_for(inputs, n_out, input_names, output_names) if dynamic else None,
                )
            return buf.getvalue(), input_names, output_names
        except Exception as exc:  # noqa: BLE001 - try the other exporter, report both
            errors.append(f"torchscript exporter: {exc}")
            log.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", exc)
    try:
        ex = tuple(rebatch(inputs, 2)) if dynamic else inputs
        shapes = None
        if dynamic:
            batch = torch.export.Dim("batch", min=1)
            shapes = tuple({0: batch} if isinstance(t, torch.Tensor) and t.dim() else None for t in ex)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, ex, dynamo=True, opset_version=max(opset, 18),
                                     input_names=input_names, output_names=output_names,
                                     dynamic_shapes=shapes, verbose=False)
        return prog.model_proto.SerializeToString(), input_names, output_names
    except Exception as exc:  # noqa: BLE001
        errors.append(f"dynamo exporter: {exc}")
    raise UnsupportedLayerError(f"{type(model).__name__} could not be exported to ONNX: " + "; ".join(errors))


def make_session(model_bytes: bytes, threads: int | None = None, *, spin: bool = True):
    """An onnxruntime CPU `InferenceSession` with `threads` intra-op threads (default: torch's).

    `spin=True` is onnxruntime's default: idle pool threads spin-wait for the next op, which is
    what makes small models fast (LeNet-5 int8 at batch 32: 0.89 ms spinning vs 1.36 ms not, on
    this project's 2-core CPU). Pass `spin=False` when onnxruntime shares the cores with other
    busy threads in the same process (e.g. PyTorch ops running between sessions): its spinning
    threads would steal those cores.
    """
    ort = _require_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _as_numpy(t: torch.Tensor):
    # the common case (CPU tensor under no_grad) skips detach/cpu: ~1.5 us per input on a
    # 0.1 ms model is measurable
    return t.numpy() if t.device.type == "cpu" and not t.requires_grad else t.detach().cpu().numpy()


def run_session(session, input_names: list[str], inputs: tuple) -> list[torch.Tensor]:
    """Run an onnxruntime session on torch tensors; outputs come back as tensors (no copy)."""
    feeds = {n: _as_numpy(t) for n, t in zip(input_names, inputs, strict=False)}
    return [torch.from_numpy(o) for o in session.run(None, feeds)]


def compare(reference: list[torch.Tensor], candidate: list[torch.Tensor], names: list[str], *,
            rtol: float, atol: float, label: str = "") -> list[str]:
    """Every mismatch (shape or value beyond `atol + rtol*|ref|`) as a readable line."""
    problems = []
    if len(reference) != len(candidate):
        problems.append(f"{label}expected {len(reference)} outputs, ONNX gives {len(candidate)}")
    for i, (r, c) in enumerate(zip(reference, candidate, strict=False)):
        name = names[i] if i < len(names) else f"output_{i}"
        r = r.detach().float()
        c = c.float()
        if tuple(r.shape) != tuple(c.shape):
            problems.append(f"{label}{name}: shape {tuple(c.shape)} != expected {tuple(r.shape)}")
            continue
        diff = (r - c).abs()
        bad = diff > atol + rtol * r.abs()
        if bool(bad.any()):
            problems.append(f"{label}{name}: {int(bad.sum())}/{bad.numel()} values differ, "
                            f"max abs diff {float(diff.max()):.3g} (atol={atol}, rtol={rtol})")
    return problems


def verify_onnx(model: nn.Module, model_bytes: bytes, input_names: list[str], output_names: list[str],
           example_inputs: Any, *, rtol: float = 1e-3, atol: float = 1e-4, batch_sizes=(None, 3)) -> None:
    """Run the ONNX model in onnxruntime and compare with `model`; raise listing EVERY mismatch."""
    inputs = as_inputs(example_inputs)
    session = make_session(model_bytes)
    problems = []
    for bs in batch_sizes:
        x = inputs if bs is None else rebatch(inputs, bs)
        with torch.no_grad():
            ref = flat_tensors(model(*x))
        try:
            got = run_session(session, input_names, x)
        except Exception as exc:  # noqa: BLE001 - a failing run is a verification failure
            problems.append(f"[batch {x[0].shape[0]}] onnxruntime failed: {exc}")
            continue
        problems += compare(ref, got, output_names, rtol=rtol, atol=atol, label=f"[batch {x[0].shape[0]}] ")
    if problems:
        raise VerificationError("ONNX outputs differ from PyTorch:\n  " + "\n  ".join(problems))


def onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike,
    *,
    verify: bool = True,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    exporter: str = "auto",
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
) -> Path:
    """Export `model` to an ONNX file at `path` (atomic write), verified in onnxruntime.

    Args:
        model: an fp32 `nn.Module`, or an int8 model from `quantize.int8(backend="onnxruntime")`.
        example_inputs: tensor or tuple of tensors.
        path: the .onnx file to write (written only if export and verification succeed).
        verify: compare onnxruntime with PyTorch output by output (example batch and batch 3).
        rtol, atol: tolerance of the comparison.
        opset: ONNX opset for the TorchScript exporter (dynamo uses at least 18).
        dynamic: make the batch axis (and integer inputs' sequence axis) dynamic.
        exporter: "auto" (TorchScript, then dynamo), "torchscript" or "dynamo".

    Returns:
        The path written.

    Raises:
        VerificationError: listing every output that differs (shape or values).
        UnsupportedLayerError: the model cannot be exported (e.g. torch.ao int8 modules).

    Example:
        >>> import torch, tempfile, os
        >>> p = onnx(torch.nn.Linear(4, 2), torch.randn(2, 4), os.path.join(tempfile.mkdtemp(), "a.onnx"))
        >>> p.suffix
        '.onnx'
    """
    inputs = as_inputs(example_inputs)
    data, ins, outs = onnx_bytes(model, inputs, opset=opset, dynamic=dynamic, exporter=exporter,
                                 input_names=input_names, output_names=output_names)
    if verify:
        verify_onnx(model, data, ins, outs, inputs, rtol=rtol, atol=atol,
                            batch_sizes=(None, 3) if dynamic else (None,))
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    out = Path(path)
    log.info("wrote %s (%d bytes)", out, len(data))
    return out
