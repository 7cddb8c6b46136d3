"""`channels`: physically remove a share of the channels / neurons / heads of every coupled group.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune import channels
    >>> m = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 3))
    >>> small = channels(m, torch.randn(1, 3, 16, 16), 0.5)
    >>> small[0].out_channels, small[3].in_channels, m[0].out_channels
    (8, 8, 16)
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import InputError
from ...graph import DependencyGraph
from ...graph.group import Group
from ...inputs import as_inputs
from ...selectors import matches, override_for
from . import importance as imp
from .apply import HEAD_ATTRS, slice_tensor, sync_module
from .reconstruct import (
    allocate,
    collect_input_stats,
    consumer_keys,
    refit,
    sequential_reconstruct,
    thinet_scores,
)
from .verify import check_exact, check_runs

log = logging.getLogger(__name__)

KINDS = ("channels", "heads", "blocks", "hidden", "recurrent")
_BORING = ("model input", "model output", "frozen", "embedding rows", "inner factor", "integer index", "indexed by a tensor",
           "layers x directions")


def _keep_count(n: int, n_frozen: int, ratio: float, round_to: int, what: str) -> int:
    remove = int(round(ratio * n))
    keep = n - remove
    if round_to > 1:
        keep = int(round(keep / round_to)) * round_to
        keep = min(max(keep, round_to), n)
    keep = max(keep, n_frozen)
    if keep <= 0:
        raise InputError(f"ratio {ratio} would remove every channel of {what}; use a smaller ratio or exclude it")
    return keep


def _excluded(name: str, modules: dict[str, nn.Module], selectors: Sequence[str]) -> str | None:
    mod = name.rpartition(".")[0]
    parts = mod.split(".") if mod else [""]
    for i in range(len(parts), 0, -1):
        anc = ".".join(parts[:i]) if mod else ""
        m = modules.get(anc)
        for s in selectors:
            if matches(s, anc, m):
                return s
    return None


def _consumer_in(model: nn.Module, name: str, dim: int) -> bool | None:
    """True if (tensor, dim) is an input dim of a known layer, False if a known non-input dim,
    None for tensors of unknown layers."""
    mod_name, _, leaf = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    if isinstance(mod, nn.Linear):
        return leaf == "weight" and dim == 1
    if isinstance(mod, nn.MultiheadAttention):
        return None
    if isinstance(mod, nn.modules.conv._ConvNd):
        return leaf == "weight" and dim == (0 if mod.transposed else 1)
    if type(mod).__name__ == "Conv1D":
        return leaf == "weight" and dim == 0
    if isinstance(mod, nn.RNNBase):
        return leaf.startswith(("weight_ih", "weight_hh")) and dim == 1
    if isinstance(mod, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.Embedding, nn.PReLU)):
        return False
    return None


def channels(
    model: nn.Module,
    example_inputs: Any,
    ratio: float,
    *,
    importance: str = "l2",
    scope: str = "uniform",
    exclude: Sequence[str] = (),
    round_to: int = 1,
    calib_data: Any = None,
    overrides: dict | Sequence | None = None,
    kinds: Sequence[str] | None = None,
    refit_consumers: bool | None = None,
    verify: bool = True,
) -> nn.Module:
    """Return a copy of `model` with `ratio` of the classes of every prunable coupled group removed.

    A class is one output channel of a conv (with its BN entries and the next layers' input
    channels), a linear neuron, an attention head, an LSTM/GRU hidden unit or, for groups that
    reach an embedding, one hidden dimension of the residual stream. Groups that cannot be pruned
    safely are left unchanged and listed in ``result.deepshrink_report["skipped"]`` with the reason.

    Args:
        model: the model (left untouched).
        example_inputs: a tensor or tuple of tensors the model runs on.
        ratio: share of each group's classes to remove, in [0, 1).
        importance: "l1", "l2", "bn_scale", "fpgm", "random" (weights only) or "taylor", "obd",
            "apoz", "reconstruction" (need `calib_data`).
        scope: "uniform" (the same ratio in every group) or "global" (one threshold over
            scores normalized per group, so redundant layers lose more; with "reconstruction",
            each kind of group loses `ratio` of its classes in all, where the OBS cost is lowest).
        exclude: selectors (name, "re:regex", "type:Class") of modules whose tensors must not
            change; every group touching them is left alone. A selector matching nothing raises.
        round_to: keep a multiple of this many classes per group (hardware-friendly widths).
        calib_data: iterable of input batches for data-driven criteria and reconstruction.
        overrides: per-layer ratios ``{selector: ratio}`` (first match in a group's layers wins).
        kinds: restrict to group kinds: "channels", "heads", "blocks", "hidden", "recurrent".
        refit_consumers: least-squares refit of the next layers with bias compensation (default: on
            for "reconstruction", which fits layer by layer; see docs/structured.md).
        verify: check that the result runs with output shapes unchanged and that removing the
            chosen channels after zeroing their contributions is exact (`VerificationError`).

    Returns:
        The pruned model, with ``deepshrink_history`` (replayable, JSON-serializable) and
        ``deepshrink_report`` (pruned groups, skipped groups with reasons, notes).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> channels(m, torch.randn(2, 8), 0.25)[0].out_features
        24
    """
    inputs = as_inputs(example_inputs)
    _validate(ratio, importance, scope, round_to, kinds)
    if importance in imp.DATA_CRITERIA and calib_data is None:
        raise InputError(f"importance {importance!r} needs calib_data (an iterable of input batches)")
    new = copy.deepcopy(model)
    was_training = new.training
    new.eval()
    graph = DependencyGraph.build(new, inputs)
    modules = dict(new.named_modules())
    for s in exclude:
        if not any(matches(s, n, m) for n, m in modules.items()):
            raise InputError(f"exclude selector {s!r} matches no module of {type(model).__name__}")
    if overrides:
        pairs = overrides.items() if isinstance(overrides, dict) else overrides
        for s, r in pairs:
            if not any(matches(s, n, m) for n, m in modules.items()):
                raise InputError(f"overrides selector {s!r} matches no module of {type(model).__name__}")
            _validate(r, importance, scope, round_to, kinds)
    report: dict[str, Any] = {"pruned": [], "skipped": [], "notes": list(graph.notes)}

    # 1. which groups, at which ratio
    chosen: list[tuple[Group, float]] = []
    for g in graph.groups:
        if not g.prunable:
            if not any(b in g.reason for b in _BORING) and g.n_classes > 1:
                report["skipped"].append({"layer": ", ".join(g.layers), "reason": g.reason, "kind": g.kind})
            continue
        hit = next((s for name, _ in g.members if (s := _excluded(name, modules, exclude))), None)
        if hit:
            report["skipped"].append({"layer": ", ".join(g.layers), "reason": f"excluded by {hit!r}", "kind": g.kind})
            continue
        if kinds is not None and g.kind not in kinds:
            report["skipped"].append({"layer": ", ".join(g.layers), "reason": f"kind {g.kind!r} not selected",
                                      "kind": g.kind})
            continue
        r = ratio
        for lay in g.layers:
            o = override_for(lay, modules.get(lay), overrides, None)
            if o is not None:
                r = float(o)
                break
        chosen.append((g, r))

    # 2.-4. scores, selection, refit of the consumers
    seq = {}
    if importance == "reconstruction":
        if scope == "uniform":
            counts = {g: g.n_classes - _keep_count(g.n_classes, int(g.frozen.sum()), r, round_to, g.describe())
                      for g, r in chosen}
        else:  # one budget per kind of group, spent where the OBS reconstruction cost is lowest
            counts = allocate(new, [g for g, _ in chosen], calib_data, len(inputs), ratio, round_to)
            report["allocation"] = {", ".join(g.layers[:1]): int(k) for g, k in counts.items()}
        plan = [(g, counts.get(g, 0)) for g, _ in chosen]
        seq = sequential_reconstruct(new, model, plan, calib_data, len(inputs))
        chosen_rest = [(g, r) for g, r in chosen if not consumer_keys(new, g)]  # nothing to reconstruct
    else:
        chosen_rest = chosen
    scores, grams = _scores(new, graph, chosen_rest, importance, calib_data, len(inputs), report)
    removal = _select(chosen_rest, scores, scope, ratio, round_to)
    removal.update(seq)
    do_refit = refit_consumers if refit_consumers is not None else (importance == "reconstruction" and not seq)
    if do_refit:
        if grams is None:
            if calib_data is None:
                raise InputError("refit_consumers needs calib_data")
            mods = sorted({m for g, _ in chosen for m, _ in consumer_keys(new, g)})
            grams = collect_input_stats(new, mods, calib_data, len(inputs))
        removed_cols: dict[str, list[np.ndarray]] = defaultdict(list)
        for g, rm in removal.items():
            for mod_name, wname in consumer_keys(new, g):
                removed_cols[mod_name].append(g.removed_indices(rm)[(wname, 1)])
        refit(new, {k: np.concatenate(v) for k, v in removed_cols.items()}, grams)
    masked = _masked_copy(new, removal) if verify else None

    # 5. slice tensors, sync attributes, patch head counts
    history = _apply(new, graph, removal)
    for g, rm in removal.items():
        report["pruned"].append({"group": g.gid, "kind": g.kind, "layers": g.layers, "classes": g.n_classes,
                                 "removed": len(rm)})
    new.train(was_training)
    new.deepshrink_history = history
    new.deepshrink_report = report

    # 6. verify
    if verify:
        new.eval()
        model_training = model.training
        try:
            model.eval()  # the input model only runs (eval, no_grad) for reference shapes
            check_runs(model, new, inputs)
        finally:
            model.train(model_training)
        exact_ok = masked is not None and all(not g.inexact for g in removal) and all(
            _checkable(new, g) for g in removal)
        if exact_ok:
            report["exact_check"] = check_exact(masked, new, inputs)
        else:
            report["exact_check"] = None
            report["notes"].append("exactness check skipped: a pruned group passes through a normalization "
                                   "or reduction over channels (or a layer of unknown type)")
        new.train(was_training)
    return new


def _validate(ratio, importance, scope, round_to, kinds) -> None:
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0.0 <= float(ratio) < 1.0:
        raise InputError(f"ratio must be a number in [0, 1), got {ratio!r} (1.0 would empty every layer)")
    if importance not in imp.CRITERIA:
        raise InputError(f"unknown importance {importance!r}; choose from {', '.join(imp.CRITERIA)}")
    if scope not in ("uniform", "global"):
        raise InputError(f"scope must be 'uniform' or 'global', got {scope!r}")
    if not isinstance(round_to, int) or round_to < 1:
        raise InputError(f"round_to must be a positive integer, got {round_to!r}")
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise InputError(f"unknown group kind(s) {bad}; choose from {', '.join(KINDS)}")


def _checkable(model: nn.Module, g: Group) -> bool:
    kinds = [_consumer_in(model, name, dim) for name, dim in g.members]
    return None not in kinds and any(kinds)


def _scores(model, graph, chosen, importance, calib_data, n_inputs, report):
    grads = apoz = grams = None
    if importance in ("taylor", "obd"):
        grads = imp.gradients(model, calib_data, n_inputs)
    elif importance == "apoz":
        apoz = imp.apoz_scores(model, graph, [g for g, _ in chosen], calib_data, n_inputs)
    elif importance == "reconstruction":
        mods = sorted({m for g, _ in chosen for m, _ in consumer_keys(model, g)})
        grams = collect_input_stats(model, mods, calib_data, n_inputs)
    scores: dict[int, np.ndarray] = {}
    for g, _ in chosen:
        if importance == "reconstruction":
            s = thinet_scores(model, g, {k: v["A"] for k, v in grams.items()})
            if s is None:
                report["notes"].append(f"{g.describe()}: no Linear/Conv consumer to reconstruct; used l2")
                s = imp.class_scores(model, g, "l2")
        else:
            s = imp.class_scores(model, g, importance, grads=grads, apoz=apoz)
        scores[g.gid] = np.asarray(s, dtype=np.float64)
    return scores, grams


def _select(chosen, scores, scope, ratio, round_to) -> dict[Group, np.ndarray]:
    removal: dict[Group, np.ndarray] = {}
    if scope == "uniform":
        for g, r in chosen:
            keep = _keep_count(g.n_classes, int(g.frozen.sum()), r, round_to, g.describe())
            s = np.where(g.frozen, np.inf, scores[g.gid])
            rm = np.sort(np.argsort(s, kind="stable")[: g.n_classes - keep])
            if len(rm):
                g.check(rm)
                removal[g] = rm
        return removal
    pool = []
    for g, _ in chosen:
        s = scores[g.gid]
        free = ~g.frozen
        mean = float(np.abs(s[free]).mean()) if free.any() else 1.0
        for c in np.nonzero(free)[0]:
            pool.append((s[c] / (mean + 1e-12), g.gid, int(c)))
    pool.sort()
    total = sum(g.n_classes for g, _ in chosen)
    target = int(round(ratio * total))
    by_gid = {g.gid: g for g, _ in chosen}
    left = {g.gid: g.n_classes for g, _ in chosen}
    picked: dict[int, list[int]] = defaultdict(list)
    n = 0
    for _, gid, c in pool:
        if n >= target:
            break
        if left[gid] <= max(1, round_to):
            continue
        picked[gid].append(c)
        left[gid] -= 1
        n += 1
    for gid, cs in picked.items():
        g = by_gid[gid]
        keep = g.n_classes - len(cs)
        if round_to > 1:
            keep = min(max(int(round(keep / round_to)) * round_to, round_to), g.n_classes)
        s = np.where(g.frozen, np.inf, scores[gid])
        rm = np.sort(np.argsort(s, kind="stable")[: g.n_classes - keep])
        if len(rm):
            g.check(rm)
            removal[g] = rm
    return removal


def _masked_copy(model: nn.Module, removal: dict[Group, np.ndarray]) -> nn.Module:
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for g, rm in removal.items():
            for (name, dim), idx in g.removed_indices(rm).items():
                if _consumer_in(model, name, dim):
                    mod, _, leaf = name.rpartition(".")
                    t = getattr(masked.get_submodule(mod) if mod else masked, leaf)
                    t.index_fill_(dim, torch.as_tensor(idx, dtype=torch.long), 0.0)
    return masked


def _apply(model: nn.Module, graph: DependencyGraph, removal: dict[Group, np.ndarray]) -> list[dict]:
    gone: dict[tuple[str, int], list[np.ndarray]] = defaultdict(list)
    removed_labels = []
    for g, rm in removal.items():
        removed_labels.append(g.labels[rm])
        for key, idx in g.removed_indices(rm).items():
            gone[key].append(idx)
    history: list[dict] = []
    aliases = graph.captured.aliases
    before: dict[str, dict[str, tuple]] = defaultdict(dict)
    for (name, dim), parts in sorted(gone.items(), key=lambda kv: (graph.captured.state[kv[0][0]].vid, kv[0][1])):
        mod_name, _, leaf = name.rpartition(".")
        t = getattr(model.get_submodule(mod_name) if mod_name else model, leaf)
        for alias in aliases.get(name, [name]):
            a_mod, _, a_leaf = alias.rpartition(".")
            before[a_mod].setdefault(a_leaf, tuple(t.shape))
        size = t.shape[dim]
        mask = np.ones(size, dtype=bool)
        mask[np.concatenate(parts)] = False
        keep = np.nonzero(mask)[0]
        slice_tensor(model, aliases.get(name, [name]), dim, torch.as_tensor(keep, dtype=torch.long))
        history.append({"op": "slice", "tensor": name, "dim": int(dim), "size": int(size),
                        "keep": [int(k) for k in keep]})
    for mod_name in list(before):  # a pruned out_proj also re-syncs its attention module
        parent = mod_name.rpartition(".")[0]
        if mod_name.endswith("out_proj") and isinstance(model.get_submodule(parent), nn.MultiheadAttention):
            before.setdefault(parent, {})
    for mod_name, shapes in sorted(before.items(), key=lambda kv: -kv[0].count(".")):
        mod = model.get_submodule(mod_name) if mod_name else model
        for attr, value in sync_module(mod, shapes).items():
            if attr == "__class__":
                history.append({"op": "swap", "module": mod_name, "cls": value})
                continue
            history.append({"op": "setattr", "module": mod_name, "attr": attr,
                            "value": {"tuple": list(value)} if isinstance(value, tuple) else value})
    if removed_labels:
        history.extend(_patch_head_attrs(model, graph, np.concatenate(removed_labels)))
    return history


def _patch_head_attrs(model: nn.Module, graph: DependencyGraph, removed_labels: np.ndarray) -> list[dict]:
    """Update head counts / widths stored as attributes of the modules whose reshapes changed."""
    sizes = graph.value_sizes_after(removed_labels)
    per_scope: dict[str, dict[int, int]] = defaultdict(dict)
    for node in graph.captured.nodes:
        if node.target not in ("view", "reshape", "split", "split_with_sizes", "unflatten", "expand", "chunk"):
            continue
        vals = list(node.outputs) + ([node.args[0]] if node.args and hasattr(node.args[0], "vid") else [])
        for v in vals:
            for old, new in zip(v.shape, sizes[v.vid], strict=False):
                if old != new:
                    per_scope[node.scope][old] = new
    history = []
    for scope, mapping in per_scope.items():
        parts = scope.split(".") if scope else [""]
        for i in range(len(parts), 0, -1):  # the scope and its ancestors
            name = ".".join(parts[:i]) if scope else ""
            mod = model.get_submodule(name) if name else model
            for attr in HEAD_ATTRS:
                val = getattr(mod, attr, None)
                if isinstance(val, int) and not isinstance(val, bool) and val in mapping:
                    setattr(mod, attr, mapping[val])
                    history.append({"op": "setattr", "module": name, "attr": attr, "value": mapping[val]})
            if not scope:
                break
    return history
