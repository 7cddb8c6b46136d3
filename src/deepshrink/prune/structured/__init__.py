"""deepshrink.prune.structured: structural pruning through the dependency graph.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.prune.structured import channels
    >>> channels(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4), 0.5)[0].out_features
    4
"""

from __future__ import annotations

from .apply import replay
from .channels import channels

__all__ = ["channels", "replay"]
