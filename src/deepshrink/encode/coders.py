"""Entropy coders for symbol streams: ANS (via `constriction`), canonical Huffman, fixed width.

A *symbol stream* is a 1-D array of integers in ``[0, m)`` (m = alphabet size, at most
`MAX_ALPHABET`). Each coder turns it into a payload and a small JSON descriptor; decoding needs only
the two. Both entropy coders store the symbol counts in the payload (the "table"), and rebuild the
model from it deterministically: ANS builds `constriction.stream.model.Categorical(counts,
perfect=False)`, Huffman builds its canonical code from the same counts. After decoding, the
histogram of the decoded symbols must equal the stored counts, which catches almost any corruption
that a checksum did not.

Decoding is vectorized: ANS decodes a whole stream in one call into constriction's Rust code;
Huffman streams are cut into blocks of `HUFFMAN_BLOCK` symbols whose start bits are stored, and all
blocks are decoded in lock-step (one table look-up over all blocks per step).

Example:
    >>> import numpy as np
    >>> s = np.array([0, 1, 1, 2, 1, 1, 0, 1])
    >>> desc, payload = encode_stream(s, 3, "huffman")
    >>> decode_stream(desc, payload).tolist() == s.tolist()
    True
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from ..errors import FormatError
from .bits import BitReader, pack_codes, unpack_fixed

MAX_ALPHABET = 1 << 16
HUFFMAN_BLOCK = 4096
HUFFMAN_MAX_LEN = 16
CODERS = ("ans", "huffman", "raw")  # "const" is chosen automatically for one-symbol streams


def entropy_bits(counts: np.ndarray) -> float:
    """Order-0 empirical entropy of a stream with these symbol counts, in bits (total, not per symbol)."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    if n == 0:
        return 0.0
    return float(-(c * np.log2(c / n)).sum())


def raw_width(m: int) -> int:
    """Bits per symbol of the fixed-width code for an alphabet of `m` symbols."""
    return max(1, math.ceil(math.log2(m))) if m > 1 else 1


# ---------------------------------------------------------------------------------------------
# count tables


def _varints(counts: np.ndarray) -> bytes:
    out = bytearray()
    for c in counts.tolist():  # one entry per alphabet symbol (<= 65536), not per coded symbol
        while c >= 0x80:
            out.append((c & 0x7F) | 0x80)
            c >>= 7
        out.append(c)
    return bytes(out)


def _pack_counts(counts: np.ndarray) -> bytes:
    """Count table: a width byte w in {1, 2, 4, 8} then m fixed-width LE counts, or w = 0 then m
    LEB128 varints -- whichever is shorter."""
    top = int(counts.max()) if counts.size else 0
    width = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 4 if top < 1 << 32 else 8
    fixed = bytes([width]) + counts.astype(f"<u{width}").tobytes()
    if width == 1:
        return fixed
    var = b"\0" + _varints(counts)
    return var if len(var) < len(fixed) else fixed


def _unpack_counts(payload: memoryview, m: int) -> tuple[np.ndarray, int]:
    """(counts, bytes used) of the count table at the start of `payload`."""
    if len(payload) < 1:
        raise FormatError("stream underflow: missing symbol count table")
    width = payload[0]
    if width == 0:
        b = np.frombuffer(payload[1 : 1 + 9 * m], dtype=np.uint8)
        term = np.flatnonzero(b < 0x80)
        if len(term) < m:
            raise FormatError("stream underflow: symbol count table is truncated")
        term = term[:m]
        starts = np.concatenate([[0], term[:-1] + 1])
        lens = term - starts + 1
        if int(lens.max()) > 9:
            raise FormatError("bad symbol count table: varint longer than 9 bytes")
        used = int(term[-1]) + 1
        shifts = (np.arange(used) - np.repeat(starts, lens)) * 7
        vals = (b[:used].astype(np.uint64) & np.uint64(0x7F)) << shifts.astype(np.uint64)
        counts = np.add.reduceat(vals, starts).astype(np.int64)
        end = 1 + used
    elif width in (1, 2, 4, 8):
        end = 1 + width * m
        if end > len(payload):
            raise FormatError("stream underflow: symbol count table is truncated")
        counts = np.frombuffer(payload[1:end], dtype=f"<u{width}").astype(np.int64)
    else:
        raise FormatError(f"bad symbol count table width {width}")
    if (counts < 0).any():
        raise FormatError("bad symbol count table: count out of range")
    return counts, end


def table_bytes(desc: dict, payload: bytes | memoryview) -> int:
    """Bytes of a stream's side information (count table, Huffman block offsets)."""
    if desc.get("coder") not in ("ans", "huffman"):
        return 0
    _, end = _unpack_counts(memoryview(payload), desc["m"])
    if desc["coder"] == "huffman":
        end += 8 * ((desc["n"] - 1) // HUFFMAN_BLOCK)
    return end


# ---------------------------------------------------------------------------------------------
# Huffman


def huffman_lengths(counts: np.ndarray, max_len: int = HUFFMAN_MAX_LEN) -> np.ndarray:
    """Code length per symbol of a Huffman code for `counts` (0 for unused symbols), at most `max_len`.

    Deterministic (ties broken by symbol order), so encoder and decoder derive the same code.
    Over-long codes are avoided by halving the counts until the longest code fits.
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    weights = counts[used].copy()
    while True:
        k = len(used)
        parent = np.zeros(2 * k - 1, dtype=np.int64)
        heap = [(int(w), i) for i, w in enumerate(weights)]
        heapq.heapify(heap)
        nxt = k
        while len(heap) > 1:
            w1, a = heapq.heappop(heap)
            w2, b = heapq.heappop(heap)
            parent[a] = parent[b] = nxt
            heapq.heappush(heap, (w1 + w2, nxt))
            nxt += 1
        depth = np.zeros(2 * k - 1, dtype=np.int64)
        for node in range(2 * k - 3, -1, -1):  # internal nodes are created after their children
            depth[node] = depth[parent[node]] + 1
        if depth[:k].max() <= max_len:
            lengths[used] = depth[:k]
            return lengths
        weights = np.maximum(1, weights >> 1)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman code values for the given code lengths (symbols sorted by length, then value)."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    code = 0
    prev = 0
    for s in order:
        ln = int(lengths[s])
        if ln == 0:
            continue
        code <<= ln - prev
        codes[s] = code
        code += 1
        prev = ln
    return codes


def _huffman_encode(symbols: np.ndarray, counts: np.ndarray) -> bytes:
    lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    ln = lengths[symbols]
    bits, _ = pack_codes(codes[symbols], ln)
    n = len(symbols)
    starts = np.cumsum(ln)[HUFFMAN_BLOCK - 1 : n - 1 : HUFFMAN_BLOCK]  # start bit of blocks 1..
    return _pack_counts(counts) + starts.astype("<u8").tobytes() + bits


def _huffman_decode(payload: memoryview, n: int, m: int) -> np.ndarray:
    counts, pos = _unpack_counts(payload, m)
    if int(counts.sum()) != n:
        raise FormatError(f"symbol counts sum to {int(counts.sum())}, stream declares {n} symbols")
    nblocks = (n + HUFFMAN_BLOCK - 1) // HUFFMAN_BLOCK
    end = pos + 8 * (nblocks - 1)
    if end > len(payload):
        raise FormatError("stream underflow: Huffman block table is truncated")
    starts = np.frombuffer(payload[pos:end], dtype="<u8").astype(np.int64)
    bits = payload[end:]
    nbits = len(bits) * 8
    starts = np.concatenate([[0], starts])
    if (np.diff(starts) < 0).any() or starts[-1] > nbits:
        raise FormatError("Huffman block offset out of range")
    lengths = huffman_lengths(counts)
    codes = canonical_codes(lengths)
    top = int(lengths.max())
    table_sym = np.zeros(1 << top, dtype=np.int64)
    table_len = np.zeros(1 << top, dtype=np.int64)
    used = np.flatnonzero(lengths)
    span = 1 << (top - lengths[used])
    first = codes[used] << (top - lengths[used])
    idx = np.repeat(first, span) + (np.arange(span.sum()) - np.repeat(np.cumsum(span) - span, span))
    table_sym[idx] = np.repeat(used, span)
    table_len[idx] = np.repeat(lengths[used], span)
    reader = BitReader(bits)
    out = np.empty((nblocks, HUFFMAN_BLOCK), dtype=np.int64)
    cur = starts.copy()
    last_len = n - (nblocks - 1) * HUFFMAN_BLOCK
    last_end = 0
    for i in range(HUFFMAN_BLOCK):  # lock-step over all blocks: one vectorized step per position
        w = reader.window(cur, top)
        out[:, i] = table_sym[w]
        cur += table_len[w]
        if i == last_len - 1:
            last_end = int(cur[-1])
            if nblocks == 1:
                break
    if (cur[:-1] != starts[1:]).any() or last_end > nbits or nbits - last_end >= 8:
        raise FormatError("stream underflow: Huffman blocks do not end where the next one starts")
    return out.reshape(-1)[:n]


# ---------------------------------------------------------------------------------------------
# ANS (constriction)


def _ans_model(counts: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(counts.astype(np.float64), perfect=False)


def _ans_encode(symbols: np.ndarray, counts: np.ndarray) -> bytes:
    import constriction

    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols.astype(np.int32), _ans_model(counts))
    return _pack_counts(counts) + coder.get_compressed().astype("<u4").tobytes()


def _ans_decode(payload: memoryview, n: int, m: int) -> np.ndarray:
    import constriction

    counts, pos = _unpack_counts(payload, m)
    if int(counts.sum()) != n:
        raise FormatError(f"symbol counts sum to {int(counts.sum())}, stream declares {n} symbols")
    body = payload[pos:]
    if len(body) % 4:
        raise FormatError("ANS stream length is not a multiple of 4 bytes")
    words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        out = coder.decode(_ans_model(counts), n)
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise FormatError(f"corrupt ANS stream: {exc}") from exc
    if not coder.is_empty():
        raise FormatError("stream underflow: ANS stream not fully consumed (truncated or corrupt)")
    return out.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# public entry points


def estimate_size(counts: np.ndarray, coder: str) -> int:
    """Payload bytes `encode_stream` would produce for a stream with these counts (ANS: estimate)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    m = len(counts)
    if n == 0 or np.count_nonzero(counts) <= 1:
        return 0
    if coder == "raw":
        return (n * raw_width(m) + 7) // 8
    table = len(_pack_counts(counts))
    if coder == "huffman":
        bits = int((counts * huffman_lengths(counts)).sum())
        return table + 8 * ((n - 1) // HUFFMAN_BLOCK) + (bits + 7) // 8
    if coder == "ans":
        return table + 4 * (math.ceil(entropy_bits(counts) * 1.0005 / 32) + 2)
    raise ValueError(f"unknown coder {coder!r}")


def choose_coder(counts: np.ndarray, coder: str = "auto") -> str:
    """The coder to use: "const" for streams with < 2 distinct symbols, else `coder` or the smallest."""
    if np.count_nonzero(counts) <= 1:
        return "const"
    if coder == "auto":
        return min(CODERS, key=lambda c: (estimate_size(counts, c), CODERS.index(c)))
    if coder == "none":
        return "raw"
    return coder


def encode_stream(symbols: np.ndarray, m: int, coder: str = "auto") -> tuple[dict, bytes]:
    """Encode integer `symbols` in ``[0, m)``; returns (JSON descriptor, payload bytes).

    `coder` is "auto" (smallest of ANS / Huffman / fixed width), "ans", "huffman" or "none" (fixed
    width, ceil(log2 m) bits per symbol).
    """
    symbols = np.asarray(symbols).reshape(-1).astype(np.int64, copy=False)
    if not 1 <= m <= MAX_ALPHABET:
        raise ValueError(f"alphabet size {m} out of range 1..{MAX_ALPHABET}")
    n = len(symbols)
    counts = np.bincount(symbols, minlength=m) if n else np.zeros(m, dtype=np.int64)
    if len(counts) != m:
        raise ValueError(f"symbol out of range for alphabet size {m}")
    chosen = choose_coder(counts, coder)
    if coder == "auto" and chosen != "const":  # exact sizes: ANS encoded, Huffman/raw computed
        ans = _ans_encode(symbols, counts)
        sizes = {"ans": len(ans), "huffman": estimate_size(counts, "huffman"), "raw": estimate_size(counts, "raw")}
        chosen = min(CODERS, key=lambda c: (sizes[c], CODERS.index(c)))
        if chosen == "ans":
            return {"coder": "ans", "n": n, "m": m}, ans
    desc: dict = {"coder": chosen, "n": n, "m": m}
    if chosen == "const":
        desc["sym"] = int(symbols[0]) if n else 0
        return desc, b""
    if chosen == "raw":
        w = raw_width(m)
        data, _ = pack_codes(symbols, np.full(n, w, dtype=np.int64))
        return desc, data
    if chosen == "huffman":
        return desc, _huffman_encode(symbols, counts)
    if chosen == "ans":
        return desc, _ans_encode(symbols, counts)
    raise ValueError(f"unknown coder {coder!r}; use 'auto', 'ans', 'huffman' or 'none'")


def check_descriptor(desc: dict) -> tuple[str, int, int]:
    """Validate a stream descriptor's coder, symbol count and alphabet; returns them."""
    coder, n, m = desc.get("coder"), desc.get("n"), desc.get("m")
    if coder not in (*CODERS, "const"):
        raise FormatError(f"unknown stream coder {coder!r}")
    for key, v in (("n", n), ("m", m)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise FormatError(f"stream field {key!r} must be a non-negative integer, got {v!r}")
    if not 1 <= m <= MAX_ALPHABET:
        raise FormatError(f"stream alphabet size {m} out of range 1..{MAX_ALPHABET}")
    return coder, n, m


def decode_stream(desc: dict, payload: bytes | memoryview) -> np.ndarray:
    """Decode a stream from its descriptor and payload into int64 symbols; `FormatError` if corrupt.

    The caller bounds ``desc["n"]`` (the output size) before calling.
    """
    coder, n, m = check_descriptor(desc)
    payload = memoryview(payload)
    if coder == "const":
        sym = desc.get("sym")
        if not isinstance(sym, int) or isinstance(sym, bool) or not 0 <= sym < m:
            raise FormatError(f"constant stream symbol {sym!r} out of range")
        if len(payload):
            raise FormatError("constant stream has a non-empty payload")
        return np.full(n, sym, dtype=np.int64)
    if n == 0:
        raise FormatError(f"empty stream cannot use coder {coder!r}")
    if coder == "raw":
        w = raw_width(m)
        want = (n * w + 7) // 8
        if len(payload) < want:
            raise FormatError(f"stream underflow: fixed-width stream has {len(payload)} bytes, needs {want}")
        if len(payload) > want:
            raise FormatError(f"fixed-width stream has {len(payload) - want} bytes of trailing data")
        out = unpack_fixed(payload, w, n)
        if n and int(out.max()) >= m:
            raise FormatError("fixed-width stream holds a symbol outside its alphabet")
        return out
    out = _huffman_decode(payload, n, m) if coder == "huffman" else _ans_decode(payload, n, m)
    counts, _ = _unpack_counts(payload, m)
    if not np.array_equal(np.bincount(out, minlength=m), counts):
        raise FormatError("corrupt stream: decoded symbols do not match the stored symbol counts")
    return out


def stream_counts(desc: dict, payload: bytes | memoryview) -> np.ndarray:
    """Symbol counts of a stream (read from its table, or by decoding a fixed-width stream)."""
    coder, n, m = check_descriptor(desc)
    if coder in ("ans", "huffman"):
        return _unpack_counts(memoryview(payload), m)[0]
    return np.bincount(decode_stream(desc, payload), minlength=m)
