"""Entropy coders: exact round trips, near-entropy sizes, vectorized Huffman blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepshrink import encode
from deepshrink.encode.coders import (
    decode_stream,
    encode_stream,
    entropy_bits,
    huffman_lengths,
    table_bytes,
)
from deepshrink.errors import FormatError


@pytest.mark.parametrize("coder", ["ans", "huffman", "none", "auto"])
@pytest.mark.parametrize("n", [1, 2, 4095, 4096, 4097, 30000])
@pytest.mark.parametrize("m", [2, 5, 32, 256])
def test_stream_round_trip(coder, n, m):
    rng = np.random.default_rng(n * 1000 + m)
    s = rng.choice(m, size=n, p=rng.dirichlet(np.full(m, 0.3)))
    desc, payload = encode_stream(s, m, coder)
    assert np.array_equal(decode_stream(desc, payload), s)


def test_constant_and_empty_streams_cost_nothing():
    desc, payload = encode_stream(np.full(1000, 3), 8, "ans")
    assert desc["coder"] == "const" and payload == b""
    assert decode_stream(desc, payload).tolist() == [3] * 1000
    desc, payload = encode_stream(np.zeros(0, dtype=np.int64), 8, "huffman")
    assert decode_stream(desc, payload).size == 0


def test_huffman_lengths_are_limited_and_complete():
    counts = np.array([2**i for i in range(30)])  # Fibonacci-like skew gives long codes
    lengths = huffman_lengths(counts, max_len=16)
    assert lengths.max() <= 16
    assert abs(sum(2.0 ** -lengths) - 1.0) < 1e-12  # complete prefix code


def test_ans_within_entropy_on_skewed_stream():
    rng = np.random.default_rng(0)
    s = rng.choice(32, size=200_000, p=rng.dirichlet(np.ones(32) * 0.5))
    desc, payload = encode_stream(s, 32, "ans")
    h = entropy_bits(np.bincount(s, minlength=32))
    assert (len(payload) - table_bytes(desc, payload)) * 8 <= h * 1.005 + 64


def test_auto_picks_smallest():
    rng = np.random.default_rng(1)
    s = rng.choice(4, size=10_000, p=[0.97, 0.01, 0.01, 0.01])
    sizes = {c: len(encode_stream(s, 4, c)[1]) for c in ("ans", "huffman", "none")}
    assert len(encode_stream(s, 4, "auto")[1]) == min(sizes.values())


def test_corrupt_streams_raise_format_error():
    rng = np.random.default_rng(2)
    s = rng.choice(16, size=10_000)
    for coder in ("ans", "huffman", "none"):
        desc, payload = encode_stream(s, 16, coder)
        for bad in (payload[: len(payload) // 2], payload[:-4], payload + b"\0\0\0\0"):
            with pytest.raises(FormatError):
                decode_stream(desc, bad)
        with pytest.raises(FormatError):
            decode_stream({**desc, "n": desc["n"] + 1}, payload)
    with pytest.raises(FormatError):
        decode_stream({"coder": "lzma", "n": 1, "m": 2}, b"")
    with pytest.raises(FormatError):
        decode_stream({"coder": "ans", "n": 1, "m": 1 << 20}, b"")


def test_coded_streams_within_2_percent_of_entropy(clustered_lenet300):
    """Realistic data: 92% sparse, 5-bit clustered LeNet-300-100 (Deep Compression's setting)."""
    s = encode.stats(clustered_lenet300, coder="ans")
    assert s.coded_bits <= 1.02 * s.entropy_bits
    big = [st for t in s.tensors for st in t.streams if st.coder == "ans" and st.symbols > 5000]
    assert big and all(st.coded_bits <= 1.02 * st.entropy_bits for st in big)
    # Huffman is never below the entropy and is within 1 bit/symbol of it
    h = encode.stats(clustered_lenet300, coder="huffman")
    assert h.entropy_bits <= h.coded_bits <= h.entropy_bits + sum(
        st.symbols for t in h.tensors for st in t.streams if st.coder == "huffman")


def test_masked_negative_zeros_count_as_zeros():
    w = torch.randn(200, 100)
    w = w * (torch.rand(200, 100) < 0.05)  # produces -0.0 for masked negative weights
    assert (w.view(torch.int32) == torch.iinfo(torch.int32).min).any()
    m = torch.nn.Linear(100, 200, bias=False)
    with torch.no_grad():
        m.weight.copy_(w)
    s = encode.stats(m)
    assert s.tensors[0].encoding == "sparse" and s.file_bytes < 0.15 * 4 * w.numel()
    out = encode.loads(encode.dumps(m))
    assert torch.equal(out.weight, w)


@pytest.mark.parametrize("coder", ["huffman", "none"])
def test_chunk_boundaries_in_bit_packing(monkeypatch, coder):
    """Packing runs in chunks for big streams; small chunks exercise every boundary case."""
    import deepshrink.encode.bits as bits

    monkeypatch.setattr(bits, "_CHUNK", 997)
    rng = np.random.default_rng(3)
    s = rng.choice(37, size=20_011, p=rng.dirichlet(np.full(37, 0.4)))
    desc, payload = encode_stream(s, 37, coder)
    assert np.array_equal(decode_stream(desc, payload), s)


@pytest.mark.slow
def test_big_stream_round_trip():
    rng = np.random.default_rng(4)
    s = rng.choice(256, size=9_000_000, p=rng.dirichlet(np.full(256, 0.3)))
    for coder in ("ans", "huffman", "none"):
        desc, payload = encode_stream(s, 256, coder)
        assert np.array_equal(decode_stream(desc, payload), s)


def test_count_tables_fixed_and_varint():
    from deepshrink.encode.coders import _pack_counts, _unpack_counts

    for counts in (np.array([3, 0, 255]), np.array([70000, 1, 0, 5, 2**40]), np.array([300] * 5 + [1] * 100)):
        packed = _pack_counts(counts)
        got, used = _unpack_counts(memoryview(packed + b"junk"), len(counts))
        assert got.tolist() == counts.tolist() and used == len(packed)
    assert _pack_counts(np.array([300] * 5 + [1] * 100))[0] == 0  # varint is shorter here
    for bad in (b"", b"\x03\x00", b"\x00\x80\x80", b"\x00" + b"\xff" * 12 + b"\x01", b"\x02\x01"):
        with pytest.raises(FormatError):
            _unpack_counts(memoryview(bad), 2)
