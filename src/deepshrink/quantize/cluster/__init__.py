"""Weight sharing: per-layer k-means (linear/forgy/density init, exact 1-D, Hessian-weighted),
uniform scalar quantization, and centroid fine-tuning with fixed assignments.

Example:
    >>> from torch import nn
    >>> from deepshrink.quantize.cluster import cluster, finalize, distinct_values
    >>> m = finalize(cluster(nn.Linear(32, 8), 4))
    >>> distinct_values(m)["weight"] <= 16
    True
"""

import sys
import types

from .kmeans import exact_kmeans, init_centroids, kmeans, lloyd, uniform
from .shared import (
    assignments,
    cluster,
    cluster_,
    codebooks,
    distinct_values,
    finalize,
    finetune_centroids,
)

__all__ = [
    "assignments",
    "cluster",
    "cluster_",
    "codebooks",
    "distinct_values",
    "exact_kmeans",
    "finalize",
    "finetune_centroids",
    "init_centroids",
    "kmeans",
    "lloyd",
    "uniform",
]


class _CallablePackage(types.ModuleType):
    """`deepshrink.quantize.cluster` is both this package and the `cluster` function (the contract
    name): once the package is imported it shadows the lazy attribute, so calling it forwards."""

    def __call__(self, *args, **kwargs):
        return cluster(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
