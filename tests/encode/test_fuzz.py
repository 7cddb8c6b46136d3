"""Bad input: truncated, bit-flipped and hostile .dsz files always raise FormatError, never crash."""

from __future__ import annotations

import functools
import json
import os
import struct
import zlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from deepshrink import encode
from deepshrink.encode.container import MAGIC, PREFIX, Reader
from deepshrink.errors import FormatError

FUZZ = settings(max_examples=int(os.environ.get("DSZ_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10), nn.LayerNorm(10))
    with torch.no_grad():
        w = m[0].weight
        w.mul_(torch.rand_like(w) < 0.1)  # sparse, > 256 values
        w[:5] = 0
        w[:, :20] = 0  # empty rows and columns: the compact sparse layout
        m[2].weight.copy_(torch.tensor([0.5, -0.25, 0.0, 1.0])[torch.randint(0, 4, (10, 48))])  # codebook
    return m


@functools.lru_cache(maxsize=1)
def _files() -> dict[str, bytes]:
    m = _model()
    return {c: encode.dumps(m, coder=c) for c in ("auto", "huffman", "none")}


@pytest.fixture
def files() -> dict[str, bytes]:
    return _files()


def _parts(data: bytes) -> tuple[dict, bytes]:
    r = Reader(data)
    return r.header, data[r.payload_start :]


def _assemble(header: dict, payload: bytes, *, version: int = 1, flags: int = 0) -> bytes:
    raw = json.dumps(header).encode()
    return PREFIX.pack(MAGIC, version, flags, len(raw), zlib.crc32(raw)) + raw + payload


def _load_expect_format_error_or_ok(data: bytes) -> None:
    try:
        encode.loads(data)
    except FormatError:
        pass


def test_real_file_loads(files):
    for data in files.values():
        x = torch.randn(3, 64)
        assert torch.equal(encode.loads(data)(x), _model()(x))


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10**6), which=st.sampled_from(["auto", "huffman", "none"]))
def test_truncated(cut, which):
    files = _files()
    data = files[which]
    cut %= len(data)
    with pytest.raises(FormatError):
        encode.loads(data[:cut])


@FUZZ
@given(flips=st.lists(st.integers(min_value=0, max_value=10**7), min_size=1, max_size=8),
       which=st.sampled_from(["auto", "huffman", "none"]))
def test_bit_flips(flips, which):
    files = _files()
    data = bytearray(files[which])
    for f in flips:
        f %= len(data) * 8
        data[f // 8] ^= 1 << (f % 8)
    if bytes(data) == files[which]:
        return  # flips cancelled out
    with pytest.raises(FormatError):
        encode.loads(bytes(data))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@FUZZ
@given(data=st.data(), which=st.sampled_from(["auto", "huffman"]))
def test_hostile_header_values(data, which):
    files = _files()
    """Random values at random places of a header with a valid checksum: FormatError or a clean load."""
    header, payload = _parts(files[which])
    paths = [p for p in _paths(header) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        obj = header
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = data.draw(_json)
        paths = [p for p in _paths(header) if p]
    _load_expect_format_error_or_ok(_assemble(header, payload))


@FUZZ
@given(data=st.data())
def test_hostile_payload_with_valid_checksums(data):
    files = _files()
    """Garbage inside a stream whose CRC was fixed up: decoders must still fail cleanly."""
    header, payload = _parts(files["huffman"])
    payload = bytearray(payload)
    streams = [(t, s) for t, e in header["tensors"].items() for s, d in e.get("streams", {}).items() if d["length"]]
    t, s = data.draw(st.sampled_from(streams))
    d = header["tensors"][t]["streams"][s]
    for _ in range(data.draw(st.integers(1, 4))):
        i = d["offset"] + data.draw(st.integers(0, d["length"] - 1))
        payload[i] = data.draw(st.integers(0, 255))
    d["crc32"] = zlib.crc32(payload[d["offset"] : d["offset"] + d["length"]])
    _load_expect_format_error_or_ok(_assemble(header, bytes(payload)))


@pytest.mark.parametrize(
    "mutate, cause",
    [
        (lambda h: h["tensors"]["0.weight"].__setitem__("shape", [2**40]), "exceed"),
        (lambda h: h["tensors"]["0.weight"].__setitem__("shape", [64, 47]), "mismatch|out of range"),
        (lambda h: next(iter(h["tensors"]["0.weight"]["streams"].values())).__setitem__("n", 2**40), "exceed"),
        (lambda h: next(iter(h["tensors"]["0.weight"]["streams"].values())).__setitem__("length", 2**60), "out of range"),
        (lambda h: next(iter(h["tensors"]["0.bias"]["streams"].values())).__setitem__("offset", 3), "out of range|overlap"),
        (lambda h: h["tensors"]["0.weight"].__setitem__("encoding", "pickle"), "unknown tensor encoding"),
        (lambda h: h["tensors"]["0.weight"].__setitem__("dtype", "object"), "unsupported dtype"),
        (lambda h: h["architecture"].__setitem__("type", "os.system"), "unknown layer type"),
        (lambda h: h["architecture"]["children"]["0"].__setitem__("type", "builtins.eval"), "unknown layer type"),
        (lambda h: h["architecture"]["children"]["0"]["args"].__setitem__("in_features", -5), "cannot rebuild"),
        (lambda h: h["tensors"].__setitem__("0.weight", {"alias": "nope"}), "alias"),
    ],
)
def test_hostile_headers_name_the_cause(files, mutate, cause):
    header, payload = _parts(files["auto"])
    mutate(header)
    with pytest.raises(FormatError, match=cause):
        encode.loads(_assemble(header, payload))


def test_prefix_errors_name_the_cause(files):
    data = files["auto"]
    with pytest.raises(FormatError, match="bad magic"):
        encode.loads(b"PK\x03\x04" + data[4:])
    with pytest.raises(FormatError, match="unsupported version"):
        encode.loads(data[:8] + struct.pack("<H", 9) + data[10:])
    with pytest.raises(FormatError, match="header too large"):
        encode.loads(data[:12] + struct.pack("<I", 2**31) + data[16:])
    with pytest.raises(FormatError, match="truncated"):
        encode.loads(data[:10])
    with pytest.raises(FormatError, match="checksum"):
        encode.loads(data[:-1] + bytes([data[-1] ^ 1]))
    raw = b"[" * 100000 + b"]" * 100000  # nesting that overflows a recursive parser
    with pytest.raises(FormatError, match="not valid JSON"):
        encode.loads(PREFIX.pack(MAGIC, 1, 0, len(raw), zlib.crc32(raw)) + raw)


def test_zip_bomb_header_refused():
    raw = zlib.compress(b" " * (20 << 20), 9)
    data = PREFIX.pack(MAGIC, 1, 1, len(raw), zlib.crc32(raw)) + raw
    with pytest.raises(FormatError, match="header too large"):
        encode.loads(data)
