"""deepshrink: make trained PyTorch models physically smaller and measurably faster, and prove it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> import deepshrink
    >>> deepshrink.profile(nn.Linear(4, 2), torch.zeros(1, 4)).params
    10
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("deepshrink")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

# Heavy pieces are imported on first use so that `import deepshrink` stays lean.
_LAZY = {
    "profile": ("deepshrink.measure", "profile"),
    "compress": ("deepshrink.api", "compress"),
    "Result": ("deepshrink.api", "Result"),
    "Recipe": ("deepshrink.recipe", "Recipe"),
    "Report": ("deepshrink.report", "Report"),
    "Task": ("deepshrink.tasks", "Task"),
    "load_task": ("deepshrink.tasks", "load_task"),
}
_SUBMODULES = (
    "distill", "encode", "errors", "export", "graph", "measure", "prune", "quantize", "recipe", "report", "tasks",
)

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        value = importlib.import_module(f"deepshrink.{name}")
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepshrink' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
