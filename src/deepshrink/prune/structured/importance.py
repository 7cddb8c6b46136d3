"""Importance criteria: one score per class (channel / head / unit) of a group; low scores go first.

Weight-based: ``l1``/``l2`` (filter norms over every tensor slice of the group, Li et al. 2017),
``bn_scale`` (|gamma| of the group's normalization layers, network slimming, Liu et al. 2017),
``fpgm`` (distance to the other filters: near the geometric median = replaceable, He et al. 2019).
Data-driven (need ``calib_data``): ``taylor`` (|sum w * dL/dw|, Molchanov et al. 2019), ``obd``
(sum 0.5 * w^2 * Fisher diagonal, LeCun et al. 1990 with the empirical Fisher as Hessian), ``apoz``
(1 - average percentage of zeros after the ReLU-family activation, Hu et al. 2016), and
``reconstruction`` (ThiNet / He et al. 2017, see `reconstruct`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.graph import DependencyGraph
    >>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> g = DependencyGraph.build(m, torch.randn(2, 4))
    >>> scores = class_scores(m, g.prunable_groups()[0], "l2")
    >>> scores.shape
    (3,)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ...errors import CalibrationError, InputError
from ...graph.group import Group
from ...inputs import first_tensor, iter_inputs

log = logging.getLogger(__name__)

WEIGHT_CRITERIA = ("l1", "l2", "bn_scale", "fpgm", "random")
DATA_CRITERIA = ("taylor", "obd", "apoz", "reconstruction")
CRITERIA = WEIGHT_CRITERIA + DATA_CRITERIA
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    mod, _, leaf = name.rpartition(".")
    return getattr(model.get_submodule(mod) if mod else model, leaf)


def _is_param(model: nn.Module, name: str) -> bool:
    return isinstance(_tensor(model, name), nn.Parameter)


def _per_index(t: torch.Tensor, dim: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    x = t.detach().float().transpose(0, dim).reshape(t.shape[dim], -1)
    return fn(x).cpu().numpy().astype(np.float64)


def _sum_classes(group: Group, key: tuple[str, int], per_index: np.ndarray) -> np.ndarray:
    return np.array([per_index[idx].sum() for idx in group.members[key]], dtype=np.float64)


def class_scores(model: nn.Module, group: Group, criterion: str, grads: dict[str, Any] | None = None,
                 apoz: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Scores of the classes of `group` under `criterion` (higher = more important)."""
    n = group.n_classes
    keys = [k for k in group.members if _is_param(model, k[0])]
    if criterion in ("l1", "l2"):
        s = np.zeros(n)
        for key in keys:
            t = _tensor(model, key[0])
            fn = (lambda x: x.abs().sum(1)) if criterion == "l1" else (lambda x: x.pow(2).sum(1))
            s += _sum_classes(group, key, _per_index(t, key[1], fn))
        return np.sqrt(s) if criterion == "l2" else s
    if criterion == "bn_scale":
        s = np.zeros(n)
        found = False
        for key in keys:
            mod = model.get_submodule(key[0].rpartition(".")[0])
            if isinstance(mod, _NORMS) and key[0].endswith("weight"):
                s += _sum_classes(group, key, _per_index(_tensor(model, key[0]), key[1], lambda x: x.abs().sum(1)))
                found = True
        return s if found else class_scores(model, group, "l2")
    if criterion == "fpgm":
        feats = []
        for key in keys:
            t = _tensor(model, key[0])
            rows = t.detach().float().transpose(0, key[1]).reshape(t.shape[key[1]], -1)
            feats.append(torch.stack([rows[torch.as_tensor(idx)].reshape(-1) for idx in group.members[key]])
                         if len({len(i) for i in group.members[key]}) == 1 else None)
        feats = [f for f in feats if f is not None]
        if not feats:
            return class_scores(model, group, "l2")
        x = torch.cat(feats, 1)
        return torch.cdist(x, x).sum(1).numpy().astype(np.float64)
    if criterion == "random":
        return np.random.default_rng(group.gid).random(n)
    if criterion in ("taylor", "obd"):
        if grads is None:
            raise InputError(f"importance {criterion!r} needs calib_data")
        s = np.zeros(n)
        for key in keys:
            t = _tensor(model, key[0]).detach().float()
            g = grads.get(key[0])
            if g is None:
                continue
            if criterion == "taylor":
                per = (t * g["grad"]).transpose(0, key[1]).reshape(t.shape[key[1]], -1).sum(1).abs()
            else:
                per = (0.5 * t.pow(2) * g["fisher"]).transpose(0, key[1]).reshape(t.shape[key[1]], -1).sum(1)
            s += _sum_classes(group, key, per.numpy().astype(np.float64))
        return s
    if criterion == "apoz":
        if apoz is None:
            raise InputError("importance 'apoz' needs calib_data")
        if group.gid in apoz:
            return 1.0 - apoz[group.gid]
        return class_scores(model, group, "l2")
    raise InputError(f"unknown importance {criterion!r}; choose from {', '.join(CRITERIA)}")


def gradients(model: nn.Module, calib_data: Any, n_inputs: int, *, limit: int = 64,
              loss: Callable | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Accumulated gradient and empirical Fisher diagonal of every parameter over `calib_data`.

    Batches with a trailing target use cross-entropy (or `loss`); unlabelled batches use the
    squared output norm, i.e. the sensitivity of the output energy to each weight.
    """
    params = dict(model.named_parameters())
    acc = {n: {"grad": torch.zeros_like(p, dtype=torch.float32), "fisher": torch.zeros_like(p, dtype=torch.float32)}
           for n, p in params.items()}
    was = model.training
    model.eval()
    count = 0
    for batch in iter_inputs(calib_data, None, limit=limit):
        inputs, target = batch[:n_inputs], batch[n_inputs] if len(batch) > n_inputs else None
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            out = model(*inputs)
            if target is not None:
                value = (loss or (lambda o, t: nn.functional.cross_entropy(first_tensor(o), t)))(out, target)
            else:
                value = first_tensor(out).float().pow(2).mean()
            value.backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n]["grad"] += p.grad.detach().float()
                acc[n]["fisher"] += p.grad.detach().float().pow(2)
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was)
    if count == 0:
        raise CalibrationError("calib_data yielded no batches")
    return acc


_ACTS = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "gelu", "silu", "hardswish"}


def apoz_scores(model: nn.Module, graph, groups: list[Group], calib_data: Any, n_inputs: int,
                limit: int = 16) -> dict[int, np.ndarray]:
    """Per group, the mean fraction of zero (<= 0) activations of each class after activations."""
    from ...graph.capture import capture

    act_nodes = [n for n in graph.captured.nodes if n.target in _ACTS]
    if not act_nodes:
        return {}
    label_to = {}
    for g in groups:
        for ci, lab in enumerate(g.labels):
            label_to[int(lab)] = (g.gid, ci)
    sums: dict[int, np.ndarray] = {g.gid: np.zeros(g.n_classes) for g in groups}
    counts: dict[int, np.ndarray] = {g.gid: np.zeros(g.n_classes) for g in groups}
    for batch in iter_inputs(calib_data, n_inputs, limit=limit):
        cg = capture(model, batch, keep_tensors=True)
        if len(cg.nodes) != len(graph.captured.nodes):
            raise CalibrationError("the model took a different path on calib_data than on example_inputs")
        for node in act_nodes:
            v_ref = node.outputs[0]
            t = cg.keep_tensors[cg.nodes[node.index].outputs[0].vid]
            if t is None:
                continue
            for d in range(v_ref.ndim):
                s = v_ref.offset(d)
                labs = graph.labels[s:s + v_ref.shape[d]]
                if t.shape[d] != v_ref.shape[d]:
                    continue
                zero = (t <= 0).float().transpose(0, d).reshape(t.shape[d], -1).mean(1).numpy()
                for i, lab in enumerate(labs):
                    hit = label_to.get(int(lab))
                    if hit is not None:
                        sums[hit[0]][hit[1]] += zero[i]
                        counts[hit[0]][hit[1]] += 1
    return {gid: np.where(counts[gid] > 0, sums[gid] / np.maximum(counts[gid], 1), 0.0)
            for gid in sums if counts[gid].any()}
