"""Vectorized bit I/O: pack variable-length MSB-first codes, and read fixed-size bit windows.

No Python loop runs per symbol: codes are OR-ed into 32-bit words with `np.bincount` (the codes of
different symbols never share a bit, so a weighted sum per word is an exact OR), and windows are
read by gathering precomputed big-endian 32-bit words at arbitrary bit positions.

Example:
    >>> import numpy as np
    >>> data, nbits = pack_codes(np.array([1, 0, 3]), np.array([1, 1, 2]))
    >>> nbits, data.hex()
    (4, 'b0')
    >>> r = BitReader(data)
    >>> r.window(np.array([0, 2]), 2).tolist()
    [2, 3]
"""

from __future__ import annotations

import numpy as np

# Symbols are packed in chunks so that temporary arrays stay small for 100M-symbol streams.
_CHUNK = 1 << 22


def pack_codes(codes: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Concatenate `codes[i]` written on `lengths[i]` bits (1..24, MSB first) into bytes.

    Returns:
        (bytes, total number of bits); the last byte is zero-padded.
    """
    codes = np.asarray(codes, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = codes.shape[0]
    if n == 0:
        return b"", 0
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    nwords = (total + 31) // 32 + 1
    words = np.zeros(nwords, dtype=np.uint32)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        ln = lengths[lo:hi]
        cd = codes[lo:hi]
        pos = ends[lo:hi] - ln
        w = pos >> 5
        shift = pos & 31
        spill = shift + ln - 32  # > 0 when the code crosses into the next word
        first = np.where(spill > 0, cd >> np.maximum(spill, 0), cd << np.maximum(-spill, 0))
        w0 = int(w[0])
        span = int(w[-1]) - w0 + 2
        acc = np.bincount(w - w0, weights=first.astype(np.float64), minlength=span)
        sp = spill > 0
        if sp.any():
            second = (cd[sp] & ((1 << spill[sp]) - 1)) << (32 - spill[sp])
            acc += np.bincount(w[sp] - w0 + 1, weights=second.astype(np.float64), minlength=span)
        words[w0 : w0 + span] |= acc[:span].astype(np.uint64).astype(np.uint32)
    data = words.astype(">u4").tobytes()[: (total + 7) // 8]
    return data, total


class BitReader:
    """Reads `k`-bit windows (k <= 25) starting at arbitrary bit positions of a byte buffer.

    Positions past the end read zero bits (the buffer is padded), so a corrupt stream can never
    index outside the array; callers check where decoding ended instead.
    """

    def __init__(self, data: bytes | memoryview | np.ndarray):
        b = np.frombuffer(data, dtype=np.uint8)
        b = np.concatenate([b, np.zeros(8, dtype=np.uint8)]).astype(np.uint32)
        self._words = (b[:-3] << 24) | (b[1:-2] << 16) | (b[2:-1] << 8) | b[3:]
        self.nbits = (len(b) - 8) * 8
        self._last = len(self._words) - 1

    def window(self, pos: np.ndarray, k: int) -> np.ndarray:
        """The `k` bits at each bit position of `pos`, as integers (MSB first)."""
        pos = np.asarray(pos, dtype=np.int64)
        byte = np.minimum(pos >> 3, self._last)
        w = self._words[byte]
        return ((w >> (32 - k - (pos & 7)).astype(np.uint32)) & np.uint32((1 << k) - 1)).astype(np.int64)


def unpack_fixed(data: bytes | memoryview, width: int, count: int) -> np.ndarray:
    """Read `count` unsigned integers of `width` bits (1..24) packed MSB first."""
    out = np.empty(count, dtype=np.int64)
    reader = BitReader(data)
    for lo in range(0, count, _CHUNK):
        hi = min(count, lo + _CHUNK)
        out[lo:hi] = reader.window(np.arange(lo, hi, dtype=np.int64) * width, width)
    return out
