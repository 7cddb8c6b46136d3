"""save / load / dumps / loads / stats for .dsz files."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DeepshrinkError, FormatError, UnsupportedLayerError
from ..outputs import atomic_file
from . import arch as _arch
from .coders import entropy_bits, stream_counts, table_bytes
from .container import MAX_EXPANSION, Reader, Writer
from .encodings import DTYPE_NAMES

log = logging.getLogger(__name__)
_CODERS = ("auto", "ans", "huffman", "none")


class ArchitectureUnavailableError(FormatError, UnsupportedLayerError):
    """The file does not describe a rebuildable architecture: pass ``load(path, model=skeleton)``."""


def _producer() -> str:
    try:
        from importlib.metadata import version

        return f"deepshrink {version('deepshrink')}"
    except Exception:  # noqa: BLE001 - metadata missing in odd installs
        return "deepshrink"


def _pick(name: str, encodings: Mapping[str, Any] | None) -> tuple[str | None, dict]:
    for sel, val in (encodings or {}).items():
        hit = re.fullmatch(sel[3:], name) if sel.startswith("re:") else sel == name
        if hit:
            if isinstance(val, str):
                return val, {}
            val = dict(val)
            return val.pop("encoding"), val
    return None, {}


def _writer(model: nn.Module, coder: str, encodings: Mapping[str, Any] | None,
            codebooks: bool = True) -> tuple[Writer, dict]:
    if coder not in _CODERS:
        raise ValueError(f"coder must be one of {_CODERS}, got {coder!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    node, reason = _arch.rebuildable(model)
    meta: dict[str, Any] = {"producer": _producer(), "architecture": node, "training": bool(model.training)}
    if node is None:
        meta["not_rebuildable"] = reason
        meta["model_class"] = f"{type(model).__module__}.{type(model).__qualname__}"
        log.info("architecture not stored (%s); load it with load(path, model=skeleton)", reason)
    history = getattr(model, "deepshrink_history", None)
    if history is not None:
        try:
            json.dumps(history, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"model.deepshrink_history is not JSON-serializable: {exc}") from exc
        meta["history"] = history
    w = Writer()
    seen: dict[tuple, str] = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise UnsupportedLayerError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        if t.is_meta:
            raise UnsupportedLayerError(f"tensor {name!r} is on the meta device and holds no data")
        if t.is_quantized:
            raise UnsupportedLayerError(f"tensor {name!r} is a quantized tensor; .dsz stores plain tensors only")
        if t.layout != torch.strided:
            t = t.to_dense()
        if t.dtype not in DTYPE_NAMES:
            raise UnsupportedLayerError(f"tensor {name!r} has unsupported dtype {t.dtype}")
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and key in seen:
            w.add_alias(name, seen[key])
            continue
        seen[key] = name
        enc, opts = _pick(name, encodings)
        w.add_tensor(name, t.detach().cpu(), coder=coder, encoding=enc, codebooks=codebooks, **opts)
    return w, meta


def dumps(model: nn.Module, *, coder: str = "auto", encodings: Mapping[str, Any] | None = None,
          codebooks: bool = True) -> bytes:
    """Encode `model` (architecture when rebuildable, every state_dict tensor) as .dsz bytes.

    Args:
        model: any module; its state_dict tensors are stored exactly (bit-identical on load).
        coder: entropy coder of the index/value streams: "auto" (smallest per stream), "ans",
            "huffman" or "none" (fixed-width symbols).
        encodings: optional tensor name (or "re:<regex>") -> encoding name, or
            ``{"encoding": name, **options}``; other tensors get the smallest automatic encoding.
        codebooks: allow codebook encodings in the automatic choice (False: values stored raw,
            e.g. to measure the "pruned only" stage).

    Example:
        >>> from torch import nn
        >>> data = dumps(nn.Sequential(nn.Linear(4, 2)))
        >>> data[:4]
        b'\\x89DSZ'
    """
    w, meta = _writer(model, coder, encodings, codebooks)
    buf = io.BytesIO()
    w.write(buf, meta)
    return buf.getvalue()


def save(model: nn.Module, path: str | os.PathLike, *, coder: str = "auto",
         encodings: Mapping[str, Any] | None = None, codebooks: bool = True) -> int:
    """Write `model` to `path` as a .dsz file, atomically (temp file + rename); returns its size.

    Arguments as in `dumps`. The file is written next to `path` under a temporary name and renamed
    over it only when complete, so a crash never leaves a partial file at `path`.

    Example:
        >>> import tempfile, os
        >>> from torch import nn
        >>> p = os.path.join(tempfile.mkdtemp(), "m.dsz")
        >>> save(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), p) > 0
        True
        >>> type(load(p)).__name__
        'Sequential'
    """
    path = Path(path)
    w, meta = _writer(model, coder, encodings, codebooks)
    with atomic_file(path, parents=False) as tmp, open(tmp, "wb") as fh:
        size = w.write(fh, meta)
        fh.flush()
        os.fsync(fh.fileno())
    return size


def _replay(model: nn.Module, history: Any) -> nn.Module:
    """The skeleton with the recorded structural pruning applied (`deepshrink.prune.replay`)."""
    if getattr(model, "deepshrink_history", None) == history:
        return model
    try:
        from ..prune import replay
    except ImportError as exc:
        raise DeepshrinkError(
            "this file records structural pruning (deepshrink_history) but deepshrink.prune.replay "
            "is not available to re-apply it to the skeleton"
        ) from exc
    if not isinstance(history, list):
        raise FormatError("header 'history' must be a list")
    try:
        out = replay(model, history)
    except (DeepshrinkError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
        raise FormatError(f"cannot replay the recorded structural pruning on the skeleton: {exc}") from exc
    return model if out is None else out


def _fill(model: nn.Module, reader: Reader) -> nn.Module:
    want = model.state_dict()
    have = reader.names()
    missing, unexpected = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or unexpected:
        raise FormatError(
            f"file and model disagree: missing in file {missing[:5]}, not in model {unexpected[:5]}"
        )
    for name in have:
        t = reader.tensor(name)
        old = want[name]
        if tuple(old.shape) != tuple(t.shape):
            raise FormatError(f"shape mismatch for {name!r}: file {list(t.shape)}, model {list(old.shape)}")
        prefix, _, local = name.rpartition(".")
        owner = model.get_submodule(prefix) if prefix else model
        assign = old.is_meta or old.dtype != t.dtype
        owner.load_state_dict({local: t}, strict=False, assign=assign)
    for n, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_meta:
            raise FormatError(f"tensor {n!r} was not restored from the file")
    return model


def _load(reader: Reader, model: nn.Module | None) -> nn.Module:
    h = reader.header
    history = h.get("history")
    if model is None:
        node = h.get("architecture")
        if node is None:
            why = h.get("not_rebuildable", "no architecture stored")
            raise ArchitectureUnavailableError(
                f"this .dsz file cannot rebuild its model by itself ({why}); "
                f"pass load(path, model=skeleton) with a {h.get('model_class', 'model')} instance"
            )
        model = _arch.build(node)
    elif history is not None:
        model = _replay(model, history)
    _fill(model, reader)
    model.train(bool(h.get("training", False)))
    if history is not None:
        model.deepshrink_history = history
    return model


def loads(data: bytes, model: nn.Module | None = None, *, max_expansion: float = MAX_EXPANSION) -> nn.Module:
    """Decode .dsz bytes into a runnable module (see `load`).

    Example:
        >>> from torch import nn
        >>> m = loads(dumps(nn.Sequential(nn.Linear(4, 2))))
        >>> m[0].weight.shape
        torch.Size([2, 4])
    """
    return _load(Reader(data, max_expansion=max_expansion), model)


def load(path: str | os.PathLike, model: nn.Module | None = None, *,
         max_expansion: float = MAX_EXPANSION) -> nn.Module:
    """Load a .dsz file.

    Args:
        path: the file.
        model: a skeleton to fill (required when the file's model is not made of registered
            layers), e.g. a freshly built instance of the original architecture. It is filled in
            place and returned; when the file records structural pruning (``deepshrink_history``)
            and the skeleton does not carry the same history, `deepshrink.prune.replay` first
            rebuilds the pruned architecture from it, and that new model is filled and returned.
        max_expansion: refuse files whose decoded tensors exceed this multiple of the file size.

    Raises:
        FormatError: corrupt, truncated or hostile file, or a skeleton that does not match.
        ArchitectureUnavailableError: no skeleton given and the file cannot rebuild the model.

    Example:
        >>> import tempfile, os, torch
        >>> from torch import nn
        >>> p = os.path.join(tempfile.mkdtemp(), "m.dsz")
        >>> m = nn.Sequential(nn.Linear(3, 1))
        >>> _ = save(m, p)
        >>> torch.equal(load(p)[0].weight, m[0].weight)
        True
    """
    with open(path, "rb") as fh:
        return _load(Reader(fh, max_expansion=max_expansion), model)


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass
class StreamStats:
    name: str
    coder: str
    symbols: int
    alphabet: int
    bytes: int
    table_bytes: int
    entropy_bits: float

    @property
    def coded_bits(self) -> int:
        return 8 * (self.bytes - self.table_bytes)


@dataclass
class TensorStats:
    name: str
    dtype: str
    shape: list[int]
    numel: int
    encoding: str
    params: dict
    bytes: int
    streams: list[StreamStats] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.bytes / max(1, self.numel)


@dataclass
class DszStats:
    """What a .dsz file spends where. `coded_*` sum the entropy-coded symbol streams."""

    file_bytes: int
    header_bytes: int
    params: int
    fp32_bytes: int
    tensors: list[TensorStats]

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.file_bytes / max(1, self.params)

    @property
    def coded_bits(self) -> int:
        return sum(s.coded_bits for t in self.tensors for s in t.streams if s.coder != "bytes")

    @property
    def table_bytes(self) -> int:
        return sum(s.table_bytes for t in self.tensors for s in t.streams)

    @property
    def entropy_bits(self) -> float:
        return sum(s.entropy_bits for t in self.tensors for s in t.streams if s.coder != "bytes")

    @property
    def coding_overhead(self) -> float:
        """Coded stream bits / their empirical entropy - 1 (count tables excluded)."""
        return self.coded_bits / self.entropy_bits - 1 if self.entropy_bits else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("bits_per_weight", "coded_bits", "table_bytes", "entropy_bits", "coding_overhead"):
            d[k] = getattr(self, k)
        d["compression_ratio"] = self.fp32_bytes / self.file_bytes if self.file_bytes else 0.0
        return d


def stats(source: str | os.PathLike | bytes | nn.Module, *, coder: str = "auto") -> DszStats:
    """Per-tensor encoding, bytes, bits per weight and per-stream empirical entropy of a .dsz.

    `source` is a path, .dsz bytes, or a model (encoded first with `coder`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Linear(64, 64, bias=False)
        >>> with torch.no_grad():
        ...     _ = m.weight.copy_(torch.randint(0, 4, (64, 64)).float())
        >>> s = stats(m)
        >>> s.tensors[0].encoding, s.bits_per_weight < 4
        ('codebook', True)
    """
    if isinstance(source, nn.Module):
        source = dumps(source, coder=coder)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _stats(Reader(source))
    with open(source, "rb") as fh:
        return _stats(Reader(fh))


def _stats(r: Reader) -> DszStats:
    rows = []
    params = 0
    for name, e in r.header["tensors"].items():
        if "alias" in e:
            continue
        numel = 1
        for s in e["shape"]:
            numel *= s
        params += numel
        row = TensorStats(name, e["dtype"], e["shape"], numel, e["encoding"], e.get("params", {}), 0)
        for sname, d in e["streams"].items():
            payload = r.stream_payload(name, sname)
            row.bytes += d["length"]
            if d["coder"] == "bytes":
                row.streams.append(StreamStats(sname, "bytes", d["length"], 256, d["length"], 0, 8.0 * d["length"]))
                continue
            counts = stream_counts(d, payload)
            table = table_bytes(d, payload)
            row.streams.append(
                StreamStats(sname, d["coder"], d["n"], d["m"], d["length"], table, entropy_bits(counts))
            )
        rows.append(row)
    return DszStats(r.size, r.payload_start, params, 4 * params, rows)
