"""Capturing a model's computation: an eager trace at the torch-function level.

Why this and not torch.fx or torch.export (all three were tried on the zoo):

- ``torch.fx.symbolic_trace`` runs the model on proxies, so any Python that looks at a value or a
  shape (``if x.size(1) > ...``, ``len(x)``, item assignment) fails; most Hugging Face models fail
  with it (BERT: "'Proxy' object does not support item assignment") and HF dropped its own fx
  tracer in transformers 5.
- ``torch.export`` (non-strict) handles much more, but decomposes layers into ATen ops, turns
  Hugging Face cache objects into hard errors (GPT-2's ``DynamicCache`` output), and costs about a
  second per small model.
- An eager trace runs the model once for real under a `TorchFunctionMode`, recording every torch
  function and Tensor method with the real tensors' shapes, plus forward hooks for the module scope.
  It works on anything that runs, in the time of one forward pass, and sees exactly the torch-level
  ops (``linear``, ``conv2d``, ``view``, ``cat``, ``scaled_dot_product_attention``...) whose
  channel semantics the dependency rules describe.

The price of an eager trace is that it records only the path the inputs took. So the trace also
*taints* every tensor computed from the model inputs and refuses (`TraceError`) a model whose Python
branches on such a value (``bool(t)``, ``t.item()``, ``t.tolist()`` ...): that is exactly the
data-dependent control flow that fx and export also refuse. Branches on shapes are fine.
Known-benign value checks inside Hugging Face's masking/padding helpers are tolerated (they pick a
mask shortcut, never a layer width) and listed in `CapturedGraph.notes`.

Example:
    >>> import torch
    >>> from torch import nn
    >>> g = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU()), (torch.randn(2, 4),))
    >>> [n.target for n in g.nodes]
    ['linear', 'relu']
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import TraceError
from ..inputs import as_inputs, flat_tensors
from .node import OpNode, Value

log = logging.getLogger(__name__)

# Calls that only read metadata or are no-ops for the trace.
_IGNORED = {
    "size", "dim", "numel", "shape", "dtype", "device", "is_floating_point", "is_contiguous",
    "requires_grad", "requires_grad_", "data_ptr", "element_size", "stride", "storage_offset",
    "get_device", "is_complex", "ndim", "ndimension", "__len__", "__hash__", "__eq__hash", "is_cuda",
    "layout", "names", "nelement", "__format__", "__repr__", "__str__", "is_sparse", "is_quantized",
    "is_meta", "grad_fn", "_is_view", "untyped_storage", "is_nested", "__reduce_ex__", "__deepcopy__",
    "__iter__", "__array__", "retain_grad", "register_hook", "is_leaf", "output_nr", "_version",
    "__setstate__", "__dlpack__", "is_mps", "is_xpu", "is_inference", "has_names", "_base",
    "__contains__",
}
# Calls that turn a tensor's *value* into Python: branching on them is data-dependent control flow.
# In-place writes into part of a tensor: recorded so the rules can freeze what they touch.
_MUTATORS = {"__setitem__", "index_put_", "masked_scatter_", "index_copy_", "scatter_", "index_add_"}
_VALUE_READS = {"__bool__", "item", "tolist", "__int__", "__float__", "__index__", "__complex__"}
# Files whose value checks never change a layer's width (mask shortcuts, padding warnings).
_BENIGN_FILES = ("masking_utils", "modeling_attn_mask_utils", "modeling_utils", "sdpa_attention",
                 "import_utils", "generic.py")


def op_name(func: Any) -> str:
    """Normalized name of a torch function / Tensor method / property getter."""
    name = getattr(func, "__name__", None)
    if name == "__get__":
        owner = getattr(func, "__self__", None)
        name = getattr(owner, "__name__", "get")
    if name is None:
        name = str(func)
    return name


@dataclass
class CapturedGraph:
    """What `capture` returns: values, op nodes in execution order, and notes.

    Attributes:
        values: every tensor seen, indexed by `Value.vid`.
        nodes: the op nodes in execution order.
        inputs / outputs: the model's input and (flattened) output values.
        state: qualified parameter/buffer name -> its `Value` (first name of tied tensors).
        aliases: canonical state name -> every name that refers to the same tensor.
        notes: things worth reporting (tolerated value reads, unknown ops are added later).
    """

    values: list[Value] = field(default_factory=list)
    nodes: list[OpNode] = field(default_factory=list)
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    state: dict[str, Value] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    keep_tensors: list | None = None


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module, leaf_types: tuple[type, ...]):
        super().__init__()
        self.g = CapturedGraph()
        self.by_id: dict[int, Value] = {}
        self.keep: list[torch.Tensor] = []  # keeps ids unique during the trace
        self.tainted: set[int] = set()
        self.scope: list[str] = [""]
        self.leaf_depth = 0
        self.leaf_types = leaf_types
        self.state_names: dict[int, str] = {}
        for n, t in list(model.named_parameters(remove_duplicate=False)) + list(
            model.named_buffers(remove_duplicate=False)
        ):
            if t is None:
                continue
            canon = self.state_names.setdefault(id(t), n)
            self.g.aliases.setdefault(canon, [])
            if n not in self.g.aliases[canon]:
                self.g.aliases[canon].append(n)
        self.state_tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}

    # -- values ------------------------------------------------------------------------------
    def new_value(self, t: torch.Tensor, kind: str, name: str = "") -> Value:
        v = Value(vid=len(self.g.values), shape=tuple(int(s) for s in t.shape), kind=kind, name=name,
                  dtype=str(t.dtype).replace("torch.", ""))
        self.g.values.append(v)
        self.by_id[id(t)] = v
        self.keep.append(t)
        return v

    def value_of(self, t: torch.Tensor) -> Value:
        v = self.by_id.get(id(t))
        if v is not None and v.shape == tuple(t.shape):
            return v
        name = self.state_names.get(id(t))
        if name is not None:
            v = self.new_value(t, "state", name)
            self.g.state[name] = v
            return v
        return self.new_value(t, "external")

    def wrap(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return self.value_of(obj)
        if isinstance(obj, (tuple, list)):
            return type(obj)(self.wrap(o) for o in obj) if not hasattr(obj, "_fields") else tuple(
                self.wrap(o) for o in obj
            )
        if isinstance(obj, dict):
            return {k: self.wrap(o) for k, o in obj.items()}
        return obj

    def wrap_out(self, obj: Any, outs: list[Value]) -> Any:
        if isinstance(obj, torch.Tensor):
            v = self.new_value(obj, "op")
            outs.append(v)
            return v
        if isinstance(obj, (tuple, list)):
            return tuple(self.wrap_out(o, outs) for o in obj)
        return obj

    # -- recording -----------------------------------------------------------------------------
    def record(
        self, kind: str, target: str, args: tuple, kwargs: dict, out: Any, module: str = "", force: bool = False
    ) -> None:
        in_tensors = [t for t in _flat(args) + _flat(kwargs) if isinstance(t, torch.Tensor)]
        wargs, wkwargs = self.wrap(args), self.wrap(kwargs)
        outs: list[Value] = []
        struct = self.wrap_out(out, outs)
        if not outs and not force:
            return
        node = OpNode(index=len(self.g.nodes), kind=kind, target=target, args=wargs, kwargs=wkwargs,
                      outputs=outs, out_struct=struct, scope=self.scope[-1], module=module)
        self.g.nodes.append(node)
        if any(id(t) in self.tainted for t in in_tensors):
            for t in _flat(out):
                if isinstance(t, torch.Tensor):
                    self.tainted.add(id(t))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth:
            return out
        name = op_name(func)
        if name in _VALUE_READS:
            self.check_value_read(name, args)
            return out
        if name in _IGNORED:
            return out
        if name in _MUTATORS:
            self.record("function", name, tuple(args), dict(kwargs), out, force=True)
            return out
        if not any(isinstance(t, torch.Tensor) for t in _flat(out)):
            return out
        self.record("function", name, tuple(args), dict(kwargs), out)
        return out

    def check_value_read(self, name: str, args: tuple) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or id(args[0]) not in self.tainted:
            return
        frame = sys._getframe(2)
        while frame is not None and (
            "/torch/" in frame.f_code.co_filename or frame.f_code.co_filename.endswith("capture.py")
        ):
            frame = frame.f_back
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
        if "transformers" in where and any(b in where for b in _BENIGN_FILES):
            self.g.notes.append(f"tolerated value check ({name}) at {where}")
            return
        raise TraceError(
            f"data-dependent control flow: the model reads a tensor value computed from its inputs "
            f"({name}) at {where} in module {self.scope[-1] or '<root>'!r}; its graph depends on the "
            f"data, so channels cannot be pruned safely. Teach deepshrink this module as a custom "
            f"layer (deepshrink.graph.register_layer) or exclude it."
        )


def _flat(obj: Any) -> list:
    if isinstance(obj, (tuple, list)):
        out = []
        for o in obj:
            out.extend(_flat(o))
        return out
    if isinstance(obj, dict):
        return _flat(list(obj.values()))
    return [obj]


def capture(
    model: nn.Module, example_inputs: Any, *, leaf_types: tuple[type, ...] | None = None, keep_tensors: bool = False
) -> CapturedGraph:
    """Trace `model(*example_inputs)` into a `CapturedGraph`.

    Args:
        model: the model (run once, in eval mode, under no_grad; it is not changed).
        example_inputs: a tensor or tuple of tensors.
        leaf_types: module types recorded as one node (default: every type with a registered
            layer rule, see `deepshrink.graph.register_layer`).
        keep_tensors: keep every traced tensor in ``keep_tensors`` (indexed by value id), for
            activation statistics.

    Raises:
        TraceError: the forward fails under tracing or branches on input-dependent values.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> len(capture(nn.Linear(3, 2), torch.randn(1, 3)).nodes)
        1
    """
    from .dependency import layer_rule_types

    inputs = as_inputs(example_inputs)
    if leaf_types is None:
        leaf_types = layer_rule_types()
    rec = _Recorder(model, tuple(leaf_types))
    for t in inputs:
        if isinstance(t, torch.Tensor):
            rec.g.inputs.append(rec.new_value(t, "input"))
            rec.tainted.add(id(t))
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(mod, args, kwargs):
        if rec.leaf_depth:
            if isinstance(mod, rec.leaf_types):
                rec.leaf_depth += 1
            return
        rec.scope.append(names.get(mod, "?"))
        if isinstance(mod, rec.leaf_types):
            rec.leaf_depth += 1

    def post(mod, args, kwargs, out):
        if isinstance(mod, rec.leaf_types):
            rec.leaf_depth -= 1
            if rec.leaf_depth:
                return
            for t in list(mod.parameters()) + list(mod.buffers()):
                rec.value_of(t)
            rec.record("module", type(mod).__name__, tuple(args), dict(kwargs), out, module=names.get(mod, "?"))
        elif rec.leaf_depth:
            return
        rec.scope.pop()

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(m.register_forward_hook(post, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), rec:
            out = model(*inputs)
    except TraceError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the cause attached
        raise TraceError(f"{type(model).__name__} could not be traced: {type(exc).__name__}: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for t in flat_tensors(out):
        v = rec.by_id.get(id(t))
        if v is not None:
            rec.g.outputs.append(v)
    if keep_tensors:
        rec.g.keep_tensors = rec.keep
    if not rec.g.outputs:
        raise TraceError(f"{type(model).__name__}: no traced tensor reaches the model output")
    return rec.g
