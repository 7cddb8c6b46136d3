"""deepshrink.quantize.int8: post-training int8 on real kernels (torch.ao x86 or onnxruntime).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from deepshrink.quantize.int8 import int8
    >>> q = int8(nn.Sequential(nn.Linear(8, 8)), torch.randn(2, 8), fallback_slow=False)
    >>> q.quant_info.mode
    'dynamic'
"""

from .api import BACKENDS, QuantInfo, int8
from .auto import int8_auto
from .graph import equalize, fold_batchnorm, trace

__all__ = ["BACKENDS", "QuantInfo", "equalize", "fold_batchnorm", "int8", "int8_auto", "trace"]


def _make_callable() -> None:
    """Let `deepshrink.quantize.int8(...)` work whether it names this package or the function."""
    import sys
    import types

    class _CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return int8(*args, **kwargs)

    sys.modules[__name__].__class__ = _CallablePackage


_make_callable()
