"""Per-tensor encodings and their registry: dense, sparse (relative indices) and codebook.

An encoding turns one tensor into JSON `params` plus named *streams*; the container then
entropy-codes every symbol stream (`Symbols`) and stores every byte stream as is. Decoding gets the
params, the dtype, the shape and the decoded streams back, and returns the tensor.

Built-in encodings (all exact: the decoded tensor is bit-identical, except that ``sparse`` and
``codebook`` store a float -0.0 as +0.0 -- equal under IEEE comparison -- so that weights zeroed by
multiplying with a mask count as zeros):

- ``dense``: the raw little-endian bytes (any dtype, incl. fp16/bf16/int8/bool).
- ``codebook``: at most 256 distinct values (compared bit by bit, so -0.0 and NaN payloads survive):
  the values once (``codebook`` bytes) plus one index per element (``index`` symbols, alphabet K).
- ``sparse``: the non-zero positions as relative indices (Deep Compression): each non-zero is
  reached by a gap symbol in ``[0, 2**w - 1)`` meaning "skip that many zeros, then a non-zero";
  a gap too long for ``w`` bits is bridged by filler symbols ``2**w - 1`` that skip ``2**w - 1``
  positions and carry no value. ``w`` in 1..8 is chosen per tensor to minimize the coded size.
  Values follow either raw (``values`` bytes) or, with <= 256 distinct non-zero values, as a
  ``codebook`` plus ``index`` symbols. When it is smaller, a matrix's empty rows and columns are
  dropped first (``rows``/``cols`` keep-bitmaps, ``params["compact"]``) and the gaps index what is left.

Adding an encoding (e.g. bit-packed binary/ternary or product-quantized tensors)::

    from deepshrink.encode import Encoded, Symbols, register_encoding

    def encode_sign(t, *, coder, **opts):        # return None when it does not apply
        if not bool(((t == 1) | (t == -1)).all()):
            return None
        return Encoded(params={}, streams={"signs": Symbols((t.reshape(-1) > 0).numpy(), 2)})

    def decode_sign(params, dtype, shape, streams):
        s = torch.from_numpy(streams["signs"]).reshape(shape)
        return (s.to(dtype) * 2 - 1)

    register_encoding("sign", encode=encode_sign, decode=decode_sign, auto=True)

With ``auto=True`` it competes on size with the built-ins in `save(..., coder=...)`; otherwise it is
used only when asked for by name: ``save(model, path, encodings={"re:.*weight": "sign"})``.
Decoded symbol streams arrive as int64 numpy arrays, byte streams as read-only `memoryview`s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from .coders import choose_coder, estimate_size

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_BITS_DTYPE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NP_BITS = {1: "<u1", 2: "<i2", 4: "<i4", 8: "<i8"}
MAX_CODEBOOK = 256
MAX_GAP_WIDTH = 8


@dataclass
class Symbols:
    """A symbol stream to entropy-code: integers in ``[0, alphabet)``."""

    symbols: np.ndarray
    alphabet: int
    counts: np.ndarray | None = None  # histogram of `symbols`, when the producer already has it

    def histogram(self) -> np.ndarray:
        if self.counts is None:
            self.counts = np.bincount(self.symbols, minlength=self.alphabet)
        return self.counts


@dataclass
class Encoded:
    """What an encoding produces: JSON-serializable `params` and named streams (Symbols or bytes)."""

    params: dict
    streams: dict[str, Any]


@dataclass(frozen=True)
class Encoding:
    name: str
    encode: Callable[..., Encoded | None]
    decode: Callable[[dict, torch.dtype, tuple, dict], torch.Tensor]
    auto: bool = False


_ENCODINGS: dict[str, Encoding] = {}


def register_encoding(
    name: str,
    *,
    encode: Callable[..., Encoded | None],
    decode: Callable[[dict, torch.dtype, tuple, dict], torch.Tensor],
    auto: bool = False,
) -> None:
    """Register a per-tensor encoding under `name` (see the module docstring for an example).

    Args:
        encode: ``encode(tensor, *, coder, **opts) -> Encoded | None`` (None: does not apply).
        decode: ``decode(params, dtype, shape, streams) -> tensor`` of exactly that dtype/shape;
            raise `FormatError` on inconsistent input.
        auto: take part in the automatic (smallest size) choice.
    """
    existing = _ENCODINGS.get(name)
    if existing is not None and (existing.encode, existing.decode) != (encode, decode):
        raise ValueError(f"encoding {name!r} is already registered")
    _ENCODINGS[name] = Encoding(name, encode, decode, auto)


# Modules that register encodings and layers of their own. A file written with them must load in a
# fresh process that never imported them, so a miss imports these once before giving up.
PLUGIN_MODULES = ("deepshrink.quantize.lowbit.dsz", "deepshrink.quantize.pq")
_plugins_loaded = False


def load_plugins() -> None:
    """Import the bundled modules that register extra encodings and layers (once)."""
    global _plugins_loaded
    if not _plugins_loaded:
        import importlib

        _plugins_loaded = True
        for mod in PLUGIN_MODULES:
            importlib.import_module(mod)


def get_encoding(name: str) -> Encoding:
    """The registered encoding `name`; `FormatError` if unknown."""
    if isinstance(name, str) and name not in _ENCODINGS:
        load_plugins()
    enc = _ENCODINGS.get(name) if isinstance(name, str) else None
    if enc is None:
        raise FormatError(f"unknown tensor encoding {name!r}; known: {', '.join(sorted(_ENCODINGS))}")
    return enc


def encodings() -> dict[str, Encoding]:
    """All registered encodings, name -> Encoding."""
    return dict(_ENCODINGS)


# ---------------------------------------------------------------------------------------------
# helpers


def bits_of(t: torch.Tensor) -> np.ndarray:
    """The tensor's elements as same-width integers (bit patterns), flat, as a numpy array."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(_BITS_DTYPE[t.element_size()]).numpy()


def zero_canonical_bits(t: torch.Tensor) -> np.ndarray:
    """`bits_of(t)` with float -0.0 turned into +0.0 (so masked weights count as zeros)."""
    bits = bits_of(t)
    if t.dtype.is_floating_point:
        neg_zero = np.iinfo(bits.dtype).min  # only the sign bit set
        mask = bits == neg_zero
        if mask.any():
            bits = bits.copy()
            bits[mask] = 0
    return bits


def tensor_from_bits(bits: np.ndarray, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    """Inverse of `bits_of`."""
    size = torch.empty((), dtype=dtype).element_size()
    arr = np.ascontiguousarray(bits, dtype=_NP_BITS[size])
    return torch.from_numpy(arr).view(dtype).reshape(shape)


def tensor_from_bytes(data: memoryview, dtype: torch.dtype, shape: tuple) -> torch.Tensor:
    """A fresh tensor from raw little-endian bytes; `FormatError` if the length does not fit."""
    size = torch.empty((), dtype=dtype).element_size()
    numel = _numel(shape)
    if len(data) != numel * size:
        raise FormatError(f"shape mismatch: {len(data)} bytes for {numel} elements of {size} bytes")
    arr = np.frombuffer(data, dtype=_NP_BITS[size]).copy()
    return torch.from_numpy(arr).view(dtype).reshape(shape)


def _numel(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def stream_size(stream: Any, coder: str) -> int:
    """Estimated stored bytes of one stream."""
    if isinstance(stream, Symbols):
        counts = stream.histogram()
        return estimate_size(counts, choose_coder(counts, coder))
    return memoryview(stream).nbytes


def _codebook(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(sorted distinct bit patterns, index of each element) or None when > MAX_CODEBOOK values.

    Candidates come from a strided sample and are verified on every element with a binary search
    (cheap); values the sample missed are added and the check is repeated once.
    """
    if len(bits) == 0:
        return None
    cands = np.unique(bits[:: max(1, len(bits) // 65536)])
    for _ in range(2):
        if len(cands) > MAX_CODEBOOK:
            return None
        idx = np.searchsorted(cands, bits)
        np.minimum(idx, len(cands) - 1, out=idx)
        missed = cands[idx] != bits
        if not missed.any():
            return cands, idx
        # the sample missed some values: add them (stop early if there are too many)
        extra = np.unique(bits[missed][: 1 << 16])
        cands = np.union1d(cands, extra)
    return None


def _check_codebook(streams: dict, itemsize: int) -> np.ndarray:
    book = streams["codebook"]
    if len(book) % itemsize or len(book) == 0 or len(book) // itemsize > MAX_CODEBOOK:
        raise FormatError(f"codebook of {len(book)} bytes is not 1..{MAX_CODEBOOK} values of {itemsize} bytes")
    return np.frombuffer(book, dtype=_NP_BITS[itemsize])


# ---------------------------------------------------------------------------------------------
# dense


def _dense_encode(t: torch.Tensor, *, coder: str = "auto") -> Encoded:
    bits = bits_of(t)
    return Encoded(params={}, streams={"data": memoryview(bits.astype(bits.dtype.newbyteorder("<"), copy=False))})


def _dense_decode(params: dict, dtype: torch.dtype, shape: tuple, streams: dict) -> torch.Tensor:
    return tensor_from_bytes(streams["data"], dtype, shape)


# ---------------------------------------------------------------------------------------------
# codebook (dense indices)


def _shared(t: torch.Tensor, cache: dict | None, key: str):
    """Per-tensor analysis shared by the built-in encoders during one automatic choice."""
    if cache is None:
        cache = {}
    if key not in cache:
        if key == "bits":
            cache[key] = zero_canonical_bits(t)
        elif key == "codebook":
            cache[key] = _codebook(_shared(t, cache, "bits"))
    return cache[key]


def _codebook_encode(t: torch.Tensor, *, coder: str = "auto", _cache: dict | None = None) -> Encoded | None:
    cb = _shared(t, _cache, "codebook")
    if cb is None:
        return None
    values, index = cb
    return Encoded(
        params={},
        streams={"codebook": values.astype(values.dtype.newbyteorder("<")).tobytes(),
                 "index": Symbols(index, len(values))},
    )


def _codebook_decode(params: dict, dtype: torch.dtype, shape: tuple, streams: dict) -> torch.Tensor:
    size = torch.empty((), dtype=dtype).element_size()
    book = _check_codebook(streams, size)
    index = streams["index"]
    if len(index) != _numel(shape):
        raise FormatError(f"shape mismatch: {len(index)} codebook indices for shape {list(shape)}")
    if len(index) and int(index.max()) >= len(book):
        raise FormatError("codebook index out of range")
    return tensor_from_bits(book[index], dtype, shape)


# ---------------------------------------------------------------------------------------------
# sparse with relative indices


def _gaps(nz: np.ndarray) -> np.ndarray:
    """Zeros skipped before each non-zero."""
    return np.diff(nz, prepend=-1) - 1


def _gap_counts(gaps: np.ndarray | tuple[np.ndarray, np.ndarray], w: int) -> np.ndarray:
    """Histogram of `gap_symbols(gaps, w)`; `gaps` may be given as (distinct gaps, their counts)."""
    vals, mult = gaps if isinstance(gaps, tuple) else np.unique(gaps, return_counts=True)
    step = (1 << w) - 1
    counts = np.bincount(vals % step, weights=mult, minlength=step).astype(np.int64)
    return np.append(counts, int((vals // step * mult).sum()))


def gap_symbols(gaps: np.ndarray, w: int) -> np.ndarray:
    """The relative-index stream for these gaps with `w`-bit symbols (filler = 2**w - 1)."""
    step = (1 << w) - 1
    fill = gaps // step
    out = np.full(int(fill.sum()) + len(gaps), step, dtype=np.int64)
    out[np.cumsum(fill + 1) - 1] = gaps % step
    return out


def positions_from_gaps(symbols: np.ndarray, w: int) -> np.ndarray:
    """Inverse of `gap_symbols`: the flat positions of the non-zeros."""
    step = (1 << w) - 1
    entry = symbols < step
    cursor = np.cumsum(np.where(entry, symbols + 1, step))
    return cursor[entry] - 1


def _gap_stream(gaps: np.ndarray, w: int) -> Symbols:
    return Symbols(gap_symbols(gaps, w), 1 << w, _gap_counts(gaps, w))


def best_gap_width(gaps: np.ndarray, coder: str) -> int:
    """The gap width (1..8 bits) whose coded index stream is smallest."""
    hist = np.unique(gaps, return_counts=True)
    sizes = {}
    for w in range(1, MAX_GAP_WIDTH + 1):
        counts = _gap_counts(hist, w)
        sizes[w] = estimate_size(counts, choose_coder(counts, coder))
    return min(sizes, key=lambda w: (sizes[w], w))


def _position_streams(nz: np.ndarray, bits: np.ndarray, shape: tuple, coder: str,
                      width: int | None) -> tuple[dict, dict[str, Any]]:
    """Params and streams locating the non-zeros: gaps over the whole tensor, or -- when that is
    smaller -- row/column keep-bitmaps plus gaps over the matrix without its empty rows/columns."""
    gaps = _gaps(nz)
    w = width if width is not None else best_gap_width(gaps, coder)
    best: tuple[dict, dict[str, Any]] = ({"width": w}, {"gaps": _gap_stream(gaps, w)})
    if len(shape) < 2 or shape[0] == 0 or len(nz) == 0:
        return best
    used = bits.reshape(shape[0], -1) != 0
    keep_r, keep_c = used.any(axis=1), used.any(axis=0)
    if keep_r.all() and keep_c.all():
        return best
    sub_nz = np.flatnonzero(used[keep_r][:, keep_c])
    sub_gaps = _gaps(sub_nz)
    w2 = width if width is not None else best_gap_width(sub_gaps, coder)
    compact = (
        {"width": w2, "compact": True},
        {"rows": Symbols(keep_r.astype(np.int64), 2), "cols": Symbols(keep_c.astype(np.int64), 2),
         "gaps": _gap_stream(sub_gaps, w2)},
    )
    size = lambda st: sum(stream_size(x, coder) for x in st.values())  # noqa: E731
    return compact if size(compact[1]) < size(best[1]) else best


def _nonzero_codebook(nz: np.ndarray, vals: np.ndarray, cache: dict | None):
    """Codebook of the non-zero values, derived from the whole tensor's codebook when known."""
    if len(nz) == 0:
        return None
    full = cache.get("codebook", False) if cache is not None else False
    if full is False or full is None:
        return _codebook(vals)
    book, index = full
    keep = book != 0
    remap = np.cumsum(keep) - 1
    return book[keep], remap[index[nz]]


def _sparse_encode(
    t: torch.Tensor, *, coder: str = "auto", width: int | None = None, codebook: bool = True,
    _cache: dict | None = None,
) -> Encoded | None:
    bits = _shared(t, _cache, "bits")
    if bits.size == 0 or np.count_nonzero(bits) > bits.size // 2:
        return None
    nz = np.flatnonzero(bits)
    params, streams = _position_streams(nz, bits, tuple(t.shape), coder, width)
    vals = bits[nz]
    cb = _nonzero_codebook(nz, vals, _cache) if codebook else None
    raw = Encoded(params=params, streams={**streams, "values": vals.astype(vals.dtype.newbyteorder("<")).tobytes()})
    if cb is None:
        return raw
    book, index = cb
    coded = Encoded(
        params=params,
        streams={**streams, "codebook": book.astype(book.dtype.newbyteorder("<")).tobytes(),
                 "index": Symbols(index, len(book))},
    )
    size = lambda e: sum(stream_size(s, coder) for s in e.streams.values())  # noqa: E731
    return coded if size(coded) <= size(raw) else raw


def _compact_positions(params: dict, shape: tuple, streams: dict, pos: np.ndarray) -> np.ndarray:
    """Map positions in the matrix without empty rows/columns back to flat tensor positions."""
    if len(shape) < 2 or shape[0] == 0:
        raise FormatError("compact sparse tensor needs at least 2 dimensions")
    n_rows, n_cols = shape[0], _numel(shape) // shape[0]
    rows, cols = streams.get("rows"), streams.get("cols")
    if rows is None or cols is None or len(rows) != n_rows or len(cols) != n_cols:
        raise FormatError(f"shape mismatch: compact sparse bitmaps do not fit shape {list(shape)}")
    if (len(rows) and int(rows.max()) > 1) or (len(cols) and int(cols.max()) > 1):
        raise FormatError("compact sparse bitmap symbol out of range")
    ri, ci = np.flatnonzero(rows), np.flatnonzero(cols)
    if len(pos) and int(pos[-1]) >= len(ri) * len(ci):
        raise FormatError(f"sparse index {int(pos[-1])} out of range for the compacted {len(ri)}x{len(ci)} matrix")
    if not len(pos):
        return pos
    return ri[pos // len(ci)] * n_cols + ci[pos % len(ci)]


def _sparse_decode(params: dict, dtype: torch.dtype, shape: tuple, streams: dict) -> torch.Tensor:
    w = params.get("width")
    if not isinstance(w, int) or isinstance(w, bool) or not 1 <= w <= MAX_GAP_WIDTH:
        raise FormatError(f"sparse gap width {w!r} out of range 1..{MAX_GAP_WIDTH}")
    gaps = streams["gaps"]
    if len(gaps) and int(gaps.max()) >= 1 << w:
        raise FormatError("sparse gap symbol out of range")
    pos = positions_from_gaps(gaps, w)
    compact = params.get("compact", False)
    if compact not in (True, False):
        raise FormatError(f"sparse 'compact' must be a boolean, got {compact!r}")
    if compact:
        pos = _compact_positions(params, shape, streams, pos)
    numel = _numel(shape)
    if len(pos) and int(pos[-1]) >= numel:
        raise FormatError(f"sparse index {int(pos[-1])} out of range for shape {list(shape)}")
    size = torch.empty((), dtype=dtype).element_size()
    if "codebook" in streams:
        book = _check_codebook(streams, size)
        index = streams.get("index")
        if index is None:
            raise FormatError("sparse tensor with a codebook but no index stream")
        if len(index) and int(index.max()) >= len(book):
            raise FormatError("codebook index out of range")
        vals = book[index]
    elif "values" in streams:
        data = streams["values"]
        if len(data) % size:
            raise FormatError("sparse values length is not a multiple of the element size")
        vals = np.frombuffer(data, dtype=_NP_BITS[size])
    else:
        raise FormatError("sparse tensor has neither 'values' nor 'codebook' stream")
    if len(vals) != len(pos):
        raise FormatError(f"stream length mismatch: {len(pos)} sparse positions but {len(vals)} values")
    out = np.zeros(numel, dtype=_NP_BITS[size])
    out[pos] = vals
    return tensor_from_bits(out, dtype, shape)


register_encoding("dense", encode=_dense_encode, decode=_dense_decode, auto=True)
register_encoding("codebook", encode=_codebook_encode, decode=_codebook_decode, auto=True)
register_encoding("sparse", encode=_sparse_encode, decode=_sparse_decode, auto=True)


def encode_tensor(
    t: torch.Tensor, *, coder: str = "auto", encoding: str | None = None, codebooks: bool = True, **opts
) -> tuple[str, Encoded]:
    """Encode one tensor with `encoding`, or with the smallest applicable auto encoding.

    ``codebooks=False`` keeps the automatic choice away from codebooks (values stored raw).
    """
    if encoding is not None:
        enc = get_encoding(encoding)
        out = enc.encode(t, coder=coder, **opts)
        if out is None:
            raise ValueError(f"encoding {encoding!r} does not apply to this tensor")
        return encoding, out
    best: tuple[int, str, Encoded] | None = None
    cache: dict = {}
    for name, enc in _ENCODINGS.items():
        if not enc.auto or (not codebooks and name == "codebook"):
            continue
        if name == "sparse":
            out = enc.encode(t, coder=coder, codebook=codebooks, _cache=cache)
        elif name == "codebook":
            out = enc.encode(t, coder=coder, _cache=cache)
        else:
            out = enc.encode(t, coder=coder)
        if out is None:
            continue
        size = sum(stream_size(s, coder) for s in out.streams.values())
        if best is None or size < best[0]:
            best = (size, name, out)
    if best is None:  # only when "dense" was unregistered
        raise ValueError("no registered encoding applies to this tensor")
    return best[1], best[2]
