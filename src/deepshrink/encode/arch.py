"""Architecture as data: describe a model made of known layers as JSON, and rebuild it without code.

Only classes in the layer registry can be described or rebuilt: the standard `torch.nn` layers
listed in `_STANDARD` and the bundled `deepshrink.tasks.models.Normalize`. A file can never make
deepshrink import an arbitrary class: the `type` strings of the header are looked up in this
registry, nothing else. Constructor arguments are read off the module attributes, and shapes that
pruning may have changed (in/out features, channels, embedding sizes, RNN sizes) are read off the
weights. Rebuilding happens on the ``meta`` device, so a hostile header cannot make it allocate.

A node is ``{"type": "nn.Linear", "args": {...}, "children": {"name": node, ...}}``
(``args``/``children`` omitted when empty).

Register another layer class (e.g. a custom quantized layer) with `register_layer`::

    register_layer(MyBinaryLinear, "deepshrink.BinaryLinear", args=("in_features", "out_features"))

Example:
    >>> from torch import nn
    >>> node = describe(nn.Sequential(nn.Linear(4, 2), nn.ReLU()))
    >>> node["children"]["0"]
    {'type': 'nn.Linear', 'args': {'in_features': 4, 'out_features': 2, 'bias': True}}
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import FormatError

MAX_DEPTH = 64
MAX_NODES = 1 << 17


class NotDescribable(Exception):
    """Internal: the model cannot be described as data (the message says why)."""


@dataclass(frozen=True)
class LayerSpec:
    cls: type
    name: str
    args: tuple[str, ...]
    fixup: Callable[[nn.Module, dict], None] | None = None
    container: bool = False


_BY_CLASS: dict[type, LayerSpec] = {}
_BY_NAME: dict[str, LayerSpec] = {}


def register_layer(
    cls: type,
    name: str | None = None,
    *,
    args: tuple[str, ...] | None = None,
    fixup: Callable[[nn.Module, dict], None] | None = None,
) -> None:
    """Allow `cls` in rebuildable architectures, stored under `name` (default ``"nn.<Class>"``).

    Args:
        args: constructor keyword arguments, read from same-named module attributes (a tensor or
            None attribute becomes a bool: "has a bias"). Default: the constructor's parameters.
        fixup: ``fixup(module, kwargs)`` corrects kwargs from the weights (e.g. pruned shapes).
    """
    name = name or f"nn.{cls.__name__}"
    if args is None:
        args = tuple(
            p.name
            for p in inspect.signature(cls.__init__).parameters.values()
            if p.name not in ("self", "device", "dtype")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        )
    spec = LayerSpec(cls, name, tuple(args), fixup)
    _BY_CLASS[cls] = spec
    _BY_NAME[name] = spec


def _shape(m: nn.Module, attr: str):
    t = getattr(m, attr, None)
    return tuple(t.shape) if isinstance(t, torch.Tensor) else None


def _fix_linear(m, kw):
    kw["out_features"], kw["in_features"] = _shape(m, "weight")


def _fix_conv(m, kw):
    w = _shape(m, "weight")
    kw["out_channels"], kw["in_channels"] = w[0], w[1] * m.groups


def _fix_convt(m, kw):
    w = _shape(m, "weight")
    kw["in_channels"], kw["out_channels"] = w[0], w[1] * m.groups


def _fix_norm(m, kw):
    s = _shape(m, "weight") or _shape(m, "running_mean")
    if s is not None:
        kw["num_features"] = s[0]


def _fix_layernorm(m, kw):
    if _shape(m, "weight") is not None:
        kw["normalized_shape"] = list(_shape(m, "weight"))


def _fix_groupnorm(m, kw):
    if _shape(m, "weight") is not None:
        kw["num_channels"] = _shape(m, "weight")[0]


def _fix_embedding(m, kw):
    kw["num_embeddings"], kw["embedding_dim"] = _shape(m, "weight")


def _fix_rnn(m, kw):
    kw["input_size"] = _shape(m, "weight_ih_l0")[1]
    if getattr(m, "proj_size", 0):
        kw["proj_size"], kw["hidden_size"] = _shape(m, "weight_hr_l0")
    else:
        kw["hidden_size"] = _shape(m, "weight_hh_l0")[1]


def _fix_prelu(m, kw):
    kw["num_parameters"] = m.weight.numel()


_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
         "padding_mode")
_CONVT = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding", "groups", "bias",
          "dilation", "padding_mode")
_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
_RNN = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional")

for _c in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
    _spec = LayerSpec(_c, f"nn.{_c.__name__}", (), None, container=True)
    _BY_CLASS[_c], _BY_NAME[_spec.name] = _spec, _spec
register_layer(nn.Linear, args=("in_features", "out_features", "bias"), fixup=_fix_linear)
for _c in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_layer(_c, args=_CONV, fixup=_fix_conv)
for _c in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_layer(_c, args=_CONVT, fixup=_fix_convt)
for _c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
    register_layer(_c, args=_BN, fixup=_fix_norm)
register_layer(nn.LayerNorm, args=("normalized_shape", "eps", "elementwise_affine", "bias"), fixup=_fix_layernorm)
register_layer(nn.GroupNorm, args=("num_groups", "num_channels", "eps", "affine"), fixup=_fix_groupnorm)
register_layer(
    nn.Embedding,
    args=("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"),
    fixup=_fix_embedding,
)
register_layer(nn.LSTM, args=(*_RNN, "proj_size"), fixup=_fix_rnn)
register_layer(nn.GRU, args=_RNN, fixup=_fix_rnn)
register_layer(nn.RNN, args=(*_RNN, "nonlinearity"), fixup=_fix_rnn)
register_layer(nn.PReLU, args=("num_parameters",), fixup=_fix_prelu)
register_layer(
    nn.MultiheadAttention,
    args=("embed_dim", "num_heads", "dropout", "bias", "add_bias_kv", "add_zero_attn", "kdim", "vdim",
          "batch_first"),
    fixup=lambda m, kw: kw.update(bias=m.in_proj_bias is not None, add_bias_kv=m.bias_k is not None),
)
for _c in (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softmax, nn.LogSoftmax,
    nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d,
    nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.Upsample, nn.PixelShuffle,
):
    register_layer(_c)


def _register_bundled() -> None:
    from ..tasks.models import Normalize

    register_layer(Normalize, "deepshrink.Normalize", args=("mean", "std"))


_register_bundled()


def _jsonable(v, where: str):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise NotDescribable(f"{where} is not a finite number")
        return v
    if isinstance(v, (tuple, list, torch.Size)):
        return [_jsonable(x, where) for x in v]
    raise NotDescribable(f"{where} has a value of type {type(v).__name__}")


def _deepshrink_hook(hook) -> bool:
    """Hooks installed by deepshrink's own training-time constraints (pruning masks, shared
    cluster values) only re-project weights that are stored already projected; they are not part of
    the architecture."""
    mod = getattr(hook, "__module__", None) or getattr(type(hook), "__module__", "")
    return isinstance(mod, str) and mod.startswith(("deepshrink.prune.", "deepshrink.quantize."))


def describe(module: nn.Module, path: str = "") -> dict:
    """The JSON node of `module`; raises `NotDescribable` naming the first unsupported piece."""
    where = path or "(root)"
    spec = _BY_CLASS.get(type(module))
    if spec is None:
        raise NotDescribable(f"{where} is a {type(module).__module__}.{type(module).__qualname__}, not a registered layer")
    foreign = [h for h in (*module._forward_hooks.values(), *module._forward_pre_hooks.values())
               if not _deepshrink_hook(h)]
    if foreign:
        raise NotDescribable(f"{where} has forward hooks")
    node: dict = {"type": spec.name}
    if spec.container:
        children = {n: describe(c, f"{path}.{n}" if path else n) for n, c in module.named_children()}
        if children:
            node["children"] = children
        return node
    if next(module.children(), None) is not None and spec.cls is not nn.MultiheadAttention:
        raise NotDescribable(f"{where} ({spec.name}) has unexpected submodules")
    kw: dict = {}
    for a in spec.args:
        if not hasattr(module, a):
            continue
        v = getattr(module, a)
        kw[a] = (v is not None) if isinstance(v, torch.Tensor) or (v is None and a == "bias") else v
    if spec.fixup is not None:
        try:
            spec.fixup(module, kw)
        except (TypeError, AttributeError, IndexError, ValueError) as exc:
            raise NotDescribable(f"{where} ({spec.name}): cannot read its shape ({exc})") from exc
    args = {k: _jsonable(v, f"{where}.{k}") for k, v in kw.items()}
    if args:
        node["args"] = args
    return node


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _count_nodes(node: Any, depth: int = 0) -> int:
    if depth > MAX_DEPTH:
        raise FormatError(f"architecture nested deeper than {MAX_DEPTH} levels")
    children = node.get("children", {}) if isinstance(node, dict) else {}
    if not isinstance(children, dict):
        return 1
    return 1 + sum(_count_nodes(c, depth + 1) for c in children.values())


def build(node: dict, depth: int = 0, path: str = "") -> nn.Module:
    """Rebuild a module from its JSON node on the meta device; `FormatError` on anything unexpected."""
    if depth == 0 and _count_nodes(node) > MAX_NODES:
        raise FormatError(f"architecture has more than {MAX_NODES} modules")
    where = path or "(root)"
    if depth > MAX_DEPTH:
        raise FormatError(f"architecture nested deeper than {MAX_DEPTH} levels")
    if not isinstance(node, dict):
        raise FormatError(f"architecture node {where} is not an object")
    if isinstance(node.get("type"), str) and node["type"] not in _BY_NAME:
        from .encodings import load_plugins

        load_plugins()  # bundled layers registered outside encode (PQLinear, low-bit layers)
    spec = _BY_NAME.get(node.get("type")) if isinstance(node.get("type"), str) else None
    if spec is None:
        raise FormatError(f"architecture node {where} has unknown layer type {node.get('type')!r}")
    args = node.get("args", {})
    children = node.get("children", {})
    if not isinstance(args, dict) or not isinstance(children, dict):
        raise FormatError(f"architecture node {where}: 'args' and 'children' must be objects")
    if set(node) - {"type", "args", "children"}:
        raise FormatError(f"architecture node {where} has unknown fields {sorted(set(node) - {'type', 'args', 'children'})}")
    if spec.container:
        if args:
            raise FormatError(f"container {where} takes no args")
        built = {str(k): build(v, depth + 1, f"{path}.{k}" if path else str(k)) for k, v in children.items()}
        try:
            if spec.cls is nn.Sequential:
                from collections import OrderedDict

                return nn.Sequential(OrderedDict(built))
            if spec.cls is nn.ModuleList:
                if list(built) != [str(i) for i in range(len(built))]:
                    raise FormatError(f"ModuleList {where} children must be named 0..n-1")
                return nn.ModuleList(list(built.values()))
            return nn.ModuleDict(built)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"cannot rebuild {where}: {exc}") from exc
    if children:
        raise FormatError(f"layer {where} ({spec.name}) cannot have children")
    unknown = set(args) - set(spec.args)
    if unknown:
        raise FormatError(f"layer {where} ({spec.name}) has unknown args {sorted(unknown)}")
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "zero-element tensors" from odd but legal sizes
            return spec.cls(**{k: _tuples(v) for k, v in args.items()})
    except Exception as exc:  # noqa: BLE001 - any constructor failure means a bad header
        raise FormatError(f"cannot rebuild layer {where} ({spec.name}) from {args}: {exc}") from exc


def rebuildable(model: nn.Module) -> tuple[dict | None, str | None]:
    """(architecture node, None) when `model` can be rebuilt from data, else (None, reason)."""
    try:
        node = describe(model)
        rebuilt = build(node)
    except NotDescribable as exc:
        return None, str(exc)
    except FormatError as exc:
        return None, f"its description does not rebuild: {exc}"
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        return None, f"the rebuilt module's tensors differ from the model's: {diff}"
    return node, None
