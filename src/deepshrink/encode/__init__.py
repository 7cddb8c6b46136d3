"""Deep Compression storage: the .dsz file format (spec: docs/FORMAT.md).

A .dsz file holds a model's tensors exactly (bit-identical), each in the smallest of its encodings
(dense, sparse with relative indices, codebook), with the index and value streams entropy-coded
(ANS via `constriction`, or canonical Huffman), plus -- for models made of standard `torch.nn`
layers and the bundled layers -- the architecture as data, so `load(path)` needs none of the
user's code. Other models are loaded into a skeleton: `load(path, model=skeleton)`. No pickle.

Corrupt, truncated or hostile files raise `deepshrink.errors.FormatError` naming the cause.

Extending: `register_encoding` adds a per-tensor encoding (see `deepshrink.encode.encodings`), and
`register_layer` adds a layer class that may be rebuilt from data (see `deepshrink.encode.arch`).

Example:
    >>> import io, torch
    >>> from torch import nn
    >>> from deepshrink import encode
    >>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> data = encode.dumps(model)
    >>> copy = encode.loads(data)
    >>> x = torch.randn(3, 8)
    >>> torch.equal(model(x), copy(x))
    True
    >>> encode.stats(data).tensors[0].encoding
    'dense'
"""

from .api import (
    ArchitectureUnavailableError,
    DszStats,
    StreamStats,
    TensorStats,
    dumps,
    load,
    loads,
    save,
    stats,
)
from .arch import register_layer
from .encodings import Encoded, Symbols, register_encoding

__all__ = [
    "ArchitectureUnavailableError",
    "DszStats",
    "Encoded",
    "StreamStats",
    "Symbols",
    "TensorStats",
    "dumps",
    "load",
    "loads",
    "register_encoding",
    "register_layer",
    "save",
    "stats",
]
