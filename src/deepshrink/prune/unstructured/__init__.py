"""Unstructured pruning: magnitude (global/class-blind or per layer), schedules, OBD/OBS, APoZ.

Masks are non-persistent buffers kept true by gradient, optimizer-step and forward hooks, so pruned
weights stay exactly zero through any training loop; `finalize` leaves plain tensors with zeros.

Example:
    >>> from torch import nn
    >>> from deepshrink.prune.unstructured import magnitude, finalize
    >>> m = finalize(magnitude(nn.Linear(10, 10), 0.9))
    >>> int((m.weight == 0).sum())
    90
"""

from .magnitude import finalize, magnitude, magnitude_, masks, prune_by_scores_, sparsity_report
from .saliency import apoz, apoz_prune, fisher_diagonal, obd, obd_, obs, obs_, obs_solve
from .schedule import gradual_prune, iterative_prune, polynomial_sparsity

__all__ = [
    "apoz",
    "apoz_prune",
    "finalize",
    "fisher_diagonal",
    "gradual_prune",
    "iterative_prune",
    "magnitude",
    "magnitude_",
    "masks",
    "obd",
    "obd_",
    "obs",
    "obs_",
    "obs_solve",
    "polynomial_sparsity",
    "prune_by_scores_",
    "sparsity_report",
]
