"""Measurement: parameters, MACs, bytes, CPU latency, accuracy and fidelity.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.measure import profile, latency, compare_latency
    >>> profile(nn.Linear(4, 2), torch.zeros(1, 4)).params
    10
"""

from .fidelity import Fidelity, compare_outputs, top1_accuracy
from .latency import ComparisonResult, LatencyResult, compare_latency, latency, machine_info, pinned_threads
from .profile import LayerRow, Profile, count_params, fp32_bytes, layer_kind, profile
from .size import state_dict_bytes

__all__ = [
    "ComparisonResult",
    "Fidelity",
    "LatencyResult",
    "LayerRow",
    "Profile",
    "compare_latency",
    "compare_outputs",
    "count_params",
    "fp32_bytes",
    "latency",
    "layer_kind",
    "machine_info",
    "pinned_threads",
    "profile",
    "state_dict_bytes",
    "top1_accuracy",
]
