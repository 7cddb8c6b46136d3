"""Float-graph passes run before int8 conversion: BN folding, view->reshape, CLE, bias correction.

All passes work on a `torch.fx.GraphModule` (see `trace`) and are exact in floating point except
`bias_correct`, which deliberately changes biases to cancel the mean error that weight quantization
introduces (Nagel et al., "Data-Free Quantization", 2019).

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    >>> g = fold_batchnorm(trace(m))
    >>> any(isinstance(x, nn.BatchNorm2d) for x in g.modules())
    False
"""

from __future__ import annotations

import copy
import logging
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ...errors import TraceError

log = logging.getLogger(__name__)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WEIGHTED = (*_CONV, nn.Linear)
# ops between two weighted layers that commute with a positive per-channel scale
_HOMOGENEOUS_MODULES = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                        nn.Identity, nn.Dropout)
_HOMOGENEOUS_FUNCS = (torch.relu, F.relu, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d)


def trace(model: nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace` of a deep copy of `model` in eval mode, or `TraceError`."""
    if isinstance(model, fx.GraphModule):
        return copy.deepcopy(model).eval()
    try:
        return fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as exc:  # noqa: BLE001 - any tracing failure becomes one typed error
        raise TraceError(f"torch.fx cannot trace {type(model).__name__}: {exc}") from exc


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold every BatchNorm that directly follows a conv/linear (whose only user it is) into it.

    Exact up to float rounding; BatchNorms elsewhere stay. Changes and returns `gm`.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not bn.track_running_stats:
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or len(src.users) != 1:
            continue
        layer = _module(gm, src)
        if isinstance(layer, _CONV) and not isinstance(layer, nn.modules.conv._ConvTransposeNd):
            fused = fuse_conv_bn_eval(layer.eval(), bn.eval())
        elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
            fused = fuse_linear_bn_eval(layer.eval(), bn.eval())
        else:
            continue
        _set_submodule(gm, src.target, fused)
        node.replace_all_uses_with(src)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _set_submodule(gm: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, module)


def view_to_reshape(gm: fx.GraphModule) -> fx.GraphModule:
    """Turn `tensor.view(...)` calls into `reshape` (int8 conv outputs are channels-last, where view
    fails) and `nn.Flatten` modules into `torch.flatten` calls (torch.ao's x86 config keeps the
    function on quantized tensors but dequantizes around the module: two extra passes per call).
    """
    changed = False
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "view":
            node.target = "reshape"
            changed = True
        flatten = _module(gm, node)
        if isinstance(flatten, nn.Flatten):
            with gm.graph.inserting_after(node):
                call = gm.graph.call_function(torch.flatten, (node.args[0], flatten.start_dim, flatten.end_dim))
            node.replace_all_uses_with(call)
            gm.graph.erase_node(node)
            changed = True
    if changed:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return gm


_AFFINE_OPS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
               torch.add: "add", torch.sub: "sub", torch.mul: "mul", torch.div: "div"}


def _scalar_affine(node: fx.Node) -> tuple[float, float] | None:
    """`(a, b)` when `node` computes `a * x + b` of its first argument with a Python scalar."""
    op = _AFFINE_OPS.get(node.target) if node.op == "call_function" else None
    if op is None or len(node.args) != 2 or node.kwargs:
        return None
    x, c = node.args
    if not isinstance(x, fx.Node) or not isinstance(c, (int, float)) or isinstance(c, bool):
        return None
    c = float(c)
    if op == "add":
        return 1.0, c
    if op == "sub":
        return 1.0, -c
    if op == "mul":
        return c, 0.0
    return (1.0 / c, 0.0) if c != 0 else None


@torch.no_grad()
def fold_input_affine(gm: fx.GraphModule) -> int:
    """Fold scalar `x * a + b` chains (e.g. input normalization) into the conv/linear they feed,
    also through flatten/reshape/view ops in between.

    Exact: only into layers without zero padding effects (conv padding 0, or linear). Returns the
    number of folded ops; changes `gm` in place.
    """
    folded = 0
    for node in list(gm.graph.nodes):
        layer = _module(gm, node)
        if not isinstance(layer, _WEIGHTED) or not node.args:
            continue
        if isinstance(layer, _CONV) and (any(p != 0 for p in _tuple(layer.padding)) or layer.groups != 1):
            continue
        # a scalar affine commutes with reshapes: look through flatten/reshape/view (e.g. an MLP's
        # Normalize -> Flatten -> Linear) to the chain, and keep the reshapes
        consumer, cur = node, node.args[0]
        while isinstance(cur, fx.Node) and len(cur.users) == 1 and _is_reshape(gm, cur):
            consumer, cur = cur, cur.args[0]
        chain = []
        while isinstance(cur, fx.Node) and len(cur.users) == 1 and _scalar_affine(cur) is not None:
            chain.append(cur)
            cur = cur.args[0]
        if not chain:
            continue
        # the chain was collected walking upstream: compose a*x + b in forward order
        a, b = 1.0, 0.0
        for op in reversed(chain):
            sa, sb = _scalar_affine(op)
            a, b = sa * a, sa * b + sb
        w = layer.weight
        extra = b * w.reshape(w.shape[0], -1).sum(1)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0]))
        layer.bias.add_(extra)
        w.mul_(a)
        consumer.replace_input_with(chain[0], cur)
        for op in chain:
            gm.graph.erase_node(op)
        folded += len(chain)
    if folded:
        gm.recompile()
    return folded


def _tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)


def _is_homogeneous(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return isinstance(m, _HOMOGENEOUS_MODULES)
    if node.op == "call_function":
        return node.target in _HOMOGENEOUS_FUNCS
    return node.op == "call_method" and node.target in ("relu",)


def _is_reshape(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A node that only reshapes its first argument (flatten, reshape, view), whatever the dims."""
    if isinstance(_module(gm, node), nn.Flatten):
        return True
    if node.op == "call_function":
        return node.target in (torch.flatten, torch.reshape)
    return node.op == "call_method" and node.target in ("flatten", "reshape", "view")


def _is_flatten(gm: fx.GraphModule, node: fx.Node) -> bool:
    m = _module(gm, node)
    if isinstance(m, nn.Flatten):
        return m.start_dim == 1
    if node.op == "call_function" and node.target is torch.flatten:
        return (node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)) == 1
    return node.op == "call_method" and node.target == "flatten" and node.args[1:2] == (1,)


def equalizable_pairs(gm: fx.GraphModule) -> list[tuple[str, str, bool]]:
    """`(first, second, through_flatten)` weighted-layer pairs joined by scale-commuting ops only."""
    pairs = []
    for node in gm.graph.nodes:
        first = _module(gm, node)
        if not isinstance(first, _WEIGHTED) or getattr(first, "groups", 1) != 1:
            continue
        cur, flat = node, False
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            second = _module(gm, nxt)
            if isinstance(second, _WEIGHTED) and getattr(second, "groups", 1) == 1 and nxt.args[0] is cur:
                out_c = first.weight.shape[0]
                in_c = second.weight.shape[1]
                if (not flat and in_c == out_c) or (flat and in_c % out_c == 0):
                    pairs.append((node.target, nxt.target, flat))
                break
            if _is_homogeneous(gm, nxt):
                cur = nxt
                continue
            if _is_flatten(gm, nxt) and not flat:
                cur, flat = nxt, True
                continue
            break
    return pairs


@torch.no_grad()
def equalize(gm: fx.GraphModule, iterations: int = 4) -> int:
    """Cross-layer equalization (DFQ): rescale consecutive layers so per-channel weight ranges match.

    Exact in float arithmetic (positive scales commute with ReLU and pooling). Returns the number of
    equalized pairs; changes `gm` in place.
    """
    pairs = equalizable_pairs(gm)
    for _ in range(iterations):
        for a_name, b_name, flat in pairs:
            a, b = gm.get_submodule(a_name), gm.get_submodule(b_name)
            out_c = a.weight.shape[0]
            r1 = a.weight.reshape(out_c, -1).abs().amax(1)
            w2 = b.weight.transpose(0, 1).reshape(out_c, -1) if not flat else (
                b.weight.reshape(b.weight.shape[0], out_c, -1).transpose(0, 1).reshape(out_c, -1))
            r2 = w2.abs().amax(1)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, torch.sqrt(r1 / r2.clamp(min=1e-12)), torch.ones_like(r1)).clamp(1e-3, 1e3)
            shape_a = (-1,) + (1,) * (a.weight.dim() - 1)
            a.weight.div_(s.reshape(shape_a))
            if a.bias is not None:
                a.bias.div_(s)
            if flat:
                k = b.weight.shape[1] // out_c
                b.weight.mul_(s.repeat_interleave(k).reshape(1, -1))
            else:
                b.weight.mul_(s.reshape((1, -1) + (1,) * (b.weight.dim() - 2)))
    return len(pairs)


def fake_quant_weight(w: torch.Tensor, per_channel: bool = True, bits: int = 8) -> torch.Tensor:
    """Symmetric int quantize-dequantize of a weight (per output channel or per tensor)."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel:
        amax = w.reshape(w.shape[0], -1).abs().amax(1).reshape((-1,) + (1,) * (w.dim() - 1))
    else:
        amax = w.abs().amax()
    scale = (amax / qmax).clamp(min=1e-12)
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale


@torch.no_grad()
def bias_correct(gm: fx.GraphModule, inputs: list[tuple], layers: list[str], *, per_channel: bool = True) -> int:
    """Empirical bias correction: subtract the mean output shift that weight quantization causes.

    For each layer in `layers`, records its inputs on `inputs` (calibration batches), computes the
    mean over batch and space of `layer(x; W_q) - layer(x; W)` per output channel and folds it into
    the bias. Returns the number of corrected layers.
    """
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    handles = []
    for name in layers:
        mod = gm.get_submodule(name)
        handles.append(mod.register_forward_pre_hook(
            lambda m, args, _n=name: captured[_n].append(args[0].detach())))
    try:
        for batch in inputs:
            gm(*batch)
    finally:
        for h in handles:
            h.remove()
    done = 0
    for name in layers:
        mod = gm.get_submodule(name)
        if not captured[name]:
            continue
        dw = fake_quant_weight(mod.weight, per_channel) - mod.weight
        if isinstance(mod, nn.Linear):
            x = torch.cat([c.reshape(-1, c.shape[-1]) for c in captured[name]])
            shift = F.linear(x.mean(0, keepdim=True), dw)[0]
        else:
            outs = [mod._conv_forward(c, dw, None) for c in captured[name]]
            dims = [d for d in range(outs[0].dim()) if d != 1]
            shift = torch.cat([o.mean(dims, keepdim=False)[None] for o in outs]).mean(0)
        if mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0]))
        mod.bias.sub_(shift)
        done += 1
    return done


def weighted_layers(gm: nn.Module) -> list[str]:
    """Names of the conv/linear modules of `gm`, in module order."""
    return [n for n, m in gm.named_modules() if isinstance(m, _WEIGHTED) and n]

