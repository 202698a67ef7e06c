"""Canonical Huffman coding of integer symbol streams (Huffman 1952), with the Shannon bound.

Deep Compression's last stage (Han et al. 2016, section 4) Huffman-codes two streams per layer:
the codebook index of every kept weight and the relative position (gap) of every kept weight.
Both are far from uniform (small gaps and the centroids near zero are frequent), so a
variable-length code beats a fixed log2(k) bits.

A *canonical* code is fixed by its code lengths alone: symbols sorted by (length, symbol) take
consecutive codes. So the file stores only one length per symbol of the alphabet (the code
table), and encoder and decoder rebuild the same codes from it.

``encode(symbols, alphabet) -> (table bytes, stream bytes, stream bits)`` and
``decode(table, stream, count)``; ``entropy_bits(symbols)`` is the bound no code of one symbol
at a time can beat (n x H), and a Huffman code is within n bits of it.
"""
from __future__ import annotations

import heapq

import numpy as np

MAX_LENGTH = 255          # code lengths are stored as one byte each


class HuffmanError(ValueError):
    """A code table or bit stream that cannot be decoded."""


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Length of the Huffman code of each symbol (0 for symbols that never occur).

    Repeatedly merge the two least frequent subtrees (Huffman 1952); every merge puts the
    symbols of both one level deeper. Ties are broken by a running id, so the result is
    deterministic. A stream of one distinct symbol gets a 1-bit code.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.zeros(len(counts), dtype=np.int64)
    heap = [(int(c), i, [i]) for i, c in enumerate(counts) if c > 0]
    if len(heap) == 1:
        lengths[heap[0][2]] = 1
        return lengths
    heapq.heapify(heap)
    next_id = len(counts)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1
        heapq.heappush(heap, (c1 + c2, next_id, s1 + s2))
        next_id += 1
    if lengths.max(initial=0) > MAX_LENGTH:
        raise HuffmanError(f"a code of {lengths.max()} bits; at most {MAX_LENGTH} are stored")
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol from the lengths alone (0 where the length is 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=object)      # Python ints: codes may exceed 64 bits
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        codes[symbol], previous = code, int(lengths[symbol])
        code += 1
    return codes


def check_lengths(lengths: np.ndarray) -> None:
    """A table from a file must describe a complete prefix code (Kraft sum exactly 1)."""
    used = lengths[lengths > 0].astype(object)
    kraft = sum(2 ** (MAX_LENGTH - int(n)) for n in used)
    if len(used) == 1 and used[0] == 1:
        return
    if kraft != 2 ** MAX_LENGTH:
        raise HuffmanError("corrupt code table: the code lengths do not form a complete "
                           "prefix code")


def encode(symbols: np.ndarray, alphabet: int) -> tuple[bytes, bytes, int]:
    """(code table, bit stream, number of stream bits) of ``symbols`` in [0, alphabet)."""
    symbols = np.asarray(symbols)
    if symbols.size and not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(f"symbols must be integers; got {symbols.dtype}")
    symbols = symbols.astype(np.int64)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must be in [0, {alphabet}); got {symbols.min()}..{symbols.max()}")
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = canonical_codes(lengths)
    bits = _code_bits(codes[symbols], lengths[symbols])
    return lengths.astype(np.uint8).tobytes(), np.packbits(bits).tobytes(), len(bits)


def _code_bits(codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The codes' bits, most significant first, concatenated."""
    if not len(codes):
        return np.zeros(0, dtype=np.uint8)
    width = int(lengths.max())
    if width <= 62:
        shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
        matrix = (codes.astype(np.int64)[:, None] >> shifts) & 1
        # right-align each code in the matrix, then keep only its own ``length`` bits
        keep = np.arange(width)[None, :] >= (width - lengths)[:, None]
        return matrix[keep].astype(np.uint8)
    text = "".join(format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths))
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")


def decode(table: bytes, stream: bytes, count: int, bits: int | None = None) -> np.ndarray:
    """``count`` symbols from a code table and bit stream made by ``encode``; ``bits``, when
    given, is where the stream must end (what the file's header says), only zeros after it."""
    if count < 0:
        raise ValueError(f"count={count}; allowed: 0 or more symbols")
    lengths = np.frombuffer(table, dtype=np.uint8).astype(np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    check_lengths(lengths)
    codes = canonical_codes(lengths)
    lookup = {(int(lengths[s]), codes[s]): s for s in np.flatnonzero(lengths)}
    stream_bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8)).tolist()
    out, code, length, used = [], 0, 0, 0
    longest = int(lengths.max())
    for bit in stream_bits:
        code, length, used = (code << 1) | bit, length + 1, used + 1
        symbol = lookup.get((length, code))
        if symbol is not None:
            out.append(symbol)
            code, length = 0, 0
            if len(out) == count:
                break
        elif length > longest:
            raise HuffmanError(f"corrupt Huffman stream: bits {used - length}..{used} match no code")
    if len(out) < count:
        raise HuffmanError(f"truncated Huffman stream: {len(out)} of {count} symbols decoded")
    if bits is not None and (used != bits or any(stream_bits[used:])):
        raise HuffmanError(f"corrupt Huffman stream: the {count} symbols end at bit {used}, the "
                           f"file says {bits}")
    return np.asarray(out, dtype=np.int64)


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon's bound: ``n * H(p)`` bits, p the symbols' empirical frequencies."""
    counts = np.bincount(np.asarray(symbols, dtype=np.int64))
    p = counts[counts > 0] / max(len(symbols), 1)
    return 0.0 - float((counts[counts > 0] * np.log2(p)).sum())
