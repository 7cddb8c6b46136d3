"""The .dsz container: fixed prefix, bounded JSON header, checksummed payloads (spec: docs/FORMAT.md).

Writing assigns every stream's payload an offset in the payload area (no holes, no overlaps) and a
CRC32. Reading validates the prefix, the header size, the header checksum and schema, every offset
and length against the file size, and the total declared tensor size against what the file can
support, before it reads or allocates anything; each payload's CRC32 is checked before decoding.

Example:
    >>> import io, torch
    >>> w = Writer()
    >>> w.add_tensor("t", torch.arange(4.0), coder="auto")
    >>> buf = io.BytesIO(); _ = w.write(buf, {})
    >>> r = Reader(buf.getvalue()); r.tensor("t").tolist()
    [0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from typing import Any, BinaryIO

import torch

from ..errors import FormatError
from .coders import decode_stream, encode_stream
from .encodings import DTYPE_NAMES, DTYPES, Symbols, encode_tensor, get_encoding

MAGIC = b"\x89DSZ\r\n\x1a\n"
VERSION = 1
FLAG_ZLIB = 1
PREFIX = struct.Struct("<8sHHII")  # magic, version, flags, header length, header CRC32
MAX_HEADER = 16 << 20
MAX_NDIM = 32
# Decoded tensors may total at most MAX_EXPANSION x the file size (and at least MIN_BUDGET bytes).
MAX_EXPANSION = 1024
MIN_BUDGET = 16 << 20


class Writer:
    """Collects encoded tensors, then writes prefix, header and payloads in one pass."""

    def __init__(self) -> None:
        self.tensors: dict[str, dict] = {}
        self.payloads: list[Any] = []
        self._offset = 0

    def _add_payload(self, data: Any) -> dict:
        mv = memoryview(data).cast("B")
        entry = {"offset": self._offset, "length": mv.nbytes, "crc32": zlib.crc32(mv)}
        self._offset += mv.nbytes
        if mv.nbytes:
            self.payloads.append(mv)
        return entry

    def add_alias(self, name: str, target: str) -> None:
        self.tensors[name] = {"alias": target}

    def add_tensor(self, name: str, t: torch.Tensor, *, coder: str, encoding: str | None = None,
                   codebooks: bool = True, **opts) -> None:
        enc_name, enc = encode_tensor(t, coder=coder, encoding=encoding, codebooks=codebooks, **opts)
        streams = {}
        for sname, s in enc.streams.items():
            if isinstance(s, Symbols):
                desc, payload = encode_stream(s.symbols, s.alphabet, coder)
            else:
                desc, payload = {"coder": "bytes"}, s
            streams[sname] = {**desc, **self._add_payload(payload)}
        entry = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "encoding": enc_name}
        if enc.params:
            entry["params"] = enc.params
        entry["streams"] = streams
        self.tensors[name] = entry

    def header_bytes(self, meta: dict) -> tuple[int, bytes]:
        header = {"format": "dsz", "version": VERSION, **meta, "tensors": self.tensors}
        raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(raw) > MAX_HEADER:
            raise FormatError(f"header too large: {len(raw)} bytes > {MAX_HEADER}")
        packed = zlib.compress(raw, 9)
        return (FLAG_ZLIB, packed) if len(packed) < len(raw) else (0, raw)

    def write(self, fh: BinaryIO, meta: dict) -> int:
        """Write the whole container to `fh`; returns the number of bytes written."""
        flags, header = self.header_bytes(meta)
        fh.write(PREFIX.pack(MAGIC, VERSION, flags, len(header), zlib.crc32(header)))
        fh.write(header)
        for p in self.payloads:
            fh.write(p)
        return PREFIX.size + len(header) + self._offset


def _int(v: Any, what: str, lo: int = 0, hi: int = 1 << 62) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise FormatError(f"{what} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


class Reader:
    """Validated read access to a .dsz container held in bytes or in an open binary file."""

    def __init__(self, source: bytes | bytearray | memoryview | BinaryIO, *, max_expansion: float = MAX_EXPANSION):
        if isinstance(source, (bytes, bytearray, memoryview)):
            self._buf: memoryview | None = memoryview(source).cast("B")
            self._fh = None
            self.size = self._buf.nbytes
        else:
            self._buf, self._fh = None, source
            self.size = os.fstat(source.fileno()).st_size if hasattr(source, "fileno") else _seek_size(source)
        self.header = self._read_header()
        self._validate(max_expansion)

    def _read(self, offset: int, length: int) -> memoryview:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(f"offset/length out of range: [{offset}, {offset + length}) in a {self.size}-byte file")
        if self._buf is not None:
            return self._buf[offset : offset + length]
        self._fh.seek(offset)
        data = self._fh.read(length)
        if len(data) != length:
            raise FormatError("truncated file: short read")
        return memoryview(data)

    def _read_header(self) -> dict:
        if self.size < PREFIX.size:
            raise FormatError(f"truncated file: {self.size} bytes, shorter than the {PREFIX.size}-byte prefix")
        magic, version, flags, hlen, hcrc = PREFIX.unpack(bytes(self._read(0, PREFIX.size)))
        if magic != MAGIC:
            raise FormatError(f"bad magic {magic!r}: not a .dsz file")
        if version != VERSION:
            raise FormatError(f"unsupported version {version} (this reader supports {VERSION})")
        if flags & ~FLAG_ZLIB:
            raise FormatError(f"unsupported flags 0x{flags:04x}")
        if hlen > MAX_HEADER:
            raise FormatError(f"header too large: {hlen} bytes > {MAX_HEADER}")
        if PREFIX.size + hlen > self.size:
            raise FormatError(f"header length {hlen} out of range for a {self.size}-byte file (truncated?)")
        raw = self._read(PREFIX.size, hlen)
        if zlib.crc32(raw) != hcrc:
            raise FormatError("header checksum mismatch (corrupt file)")
        if flags & FLAG_ZLIB:
            d = zlib.decompressobj()
            try:
                text = d.decompress(raw, MAX_HEADER + 1)
            except zlib.error as exc:
                raise FormatError(f"header does not decompress: {exc}") from exc
            if len(text) > MAX_HEADER:
                raise FormatError(f"header too large: decompresses to more than {MAX_HEADER} bytes")
            if not d.eof or d.unused_data:
                raise FormatError("header compressed stream is truncated or has trailing data")
        else:
            text = bytes(raw)
        try:
            header = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise FormatError(f"header is not valid JSON: {exc}") from exc
        if not isinstance(header, dict) or header.get("format") != "dsz":
            raise FormatError("header is not a dsz header object")
        self.payload_start = PREFIX.size + hlen
        return header

    def _validate(self, max_expansion: float) -> None:
        tensors = self.header.get("tensors")
        if not isinstance(tensors, dict):
            raise FormatError("header 'tensors' must be an object")
        area = self.size - self.payload_start
        regions = []
        budget = max(MIN_BUDGET, int(max_expansion * self.size))
        declared = 0
        for name, e in tensors.items():
            if not isinstance(e, dict):
                raise FormatError(f"tensor {name!r}: entry must be an object")
            if "alias" in e:
                tgt = e["alias"]
                if (set(e) != {"alias"} or not isinstance(tgt, str) or not isinstance(tensors.get(tgt), dict)
                        or "alias" in tensors[tgt]):
                    raise FormatError(f"tensor {name!r}: bad alias {tgt!r}")
                continue
            if not isinstance(e.get("dtype"), str) or e["dtype"] not in DTYPES:
                raise FormatError(f"tensor {name!r}: unsupported dtype {e.get('dtype')!r}")
            shape = e.get("shape")
            if not isinstance(shape, list) or len(shape) > MAX_NDIM:
                raise FormatError(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} sizes")
            numel = 1
            for s in shape:
                numel *= _int(s, f"tensor {name!r} shape entry", 0, 1 << 48)
            declared += numel * torch.empty((), dtype=DTYPES[e["dtype"]]).element_size()
            get_encoding(e.get("encoding"))
            if not isinstance(e.get("params", {}), dict) or not isinstance(e.get("streams"), dict):
                raise FormatError(f"tensor {name!r}: 'params' and 'streams' must be objects")
            for sname, d in e["streams"].items():
                if not isinstance(d, dict):
                    raise FormatError(f"tensor {name!r} stream {sname!r}: descriptor must be an object")
                off = _int(d.get("offset"), f"tensor {name!r} stream {sname!r} offset")
                ln = _int(d.get("length"), f"tensor {name!r} stream {sname!r} length")
                _int(d.get("crc32"), f"tensor {name!r} stream {sname!r} crc32", 0, 0xFFFFFFFF)
                if off + ln > area:
                    raise FormatError(
                        f"tensor {name!r} stream {sname!r}: offset/length out of range "
                        f"([{off}, {off + ln}) beyond the {area}-byte payload area; truncated file?)"
                    )
                if d.get("coder") != "bytes":
                    declared += 8 * _int(d.get("n"), f"tensor {name!r} stream {sname!r} symbol count")
                if ln:
                    regions.append((off, ln))
            if declared > budget:
                raise FormatError(
                    f"declared tensor sizes ({declared} bytes) exceed what a {self.size}-byte file may expand to "
                    f"({budget} bytes; pass max_expansion= to allow more)"
                )
        regions.sort()
        pos = 0
        for off, ln in regions:
            if off != pos:
                raise FormatError(f"payload offset {off} out of range: expected {pos} (overlap or hole)")
            pos += ln
        if pos != area:
            raise FormatError(f"payload area is {area} bytes but streams cover {pos} (trailing or missing data)")

    def names(self) -> list[str]:
        return list(self.header["tensors"])

    def stream_payload(self, name: str, sname: str) -> memoryview:
        d = self.header["tensors"][name]["streams"][sname]
        data = self._read(self.payload_start + d["offset"], d["length"])
        if zlib.crc32(data) != d["crc32"]:
            raise FormatError(f"checksum mismatch in tensor {name!r} stream {sname!r} (corrupt payload)")
        return data

    def tensor(self, name: str) -> torch.Tensor:
        """Decode one tensor (aliases resolve to their target)."""
        e = self.header["tensors"][name]
        if "alias" in e:
            return self.tensor(e["alias"])
        dtype, shape = DTYPES[e["dtype"]], tuple(e["shape"])
        streams: dict[str, Any] = {}
        for sname, d in e["streams"].items():
            payload = self.stream_payload(name, sname)
            if d.get("coder") == "bytes":
                streams[sname] = payload
            else:
                try:
                    streams[sname] = decode_stream(d, payload)
                except FormatError as exc:
                    raise FormatError(f"tensor {name!r} stream {sname!r}: {exc}") from exc
        try:
            out = get_encoding(e["encoding"]).decode(e.get("params", {}), dtype, shape, streams)
        except FormatError as exc:
            raise FormatError(f"tensor {name!r}: {exc}") from exc
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError, MemoryError) as exc:
            raise FormatError(f"tensor {name!r}: cannot decode ({type(exc).__name__}: {exc})") from exc
        if not isinstance(out, torch.Tensor) or out.dtype != dtype or tuple(out.shape) != shape:
            raise FormatError(f"tensor {name!r}: shape mismatch after decoding")
        return out


def _seek_size(fh: BinaryIO) -> int:
    pos = fh.tell()
    size = fh.seek(0, io.SEEK_END)
    fh.seek(pos)
    return size


__all__ = ["MAGIC", "MAX_HEADER", "Reader", "VERSION", "Writer"]
