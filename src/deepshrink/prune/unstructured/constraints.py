"""Keeping constraints on weights (pruning masks, shared cluster values) through any training loop.

A constrained parameter keeps its name and its place in ``state_dict`` (the constraint lives in
a *non-persistent* buffer beside it), so `load_state_dict`, the .dsz encoder and user code see
an ordinary model. Three mechanisms keep the constraint true in a user's own training loop, with
any optimizer (momentum, Adam moments, weight decay):

1. a gradient hook on the parameter rewrites its gradient (masked to zero, or summed per cluster);
2. a global optimizer step post-hook (`torch.optim.optimizer.register_optimizer_step_post_hook`)
   projects every constrained parameter right after each ``optimizer.step()``;
3. a forward pre-hook on the module projects the parameter again when it was changed in place
   since the last projection (e.g. by ``load_state_dict``), and re-arms 1–2 after ``deepcopy``.

The projection in 3 only runs when the parameter's version counter moved, so a model that calls
the same module twice before ``backward`` is not broken by an in-place update.

`release` removes hooks and buffers, leaving plain tensors that satisfy the constraint exactly.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune.unstructured.constraints import constrain, release
    >>> m = nn.Linear(4, 2)
    >>> constrain(m, "weight", "mask", torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.bool))
    >>> _ = m(torch.zeros(1, 4))
    >>> int((m.weight == 0).sum())
    4
    >>> release(m)
    >>> hasattr(m, "weight_mask")
    False
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from ...errors import InputError

KINDS = ("mask", "cluster")
_SUFFIX = {"mask": "_mask", "cluster": "_cidx"}

# parameter -> (weakref to module, parameter name, grad hook handle, version after last projection)
_REGISTRY: WeakIdKeyDictionary = WeakIdKeyDictionary()
_OPT_HOOK: Any = None


def buffer_name(name: str, kind: str) -> str:
    """The non-persistent buffer holding the constraint of parameter `name`."""
    return name + _SUFFIX[kind]


def constraints_of(module: nn.Module) -> dict[str, str]:
    """``{parameter name: kind}`` of the constraints on `module` (empty when none)."""
    return dict(getattr(module, "_ds_constraints", {}) or {})


def constrained_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules of `model` carrying at least one constraint."""
    return [(n, m) for n, m in model.named_modules() if getattr(m, "_ds_constraints", None)]


# ---------------------------------------------------------------------------------------------
# projections and gradient rewrites


@torch.no_grad()
def _project(module: nn.Module, name: str, kind: str) -> None:
    p = getattr(module, name)
    state = getattr(module, buffer_name(name, kind))
    if kind == "mask":
        p.masked_fill_(~state, 0.0)
    else:
        p.copy_(cluster_values(p, state))


def cluster_values(weight: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """`weight` with each cluster's members replaced by their mean; entries with ``idx < 0`` become 0."""
    flat_idx = idx.reshape(-1).long()
    live = flat_idx >= 0
    k = int(flat_idx.max()) + 1 if bool(live.any()) else 0
    w = weight.detach().reshape(-1)
    out = torch.zeros_like(w)
    if k == 0:
        return out.view_as(weight)
    li = flat_idx[live]
    sums = torch.zeros(k, dtype=w.dtype).index_add_(0, li, w[live])
    counts = torch.bincount(li, minlength=k).to(w.dtype).clamp_min(1)
    out[live] = (sums / counts)[li]
    return out.view_as(weight)


def _grad_hook(module_ref: weakref.ref, name: str, kind: str):
    def hook(grad: torch.Tensor) -> torch.Tensor | None:
        module = module_ref()
        if module is None or grad.is_sparse or name not in constraints_of(module):
            return None
        state = getattr(module, buffer_name(name, kind))
        if kind == "mask":
            return grad.masked_fill(~state, 0.0)
        # weight sharing: every member receives its cluster's summed gradient (Han et al.)
        flat_idx = state.reshape(-1).long()
        live = flat_idx >= 0
        g = grad.reshape(-1)
        out = torch.zeros_like(g)
        if bool(live.any()):
            li = flat_idx[live]
            sums = torch.zeros(int(li.max()) + 1, dtype=g.dtype).index_add_(0, li, g[live])
            out[live] = sums[li]
        return out.view_as(grad)

    return hook


def _arm(module: nn.Module, name: str, kind: str) -> None:
    """Register `module.<name>` in the registry with its gradient hook (idempotent)."""
    p = getattr(module, name)
    entry = _REGISTRY.get(p)
    if entry is not None and entry[0]() is module and entry[1] == name:
        return
    handle = p.register_hook(_grad_hook(weakref.ref(module), name, kind)) if p.requires_grad else None
    _project(module, name, kind)
    _REGISTRY[p] = [weakref.ref(module), name, handle, p._version, kind]


def _forward_pre_hook(module: nn.Module, args: Any) -> None:
    for name, kind in constraints_of(module).items():
        p = getattr(module, name)
        entry = _REGISTRY.get(p)
        if entry is None or entry[0]() is not module:
            _arm(module, name, kind)
            entry = _REGISTRY[p]
        if p._version != entry[3]:
            _project(module, name, kind)
            entry[3] = p._version


def _optimizer_post_hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if not _REGISTRY:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = _REGISTRY.get(p)
            if entry is None:
                continue
            module = entry[0]()
            if module is None or entry[1] not in constraints_of(module):
                continue
            _project(module, entry[1], entry[4])
            entry[3] = p._version


def _ensure_optimizer_hook() -> None:
    global _OPT_HOOK
    if _OPT_HOOK is None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        _OPT_HOOK = register_optimizer_step_post_hook(_optimizer_post_hook)


# ---------------------------------------------------------------------------------------------
# public helpers


def constrain(module: nn.Module, name: str, kind: str, state: torch.Tensor) -> None:
    """Constrain parameter `name` of `module`: ``kind="mask"`` (bool, True = kept) or ``"cluster"``
    (integer cluster index per weight, -1 = pruned zero). Projects the parameter at once."""
    if kind not in KINDS:
        raise InputError(f"unknown constraint kind {kind!r}; use one of {KINDS}")
    p = getattr(module, name, None)
    if not isinstance(p, torch.Tensor):
        raise InputError(f"{type(module).__name__} has no tensor {name!r} to constrain")
    if tuple(state.shape) != tuple(p.shape):
        raise InputError(f"constraint for {name!r} has shape {tuple(state.shape)}, expected {tuple(p.shape)}")
    cons = constraints_of(module)
    other = cons.get(name)
    if other is not None and other != kind:
        release(module, [name])
        cons = constraints_of(module)
    state = state.to(torch.bool) if kind == "mask" else state.to(torch.int16 if int(state.max()) < 32767 else torch.int32)
    bname = buffer_name(name, kind)
    if bname in module._buffers:
        module._buffers[bname] = state
    else:
        module.register_buffer(bname, state, persistent=False)
    cons[name] = kind
    module._ds_constraints = cons
    if getattr(module, "_ds_hook_id", None) not in module._forward_pre_hooks:
        module._ds_hook_id = module.register_forward_pre_hook(_forward_pre_hook).id
    _ensure_optimizer_hook()
    entry = _REGISTRY.pop(p, None)
    if entry is not None and entry[2] is not None:
        entry[2].remove()
    _arm(module, name, kind)


def project_all(model: nn.Module) -> None:
    """Re-apply every constraint of `model` now (normally automatic)."""
    for _, module in constrained_modules(model):
        for name, kind in constraints_of(module).items():
            _arm(module, name, kind)
            _project(module, name, kind)
            _REGISTRY[getattr(module, name)][3] = getattr(module, name)._version


def release(module: nn.Module, names: list[str] | None = None) -> None:
    """Remove constraints (all, or those on `names`) from one module, projecting one last time."""
    cons = constraints_of(module)
    for name in list(cons) if names is None else [n for n in names if n in cons]:
        kind = cons.pop(name)
        _project(module, name, kind)
        p = getattr(module, name)
        entry = _REGISTRY.pop(p, None)
        if entry is not None and entry[2] is not None:
            entry[2].remove()
        module._buffers.pop(buffer_name(name, kind), None)
    if cons:
        module._ds_constraints = cons
        return
    if hasattr(module, "_ds_constraints"):
        del module._ds_constraints
    hook_id = getattr(module, "_ds_hook_id", None)
    if hook_id is not None:
        module._forward_pre_hooks.pop(hook_id, None)
        del module._ds_hook_id


def release_all(model: nn.Module, kind: str | None = None) -> nn.Module:
    """Remove every constraint (or those of one `kind`) from `model`, in place; returns `model`."""
    for _, module in constrained_modules(model):
        names = [n for n, k in constraints_of(module).items() if kind is None or k == kind]
        release(module, names)
    return model
