"""deepshrink.quantize"""

# Lazy public names (module, attribute): `import deepshrink` stays light.
_LAZY = {
    "QuantInfo": ("deepshrink.quantize.int8.api", "QuantInfo"),
    "int8_auto": ("deepshrink.quantize.int8.auto", "int8_auto"),
    "fp16": ("deepshrink.quantize.half", "fp16"),
    "bf16": ("deepshrink.quantize.half", "bf16"),
    "half": ("deepshrink.quantize.half", "half"),
    # weight sharing (deep-compression owner)
    "cluster": ("deepshrink.quantize.cluster", "cluster"),
    "finetune_centroids": ("deepshrink.quantize.cluster", "finetune_centroids"),
}


def __getattr__(name: str):
    import importlib

    if name == "int8":  # the package is callable: deepshrink.quantize.int8(model, ...)
        return importlib.import_module("deepshrink.quantize.int8")
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'deepshrink.quantize' has no attribute {name!r}")
