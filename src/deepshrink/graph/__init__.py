"""deepshrink.graph: capture a model into a graph of ops and derive coupled channel groups.

One concept per file: `node` (values and op nodes), `capture` (the eager trace), `dependency`
(slot links and the rule registries), `rules`/`rules_layers` (built-in op and layer rules),
`group` (the unit of pruning), `graph` (building and querying).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.graph import DependencyGraph
    >>> g = DependencyGraph.build(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
    >>> len(g.prunable_groups())
    1
"""

from __future__ import annotations

from .capture import CapturedGraph, capture
from .dependency import RuleContext, register_layer, register_op
from .graph import DependencyGraph
from .group import Group
from .node import OpNode, Value

__all__ = [
    "CapturedGraph",
    "DependencyGraph",
    "Group",
    "OpNode",
    "RuleContext",
    "Value",
    "capture",
    "register_layer",
    "register_op",
]
