"""Bit-packed .dsz encodings for low-bit weights, registered with `deepshrink.encode`.

- ``binary_rows``: every output row holds exactly {-a_i, +a_i} (XNOR / LAB / BinaryConnect weights):
  the signs bit-packed (1 bit per weight, ``np.packbits``) plus one fp32 scale per row. A binarized
  fp32 weight matrix becomes ~32x smaller.
- ``fixed_rows``: every row is `q * s_i` with small integers q (|q| <= 127) and one fp32 scale per
  row (`lowbit.fixed_point` output): the integers as an entropy-coded symbol stream (at most k bits
  each for k-bit weights), plus the scales.

Both are exact: the encoder decodes its own output and declines (returns None) unless the result is
bit-identical, so the automatic smallest-size choice can never lose information. Ternary weights
(3 distinct values) are already stored at <= 1.6 bits/weight by the built-in ``codebook`` encoding.

Import this module before `deepshrink.encode.save/load` (importing `deepshrink.quantize.lowbit`
or `.pq` does it).

Example:
    >>> import torch
    >>> from deepshrink.encode.encodings import encode_tensor
    >>> from deepshrink.quantize.lowbit import binary_weight
    >>> name, enc = encode_tensor(binary_weight(torch.randn(64, 256)), encoding="binary_rows")
    >>> len(enc.streams["signs"])
    2048
"""

from __future__ import annotations

import numpy as np
import torch

from ...encode.encodings import Encoded, Symbols, register_encoding
from ...errors import FormatError

MAX_ROWS = 1 << 24


def _rows_of(t: torch.Tensor) -> torch.Tensor | None:
    if t.dtype != torch.float32 or t.dim() < 2 or t.numel() == 0 or t.shape[0] > MAX_ROWS:
        return None
    return t.detach().reshape(t.shape[0], -1)


def encode_binary_rows(t: torch.Tensor, *, coder: str = "auto", **_: object) -> Encoded | None:
    rows = _rows_of(t)
    if rows is None:
        return None
    alpha = rows.abs().amax(1)
    if not bool((rows.abs() == alpha[:, None]).all()):
        return None
    signs = ~torch.signbit(rows)  # 1 = positive (or +0.0), 0 = negative (or -0.0)
    packed = np.packbits(signs.reshape(-1).numpy().astype(np.uint8))
    enc = Encoded(params={"rows": int(rows.shape[0])},
                  streams={"signs": packed.tobytes(), "scales": alpha.numpy().astype("<f4").tobytes()})
    back = decode_binary_rows(enc.params, t.dtype, tuple(t.shape),
                              {k: memoryview(v) for k, v in enc.streams.items()})
    if not torch.equal(back.view(torch.int32), t.detach().contiguous().view(torch.int32)):
        return None
    return enc


def decode_binary_rows(params: dict, dtype: torch.dtype, shape: tuple, streams: dict) -> torch.Tensor:
    rows = params.get("rows")
    numel = int(np.prod(shape)) if shape else 1
    if dtype != torch.float32 or not isinstance(rows, int) or rows <= 0 or not shape or shape[0] != rows:
        raise FormatError("binary_rows: inconsistent dtype/shape/rows")
    scales_b, signs_b = streams.get("scales"), streams.get("signs")
    if scales_b is None or signs_b is None:
        raise FormatError("binary_rows: missing 'signs' or 'scales' stream")
    if len(scales_b) != 4 * rows or len(signs_b) != (numel + 7) // 8:
        raise FormatError("binary_rows: stream lengths do not match the shape")
    scales = torch.from_numpy(np.frombuffer(scales_b, dtype="<f4").astype(np.float32))
    bits = np.unpackbits(np.frombuffer(signs_b, dtype=np.uint8), count=numel)
    s = torch.from_numpy(bits.astype(np.float32) * 2 - 1).reshape(rows, -1)
    return (s * scales[:, None]).reshape(shape)


def encode_fixed_rows(t: torch.Tensor, *, coder: str = "auto", **_: object) -> Encoded | None:
    rows = _rows_of(t)
    if rows is None:
        return None
    amax = rows.abs().amax(1)
    if bool((amax == 0).any()):
        return None
    for bits in (2, 3, 4, 5, 6, 7, 8):
        qmax = 2 ** (bits - 1) - 1
        base = (amax / qmax).to(torch.float32)
        # the row's true scale may differ from amax/qmax in the last bit: try the neighbours too
        cands = [base, torch.nextafter(base, torch.full_like(base, np.inf)),
                 torch.nextafter(base, torch.zeros_like(base))]
        scale, ok = base.clone(), torch.zeros_like(base, dtype=torch.bool)
        q = torch.zeros_like(rows)
        for c in cands:
            qc = torch.round(rows / c[:, None])
            good = (qc.abs() <= qmax).all(1) & (qc * c[:, None] == rows).all(1) & ~ok
            scale = torch.where(good, c, scale)
            q = torch.where(good[:, None], qc, q)
            ok |= good
        if bool(ok.all()):
            sym = (q + qmax).to(torch.int64).reshape(-1).numpy()
            return Encoded(params={"rows": int(rows.shape[0]), "bits": bits},
                           streams={"q": Symbols(sym, 2 * qmax + 1),
                                    "scales": scale.numpy().astype("<f4").tobytes()})
    return None


def decode_fixed_rows(params: dict, dtype: torch.dtype, shape: tuple, streams: dict) -> torch.Tensor:
    rows, bits = params.get("rows"), params.get("bits")
    numel = int(np.prod(shape)) if shape else 1
    if (dtype != torch.float32 or not isinstance(rows, int) or not isinstance(bits, int) or not 2 <= bits <= 8
            or not shape or shape[0] != rows):
        raise FormatError("fixed_rows: inconsistent dtype/shape/rows/bits")
    q, scales_b = streams.get("q"), streams.get("scales")
    if q is None or scales_b is None or len(q) != numel or len(scales_b) != 4 * rows:
        raise FormatError("fixed_rows: stream lengths do not match the shape")
    qmax = 2 ** (bits - 1) - 1
    q = np.asarray(q)
    if len(q) and (int(q.min()) < 0 or int(q.max()) > 2 * qmax):
        raise FormatError("fixed_rows: symbol out of range")
    scale = torch.from_numpy(np.frombuffer(scales_b, dtype="<f4").astype(np.float32))
    qt = torch.from_numpy(q.astype(np.float32) - qmax).reshape(rows, -1)
    return (qt * scale[:, None]).reshape(shape)


register_encoding("binary_rows", encode=encode_binary_rows, decode=decode_binary_rows, auto=True)
register_encoding("fixed_rows", encode=encode_fixed_rows, decode=decode_fixed_rows, auto=True)
