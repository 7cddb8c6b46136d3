"""Building the dependency graph: capture, run the rules, connect slots, form groups.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> g = DependencyGraph.build(m, (torch.randn(2, 4),))
    >>> [(grp.layers, grp.n_classes) for grp in g.prunable_groups()]
    [(['0', '2'], 8)]
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from ..inputs import as_inputs
from .capture import CapturedGraph, capture
from .dependency import RuleContext, layer_rule, op_rule
from .group import Group

log = logging.getLogger(__name__)


@dataclass
class DependencyGraph:
    """Coupled channel groups of a model, with what could not be handled.

    Attributes:
        captured: the `CapturedGraph` (values and op nodes).
        groups: every group that holds parameters (prunable or not).
        labels: class label of every slot.
        unknown_ops: names of ops without a rule (everything they touch is frozen).
        notes: capture notes and other remarks for the report.
    """

    captured: CapturedGraph
    groups: list[Group]
    labels: np.ndarray
    removed_label_mask: Any = None
    unknown_ops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, model: nn.Module, example_inputs: Any) -> DependencyGraph:
        """Capture `model` on `example_inputs` and derive its coupled groups."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        inputs = as_inputs(example_inputs)
        cg = capture(model, inputs)
        modules = dict(model.named_modules())
        ctx = RuleContext(cg.values, model, cg.state)
        unknown: dict[str, int] = defaultdict(int)
        for node in cg.nodes:
            ctx.node = node
            if node.kind == "module":
                rule = layer_rule(modules[node.module])
                rule(ctx, node, modules[node.module])
                continue
            rule = op_rule(node.target)
            if rule is None:
                unknown[node.target] += 1
                ctx.freeze_all(node, f"unknown op {node.target!r}")
                continue
            try:
                rule(ctx, node)
            except Exception as exc:  # noqa: BLE001 - a rule that cannot read this call freezes it
                log.debug("rule %s failed: %s", node.target, exc)
                ctx.freeze_all(node, f"op {node.target!r} with unexpected arguments ({exc})")
        ctx.node = None
        for v in cg.inputs:
            ctx.freeze(v, None, "model input")
        for v in cg.outputs:
            ctx.freeze(v, None, "model output")
        ctx.frozen |= ~ctx.touched
        a, b = ctx.edges()
        n = ctx.n_slots
        adj = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
        n_labels, labels = connected_components(adj, directed=False)
        frozen_label = np.zeros(n_labels, dtype=bool)
        np.logical_or.at(frozen_label, labels[ctx.frozen], True)
        inexact_label = np.zeros(n_labels, dtype=bool)
        np.logical_or.at(inexact_label, labels[ctx.inexact_mask], True)
        reason_label: dict[int, str] = {}
        for slots, reason in ctx.freeze_reasons:
            for lab in np.unique(labels[slots]):
                reason_label.setdefault(int(lab), reason)
        groups = _make_groups(cg, labels, frozen_label, inexact_label, reason_label, model)
        g = cls(captured=cg, groups=groups, labels=labels, unknown_ops=sorted(unknown), notes=list(cg.notes))
        for name in sorted(unknown):
            g.notes.append(f"unknown op {name!r} ({unknown[name]}x): the channels it touches are frozen")
        return g

    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def frozen_groups(self) -> list[Group]:
        return [g for g in self.groups if not g.prunable]

    def value_sizes_after(self, removed_labels: np.ndarray) -> dict[int, tuple[int, ...]]:
        """Shape of every traced value after removing the classes in `removed_labels`."""
        gone = np.zeros(self.labels.max() + 1, dtype=bool)
        gone[removed_labels] = True
        out = {}
        for v in self.captured.values:
            shape = []
            for d in range(v.ndim):
                s = v.offset(d)
                shape.append(int(v.shape[d] - gone[self.labels[s:s + v.shape[d]]].sum()))
            out[v.vid] = tuple(shape)
        return out


def _make_groups(cg: CapturedGraph, labels, frozen_label, inexact_label, reason_label, model) -> list[Group]:
    # (state name, dim) -> per-index labels; only parameters (buffers follow their channels)
    param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    pairs: list[tuple[str, int, np.ndarray]] = []
    for name, v in cg.state.items():
        for d in range(v.ndim):
            if v.shape[d] <= 1:
                continue
            s = v.offset(d)
            pairs.append((name, d, labels[s:s + v.shape[d]]))
    sig: dict[int, list[int]] = defaultdict(list)
    for pi, (_, _, labs) in enumerate(pairs):
        for lab in np.unique(labs):
            sig[int(lab)].append(pi)
    by_sig: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for lab, pis in sig.items():
        by_sig[tuple(pis)].append(lab)
    groups: list[Group] = []
    posmap = np.full(int(labels.max()) + 1 if len(labels) else 1, -1, dtype=np.int64)
    for pis, labs in by_sig.items():
        if not any(pairs[pi][0] in param_names for pi in pis):
            continue  # only buffers (e.g. position ids): nothing to learn, not a group
        first = pairs[pis[0]][2]
        uniq, first_pos = np.unique(first, return_index=True)
        order_of = dict(zip(uniq.tolist(), first_pos.tolist(), strict=True))
        labs = sorted(labs, key=lambda lab: order_of.get(lab, 0))
        lab_arr = np.array(labs, dtype=np.int64)
        posmap[lab_arr] = np.arange(len(labs))
        members: dict[tuple[str, int], list[np.ndarray]] = {}
        multi = False
        for pi in pis:
            name, d, plabs = pairs[pi]
            j = posmap[plabs]
            idx = np.nonzero(j >= 0)[0]
            jj = j[idx]
            srt = np.argsort(jj, kind="stable")
            counts = np.bincount(jj, minlength=len(labs))
            per = np.split(idx[srt], np.cumsum(counts)[:-1])
            members[(name, d)] = [p.astype(np.int64) for p in per]
            if name in param_names and counts.max(initial=0) > 1:
                multi = True
        posmap[lab_arr] = -1
        frozen = frozen_label[lab_arr]
        reason = ""
        if frozen.all():
            reason = reason_label.get(int(lab_arr[0]), "frozen")
        kind = "channels"
        names = [pairs[pi][0] for pi in pis]
        if any(n.startswith(("weight_hh", "weight_ih")) or ".weight_hh" in n for n in names):
            kind = "recurrent"
        elif any(_is_embedding(model, n) for n in names):
            kind = "hidden"
        elif multi:
            kind = "heads" if _is_attention_like(names) else "blocks"
        groups.append(Group(gid=len(groups), members=members, n_classes=len(labs), labels=lab_arr,
                            frozen=frozen, reason=reason, inexact=bool(inexact_label[lab_arr].any()), kind=kind))
    groups.sort(key=lambda g: min(_order(cg, n) for n, _ in g.members))
    for i, g in enumerate(groups):
        g.gid = i
    return groups


def _order(cg: CapturedGraph, name: str) -> int:
    v = cg.state.get(name)
    return v.vid if v is not None else 1 << 30


def _is_embedding(model: nn.Module, name: str) -> bool:
    mod = name.rsplit(".", 1)[0] if "." in name else ""
    try:
        return isinstance(model.get_submodule(mod), nn.Embedding)
    except AttributeError:
        return False


def _is_attention_like(names: list[str]) -> bool:
    keys = ("attn", "attention", "query", "q_proj", "qkv", "self")
    return any(k in n.lower() for n in names for k in keys)
