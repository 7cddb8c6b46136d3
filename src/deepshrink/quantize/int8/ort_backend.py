"""The onnxruntime int8 backend: export to ONNX, then `quantize_static` (QDQ) or `quantize_dynamic`.

The result is an `OrtModule`, an `nn.Module` that runs an onnxruntime `InferenceSession` on the
quantized ONNX model. It accepts any batch size (dynamic batch axis), re-creates its session when
torch's thread count changes (so timings compare like with like) and pickles/deep-copies without
the session.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = quantize_ort(nn.Sequential(nn.Linear(8, 4)), (torch.randn(2, 8),), None, exclude=set())
    >>> m(torch.randn(5, 8)).shape
    torch.Size([5, 4])
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...export.onnx_io import make_session, onnx_bytes, run_session

log = logging.getLogger(__name__)

_ORT_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class OrtModule(nn.Module):
    """An `nn.Module` running an ONNX model in onnxruntime (CPU).

    Attributes:
        onnx_model_bytes: the serialized ONNX model.
        input_names / output_names: graph I/O names, in order.
        spin: onnxruntime's spin-waiting thread pool (default True).
        max_threads: cap on intra-op threads (default None: torch's current thread count).
    """

    def __init__(self, model_bytes: bytes, input_names: list[str], output_names: list[str],
                 single_output: bool = True):
        super().__init__()
        self.onnx_model_bytes = model_bytes
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.single_output = single_output
        self._session = None
        self._threads = 0
        # onnxruntime's default spin-waiting pool (fastest); set False when this module shares the
        # cores with other busy threads of the same process (see `make_session`).
        self.spin = True
        # at most this many intra-op threads (None: torch's current count). Tiny models can run
        # faster on one thread than on two; `int8_auto` measures that and sets it.
        self.max_threads: int | None = None

    def with_threads(self, max_threads: int | None) -> OrtModule:
        """The same ONNX model (bytes shared) capped at `max_threads` intra-op threads.

        Example:
            >>> m = OrtModule(b"", ["x"], ["y"]).with_threads(1)
            >>> m.max_threads
            1
        """
        other = OrtModule(self.onnx_model_bytes, self.input_names, self.output_names, self.single_output)
        other.spin = getattr(self, "spin", True)
        other.max_threads = max_threads
        return other

    def session(self):
        threads = torch.get_num_threads()
        cap = getattr(self, "max_threads", None)
        if cap:
            threads = min(threads, cap)
        key = (threads, getattr(self, "spin", True))
        if self._session is None or key != self._threads:
            self._session = make_session(self.onnx_model_bytes, threads, spin=key[1])
            self._threads = key
        return self._session

    def forward(self, *inputs: torch.Tensor) -> Any:
        outs = run_session(self.session(), self.input_names, inputs)
        return outs[0] if self.single_output and len(outs) == 1 else tuple(outs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def extra_repr(self) -> str:
        return f"onnx={len(self.onnx_model_bytes)} bytes, inputs={self.input_names}"


def onnx_node_names_for(model_bytes: bytes, module_names: set[str]) -> list[str]:
    """ONNX node names that belong to the given PyTorch module names (TorchScript exporter scopes)."""
    import onnx

    if not module_names:
        return []
    graph = onnx.load_from_string(model_bytes).graph
    prefixes = []
    for name in module_names:
        parts = name.split(".")
        cumulative = [".".join(parts[: i + 1]) for i in range(len(parts))]
        prefixes += ["/" + "/".join(cumulative) + "/", "/" + "/".join(parts) + "/"]
    return [n.name for n in graph.node if any(n.name.startswith(p) for p in prefixes)]


class _Reader:
    def __init__(self, names: list[str], batches: list[tuple]):
        self.names, self.batches, self.i = names, batches, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        b = self.batches[self.i]
        self.i += 1
        return {n: t.detach().cpu().numpy() for n, t in zip(self.names, b, strict=False)}

    def rewind(self):
        self.i = 0


def quantize_ort(
    model: nn.Module,
    example_inputs: tuple,
    calib: list[tuple] | None,
    *,
    exclude: set[str],
    method: str = "minmax",
    percentile: float = 99.99,
    per_channel: bool = True,
    reduce_range: bool = False,
) -> OrtModule:
    """Quantize `model` with onnxruntime: QDQ static when `calib` is given, else dynamic."""
    from onnxruntime import quantization as oq

    if calib is not None and method not in _ORT_METHODS:
        raise InputError(f"calibration {method!r} is not available with backend 'onnxruntime'; "
                         f"use one of {', '.join(_ORT_METHODS)} (or backend='x86' for 'mse')")
    data, ins, outs = onnx_bytes(model, example_inputs)
    with torch.no_grad():
        out = model(*example_inputs)
    single = isinstance(out, torch.Tensor)
    with tempfile.TemporaryDirectory() as tmp:
        src, pre, dst = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(src, "wb") as fh:
            fh.write(data)
        try:
            # symbolic shape inference is skipped: when it is incomplete (e.g. BERT) onnxruntime
            # dumps "sym_shape_infer_temp.onnx" + external data into the current directory
            oq.shape_inference.quant_pre_process(src, pre, skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimization only
            log.info("onnxruntime quant_pre_process failed (%s); quantizing the raw export", exc)
            pre = src
        nodes_to_exclude = onnx_node_names_for(open(pre, "rb").read(), exclude)
        if calib is None:
            oq.quantize_dynamic(pre, dst, per_channel=per_channel, reduce_range=reduce_range,
                                weight_type=oq.QuantType.QInt8, nodes_to_exclude=nodes_to_exclude)
        else:
            extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
            if method == "percentile":
                extra["CalibPercentile"] = percentile
            oq.quantize_static(
                pre, dst, _Reader(ins, calib), quant_format=oq.QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=reduce_range, activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8,
                nodes_to_exclude=nodes_to_exclude,
                calibrate_method=getattr(oq.CalibrationMethod, _ORT_METHODS[method]), extra_options=extra,
            )
        with open(dst, "rb") as fh:
            qbytes = fh.read()
    return OrtModule(qbytes, ins, outs, single_output=single)


def ort_quantized_ops(module: OrtModule) -> list[str]:
    """The quantized op types in an OrtModule's graph (QuantizeLinear, MatMulInteger, ...)."""
    import onnx

    graph = onnx.load_from_string(module.onnx_model_bytes).graph
    q = {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
         "QLinearMatMul", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    return sorted({n.op_type for n in graph.node if n.op_type in q})


