"""The `x86_inductor` int8 backend: torchao PT2E (`X86InductorQuantizer`) lowered by `torch.compile`.

Flow: `torch.export` (dynamic batch axis) → `prepare_pt2e` with torchao's `X86InductorQuantizer`
(uint8 per-tensor activations, int8 per-channel symmetric weights) → calibration → `convert_pt2e`
→ `torch.compile` with inductor freezing. Inductor pattern-matches the quantize/dequantize pairs
into oneDNN int8 convolutions and GEMMs with fused ReLU and requantization (uint8 in, uint8 out),
and fuses the remaining elementwise work (input normalization + the first quantize) into one C++
kernel. On small CNNs the per-op quantize/dequantize and dispatch overhead of eager torch.ao is
what dominates; this removes it (LeNet-5 batch 32, 1 thread, alone in a process: ~4.5x over fp32
eager vs ~2.8x for torch.ao; see BENCHMARKS.md for the less flattering in-benchmark figures).

The result is an `InductorInt8Module`: it holds the converted PT2E graph (int8 weights) and compiles
it on first use, once per torch thread count (inductor's C++ kernels bake the OpenMP thread count
in), so timings at 1 and 2 threads are both honest, and once per batch size (static shapes). It
deep-copies without the compiled code; the exported graph does not pickle (keep the fp32 model and
re-quantize, or use backend="onnxruntime"). `compiled=False` runs the converted graph eagerly
(reference quantize/dequantize ops, same numerics up to rounding, no compile cost) - used for the
cheap fidelity probes inside `int8`.

Needs `torchao` (the `quant` extra) and a C++ compiler for inductor; otherwise
`BackendUnavailableError`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(8, 4), nn.ReLU()).eval()
    >>> q = quantize_inductor(m, (torch.randn(2, 8),), [(torch.randn(16, 8),)], exclude=set(), compiled=False)
    >>> q(torch.randn(3, 8)).shape
    torch.Size([3, 4])
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ...errors import BackendUnavailableError, InputError

log = logging.getLogger(__name__)

# calibration methods this backend maps onto torchao observers
INDUCTOR_METHODS = ("minmax", "mse")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torchao").setLevel(logging.ERROR)
        yield


def _require_torchao():
    try:
        with _quiet():
            import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except Exception as exc:  # noqa: BLE001 - missing or broken install
        raise BackendUnavailableError(
            "int8 backend 'x86_inductor' needs torchao (pip install 'deepshrink[quant]' or "
            f"'torchao==0.18.*'): {type(exc).__name__}: {exc}") from exc
    return xiq, prepare_pt2e, convert_pt2e


def inductor_available() -> bool:
    """Whether torchao's PT2E quantizer imports here."""
    try:
        _require_torchao()
    except BackendUnavailableError:
        return False
    return True


def _config(xiq, *, method: str, dynamic: bool, reduce_range: bool, per_channel: bool):
    """The X86InductorQuantizer config with the activation observer chosen by `method`."""
    import dataclasses

    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver

    cfg = xiq.get_default_x86_inductor_quantization_config(is_dynamic=dynamic, reduce_range=reduce_range)
    act, weight = cfg.input_activation, cfg.weight
    if not dynamic:
        obs = MinMaxObserver if method == "minmax" else HistogramObserver  # histogram = L2-optimal range
        act = dataclasses.replace(act, observer_or_fake_quant_ctr=obs.with_args(eps=2**-12))
    if not per_channel:
        weight = dataclasses.replace(weight, qscheme=torch.per_tensor_symmetric, ch_axis=None,
                                     observer_or_fake_quant_ctr=MinMaxObserver.with_args(eps=2**-12))
    else:
        weight = dataclasses.replace(weight, observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=2**-12))
    return dataclasses.replace(cfg, input_activation=act, output_activation=act, weight=weight)


def _FREEZING():  # noqa: N802 - reads like the context manager it returns
    from torch._inductor import config

    return config.patch(freezing=True)


class InductorInt8Module(nn.Module):
    """A converted PT2E int8 graph, compiled by inductor (freezing) on first use per thread count."""

    def __init__(self, converted: nn.Module, *, compiled: bool = True):
        super().__init__()
        self.graph_module = converted
        self.compiled = compiled
        self._compiled: dict[int, Any] = {}

    def forward(self, *inputs: torch.Tensor) -> Any:
        if not self.compiled:
            return self.graph_module(*inputs)
        threads = torch.get_num_threads()
        fn = self._compiled.get(threads)
        if fn is None:
            # a private copy per thread count: inductor bakes the OpenMP thread count into its
            # kernels, and a copy has its own code object, hence its own dynamo cache entry
            gm = copy.deepcopy(self.graph_module)
            # static shapes: one specialisation per batch size (inductor's dynamic-shape qconv
            # lowering trips over its channels-last output strides in torch 2.13). Compile the
            # copy's own generated `forward`: `torch.compile(module)` goes through a wrapper whose
            # code object every compiled module shares, so all of them together would exhaust
            # dynamo's recompile limit (8) and silently fall back to eager reference ops.
            fn = torch.compile(gm.forward, dynamic=False)
            self._keep = getattr(self, "_keep", []) + [gm]
            self._compiled[threads] = fn
        # freezing (weights as constants, so the int8 weights get prepacked) must be on whenever
        # dynamo may (re)compile, e.g. for a new batch size; torch.compile(options=) does not reach it
        with torch.no_grad(), _FREEZING():
            return fn(*inputs)

    def __deepcopy__(self, memo):
        new = InductorInt8Module(copy.deepcopy(self.graph_module, memo), compiled=self.compiled)
        new._keep = []
        memo[id(self)] = new
        return new

    def train(self, mode: bool = True):  # exported graphs refuse train()/eval(); nothing to switch
        self.training = mode
        return self

    def extra_repr(self) -> str:
        return f"compiled={self.compiled}, thread_counts_compiled={sorted(self._compiled)}"


def quantize_inductor(
    model: nn.Module,
    example_inputs: tuple,
    calib: list[tuple] | None,
    *,
    exclude: set[str],
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = False,
    compiled: bool = True,
) -> InductorInt8Module:
    """PT2E int8 with `X86InductorQuantizer`: static when `calib` is given, else dynamic (Linear only).

    `exclude` names modules kept fp32. Raises `BackendUnavailableError` without torchao and
    `InputError` for calibration methods other than "minmax" / "mse" (histogram observer).
    """
    if calib is not None and method not in INDUCTOR_METHODS:
        raise InputError(f"calibration {method!r} is not available with backend 'x86_inductor'; use one of "
                         f"{', '.join(INDUCTOR_METHODS)}")
    xiq, prepare_pt2e, convert_pt2e = _require_torchao()
    model = copy.deepcopy(model).eval()
    batch = torch.export.Dim("batch", min=1)
    dyn = tuple({0: batch} if isinstance(t, torch.Tensor) and t.dim() > 0 else None for t in example_inputs)
    # export needs a batch size that is not specialised to 0/1
    ex = tuple(t.expand(2, *t.shape[1:]).contiguous() if isinstance(t, torch.Tensor) and t.dim() > 0
               and t.shape[0] == 1 else t for t in example_inputs)
    with _quiet():
        try:
            gm = torch.export.export(model, ex, dynamic_shapes=dyn).module()
        except Exception as exc:  # noqa: BLE001 - any export failure becomes one typed error
            from ...errors import TraceError

            raise TraceError(f"torch.export cannot capture {type(model).__name__} for 'x86_inductor': "
                             f"{str(exc).splitlines()[0][:300]}") from exc
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(_config(xiq, method=method, dynamic=calib is None, reduce_range=reduce_range,
                                     per_channel=per_channel))
        for name in sorted(exclude):
            quantizer.set_module_name_qconfig(name, None)
        prepared = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for b in calib or [ex]:
                prepared(*b)
        converted = convert_pt2e(prepared)
    converted._forward_pre_hooks.clear()  # input re-checks; dynamo guards the shapes anyway
    return InductorInt8Module(converted, compiled=compiled)


def inductor_quantized_ops(module: InductorInt8Module) -> int:
    """Number of quantize ops in the converted graph (0 means nothing was quantized)."""
    return sum(1 for n in module.graph_module.graph.nodes
               if n.op == "call_function" and "quantize_per" in str(n.target) and "dequantize" not in str(n.target))
