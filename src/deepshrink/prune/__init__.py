"""deepshrink.prune: unstructured (masks, magnitude, OBD/OBS, schedules) and structured
(channels, heads, layers through the dependency graph) pruning.

Names are resolved lazily so `import deepshrink` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # unstructured (deepshrink.prune.unstructured)
    "magnitude": "deepshrink.prune.unstructured",
    "magnitude_": "deepshrink.prune.unstructured",
    "finalize": "deepshrink.prune.unstructured",
    "sparsity_report": "deepshrink.prune.unstructured",
    "gradual_prune": "deepshrink.prune.unstructured",
    "iterative_prune": "deepshrink.prune.unstructured",
    "polynomial_sparsity": "deepshrink.prune.unstructured",
    "obd": "deepshrink.prune.unstructured",
    "obs": "deepshrink.prune.unstructured",
    "apoz": "deepshrink.prune.unstructured",
    "apoz_prune": "deepshrink.prune.unstructured",
    # sparse execution (deepshrink.prune.sparse)
    "sparsify": "deepshrink.prune.sparse",
    # structured (issue 4, deepshrink.prune.structured)
    "channels": "deepshrink.prune.structured.channels",
    "replay": "deepshrink.prune.structured.apply",
    "layers": "deepshrink.prune.structured.layers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepshrink.prune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
