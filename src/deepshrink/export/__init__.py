"""deepshrink.export: verified ONNX files, torch.export programs, runtime choice.

Example:
    >>> import deepshrink.export as ex
    >>> callable(ex.onnx) and callable(ex.program)
    True
"""

from __future__ import annotations

_LAZY = {
    "onnx": ("deepshrink.export.onnx_io", "onnx"),
    "onnx_bytes": ("deepshrink.export.onnx_io", "onnx_bytes"),
    "verify_onnx": ("deepshrink.export.onnx_io", "verify_onnx"),
    "program": ("deepshrink.export.torch_program", "program"),
    "compare_runtimes": ("deepshrink.export.runtime", "compare_runtimes"),
    "recommend_runtime": ("deepshrink.export.runtime", "recommend_runtime"),
    "RuntimeReport": ("deepshrink.export.runtime", "RuntimeReport"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deepshrink.export' has no attribute {name!r}")
