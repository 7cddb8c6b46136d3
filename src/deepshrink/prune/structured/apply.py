"""Physically removing indices from parameters, syncing module attributes, and replaying history.

The history is a JSON-serializable list of plain dicts, applied in order:

- ``{"op": "slice", "tensor": "layer1.0.conv1.weight", "dim": 0, "size": 64, "keep": [0, 2, ...]}``
- ``{"op": "setattr", "module": "layer1.0.conv1", "attr": "out_channels", "value": 32}``
- ``{"op": "swap", "module": "attn", "cls": "deepshrink...PrunableMultiheadAttention"}``

so `replay(original_architecture_model, history)` rebuilds the pruned architecture and a
`state_dict` of the pruned model loads onto it.

Example:
    >>> from torch import nn
    >>> m = nn.Linear(4, 3)
    >>> hist = [{"op": "slice", "tensor": "weight", "dim": 0, "size": 3, "keep": [0, 2]},
    ...         {"op": "slice", "tensor": "bias", "dim": 0, "size": 3, "keep": [0, 2]},
    ...         {"op": "setattr", "module": "", "attr": "out_features", "value": 2}]
    >>> replay(m, hist).weight.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import copy
import importlib
import logging
from typing import Any

import torch
from torch import nn

from ...errors import InputError
from ...graph.mha import HEAD_ATTRS  # noqa: F401 - re-exported: pruning rewrites these attributes

log = logging.getLogger(__name__)



def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mod, _, leaf = name.rpartition(".")
    return (model.get_submodule(mod) if mod else model), leaf


def slice_tensor(model: nn.Module, names: list[str], dim: int, keep: torch.Tensor) -> None:
    """Keep only `keep` along `dim` of the tensor called `names[0]` and re-point every alias."""
    owner, leaf = _owner(model, names[0])
    old = getattr(owner, leaf)
    new_data = old.detach().index_select(dim, keep.to(old.device)).clone()
    if isinstance(old, nn.Parameter):
        new: Any = nn.Parameter(new_data, requires_grad=old.requires_grad)
    else:
        new = new_data
    for n in names:
        o, lf = _owner(model, n)
        if lf in o._parameters:
            o._parameters[lf] = new
        elif lf in o._buffers:
            o._buffers[lf] = new
        else:
            setattr(o, lf, new)
        if isinstance(o, nn.RNNBase):
            o._init_flat_weights()


def sync_module(mod: nn.Module, before: dict[str, tuple]) -> dict[str, Any]:
    """Set a module's size attributes from its (sliced) parameter shapes; returns what changed.

    `before` maps parameter name -> shape before slicing (used for group counts).
    """
    changes: dict[str, Any] = {}

    def put(attr: str, value: Any) -> None:
        if getattr(mod, attr, None) != value:
            setattr(mod, attr, value)
            changes[attr] = value

    w = getattr(mod, "weight", None)
    if isinstance(mod, nn.MultiheadAttention):
        from ...graph.mha import sync_mha

        return sync_mha(mod)
    if isinstance(mod, nn.Linear):
        put("in_features", w.shape[1])
        put("out_features", w.shape[0])
    elif isinstance(mod, nn.modules.conv._ConvNd):
        if mod.transposed:
            put("in_channels", w.shape[0])
            put("out_channels", w.shape[1] * mod.groups)
        else:
            old_out = before.get("weight", w.shape)[0]
            groups = mod.groups if mod.groups == 1 else mod.groups * w.shape[0] // old_out
            put("groups", groups)
            put("out_channels", w.shape[0])
            put("in_channels", groups * w.shape[1])
    elif isinstance(mod, (nn.modules.batchnorm._NormBase,)):
        ref = w if w is not None else mod.running_mean
        if ref is not None:
            put("num_features", ref.shape[0])
    elif isinstance(mod, nn.LayerNorm) and w is not None:
        put("normalized_shape", tuple(w.shape))
    elif isinstance(mod, nn.GroupNorm) and w is not None:
        old_c = before.get("weight", w.shape)[0]
        put("num_groups", w.shape[0] // (old_c // mod.num_groups))
        put("num_channels", w.shape[0])
    elif isinstance(mod, nn.Embedding):
        put("embedding_dim", w.shape[1])
    elif isinstance(mod, nn.PReLU):
        put("num_parameters", w.shape[0])
    elif isinstance(mod, nn.RNNBase):
        put("hidden_size", mod.weight_hh_l0.shape[1])
        put("input_size", mod.weight_ih_l0.shape[1])
    elif type(mod).__name__ == "Conv1D" and w is not None:  # Hugging Face GPT-2 style (in, out) weight
        put("nf", w.shape[1])
        if hasattr(mod, "nx"):
            put("nx", w.shape[0])
    elif isinstance(mod, nn.RMSNorm) and w is not None:
        put("normalized_shape", tuple(w.shape))
    return changes


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"tuple": list(value)}
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(value["tuple"])
    return value


def apply_history_entry(model: nn.Module, entry: dict, aliases: dict[str, list[str]] | None = None) -> None:
    op = entry.get("op")
    if op == "slice":
        name, dim = entry["tensor"], int(entry["dim"])
        owner, leaf = _owner(model, name)
        t = getattr(owner, leaf, None)
        if not isinstance(t, torch.Tensor):
            raise InputError(f"replay: {name!r} is not a tensor of {type(model).__name__}")
        if t.shape[dim] != int(entry["size"]):
            raise InputError(
                f"replay: {name!r} has size {t.shape[dim]} along dim {dim}, history expects {entry['size']}"
            )
        names = (aliases or {}).get(name, [name])
        slice_tensor(model, names, dim, torch.as_tensor(entry["keep"], dtype=torch.long))
    elif op == "setattr":
        mod = model.get_submodule(entry["module"]) if entry["module"] else model
        setattr(mod, entry["attr"], _from_json(entry["value"]))
    elif op == "swap":
        mod_name, cls_path = entry["module"], entry["cls"]
        modname, _, clsname = cls_path.rpartition(".")
        if not modname.startswith("deepshrink."):
            raise InputError(f"replay: refusing to load class {cls_path!r} outside deepshrink")
        cls = getattr(importlib.import_module(modname), clsname)
        mod = model.get_submodule(mod_name)
        mod.__class__ = cls
        if hasattr(mod, "after_swap"):
            mod.after_swap()
    elif op == "skip":
        from .layers import _skip

        _skip(model, entry["module"], int(entry.get("tuple_len", 0)))
    else:
        raise InputError(f"replay: unknown history entry {entry!r}")


def replay(model: nn.Module, history: list[dict]) -> nn.Module:
    """Rebuild a pruned architecture: apply `history` to a copy of the original architecture.

    Args:
        model: a model of the original (unpruned) architecture; its weights do not matter.
        history: ``pruned.deepshrink_history`` (a JSON-serializable list of dicts).

    Returns:
        A new model whose parameter shapes and size attributes match the pruned model, so
        ``replay(arch, history).load_state_dict(pruned.state_dict())`` works.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> import deepshrink.prune as P
        >>> m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> small = P.channels(m, torch.randn(2, 8), 0.5)
        >>> _ = P.replay(m, small.deepshrink_history).load_state_dict(small.state_dict())
    """
    if not isinstance(history, (list, tuple)):
        raise InputError(f"history must be a list of dicts, got {type(history).__name__}")
    out = copy.deepcopy(model)
    aliases: dict[str, list[str]] = {}
    seen: dict[int, str] = {}
    for n, t in list(out.named_parameters(remove_duplicate=False)) + list(out.named_buffers(remove_duplicate=False)):
        canon = seen.setdefault(id(t), n)
        aliases.setdefault(canon, []).append(n)
    for n in list(aliases):
        for alias in aliases[n]:
            aliases.setdefault(alias, aliases[n])
    for entry in history:
        apply_history_entry(out, entry, aliases)
    out.deepshrink_history = list(history)
    return out
