"""Bit packing: unsigned integers of any width in a little-endian bit stream, and digits of
any base packed several to a group (three-valued indices at 1.6 bits each, not 2).

Every format that stores indices, gaps or codes goes through these four functions.
"""
from __future__ import annotations

import numpy as np

from .formats import CodecError


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers < 2**bits into a little-endian bit stream, ceil(n*bits/8) bytes."""
    values = np.asarray(values, dtype=np.uint32)
    if bits < 1 or bits > 32 or (values.size and values.max() >> bits if bits < 32 else False):
        raise ValueError(f"values do not fit in bits={bits} (allowed 1..32)")
    planes = (values[:, None] >> np.arange(bits, dtype=np.uint32)) & 1   # (n, bits), LSB first
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``count`` unsigned integers of ``bits`` bits."""
    needed = -(-count * bits // 8)
    if len(data) < needed:
        raise CodecError(f"truncated bit stream: {count} values of {bits} bits need {needed} "
                         f"bytes, got {len(data)}")
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:count * bits]
    planes = flat.reshape(count, bits).astype(np.uint32)
    return (planes << np.arange(bits, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


def radix_group(k: int) -> tuple[int, int]:
    """(digits per group, bits per group) that pack base-``k`` digits most tightly.

    ``g`` digits of ``k`` symbols take ``ceil(g * log2 k)`` bits when stored as one number
    ``d0 + d1 k + d2 k^2 ...``. For a power of two that is exactly log2 k bits a digit; for
    k = 3 five digits fit one byte (1.6 bits each, not 2), for k = 5 three fit 7 bits.
    Groups are kept within 32 bits.
    """
    if not 1 <= k <= 2 ** 32:
        raise ValueError(f"k={k} symbols; allowed 1 to 2**32")
    if k == 1:                   # one symbol carries no information: 32 of them in one bit
        return 32, 1
    best = None
    for g in range(1, 33):
        bits = int(np.ceil(g * np.log2(k) - 1e-9))
        if bits > 32:
            break
        if best is None or bits * best[0] < best[1] * g:
            best = g, bits
    return best


def pack_symbols(symbols: np.ndarray, k: int) -> bytes:
    """Pack integers in [0, k) with ``radix_group(k)`` (see there)."""
    g, bits = radix_group(k)
    symbols = np.asarray(symbols)
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= k):
        raise ValueError(f"symbols must be in [0, {k}); got {symbols.min()}..{symbols.max()}")
    padded = np.zeros(-(-len(symbols) // g) * g, dtype=np.uint64)
    padded[:len(symbols)] = symbols
    weights = np.uint64(k) ** np.arange(g, dtype=np.uint64)
    return pack_bits((padded.reshape(-1, g) * weights).sum(axis=1), bits)


def unpack_symbols(data: bytes, k: int, count: int) -> np.ndarray:
    """Inverse of ``pack_symbols``: ``count`` integers in [0, k)."""
    g, bits = radix_group(k)
    groups = unpack_bits(data, bits, -(-count // g)).astype(np.uint64)
    if len(groups) and int(groups.max()) >= k ** g:
        raise CodecError(f"corrupt packed indices: a group of {g} indices reads "
                         f"{int(groups.max())}, beyond the {k}**{g} possible")
    digits = (groups[:, None] // (np.uint64(k) ** np.arange(g, dtype=np.uint64))) % np.uint64(k)
    return digits.ravel()[:count].astype(np.int64)
