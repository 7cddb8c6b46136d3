"""Sparsity regularizers that drive whole channels to zero during training, for
``deepshrink.distill.loop.fit(regularizer=...)``.

- `bn_l1` (network slimming, Liu et al. 2017): ``strength * sum |gamma|`` over BatchNorm scales;
  prune afterwards with ``importance="bn_scale"``.
- `group_lasso` (structured sparsity learning, Wen et al. 2016): ``strength * sum_g ||w_g||_2`` over
  every class of every prunable coupled group (all tensor slices of one channel together), so whole
  channels — not scattered weights — go to zero; prune afterwards with ``importance="l2"``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    >>> float(bn_l1(m, 1e-4)(m)) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ...errors import InputError


def bn_l1(model: nn.Module, strength: float = 1e-4) -> Callable[[nn.Module], torch.Tensor]:
    """L1 penalty on BatchNorm scales (network slimming)."""
    if strength < 0:
        raise InputError(f"strength must be >= 0, got {strength}")
    names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
    if not names:
        raise InputError("bn_l1: the model has no affine BatchNorm layer")

    def reg(m: nn.Module) -> torch.Tensor:
        return strength * sum(m.get_submodule(n).weight.abs().sum() for n in names)

    return reg


def group_lasso(model: nn.Module, example_inputs: Any, strength: float = 1e-4) -> Callable[[nn.Module], torch.Tensor]:
    """Group-lasso penalty over the classes of every prunable coupled group (SSL)."""
    from ...graph import DependencyGraph

    if strength < 0:
        raise InputError(f"strength must be >= 0, got {strength}")
    graph = DependencyGraph.build(model, example_inputs)
    params = dict(model.named_parameters())
    plan = []  # (param name, dim, class index tensor per slice)
    for g in graph.prunable_groups():
        keys = [k for k in g.members if k[0] in params]
        if not keys:
            continue
        labels = []
        for name, dim in keys:
            lab = torch.empty(params[name].shape[dim], dtype=torch.long)
            for c, idx in enumerate(g.members[(name, dim)]):
                lab[torch.as_tensor(idx, dtype=torch.long)] = c
            labels.append((name, dim, lab))
        plan.append((g.n_classes, labels))
    if not plan:
        raise InputError("group_lasso: the model has no prunable coupled group")

    def reg(m: nn.Module) -> torch.Tensor:
        ps = dict(m.named_parameters())
        total = 0.0
        for n_classes, labels in plan:
            sq = 0.0
            for name, dim, lab in labels:
                w = ps[name]
                per = w.pow(2).transpose(0, dim).reshape(w.shape[dim], -1).sum(1)
                sq = sq + torch.zeros(n_classes, dtype=w.dtype, device=w.device).index_add(0, lab.to(w.device), per)
            total = total + torch.sqrt(sq + 1e-12).sum()
        return strength * total

    return reg
