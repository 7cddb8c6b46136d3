"""Sizes in bytes of real artifacts, never counts of non-zeros dressed as bytes.

Example:
    >>> from torch import nn
    >>> from deepshrink.measure.size import state_dict_bytes
    >>> state_dict_bytes(nn.Linear(100, 100)) > 100 * 101 * 4
    True
"""

from __future__ import annotations

import io

import torch
from torch import nn


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: what a plain PyTorch checkpoint of it costs on disk."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
