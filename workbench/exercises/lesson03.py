"""Lesson 03's exercises (Deep Compression).

``check_huffman_lengths(huffman_lengths)``: ``huffman_lengths(counts)`` gives the length in bits
of each symbol's Huffman code from the symbols' counts (0 for a symbol that never occurs).
Huffman codes are not unique (ties may be broken either way), so the check asks what every
Huffman code has: a code length for exactly the symbols that occur, a prefix code (Kraft sum at
most 1) and the fewest total bits, the total of ``huffman.code_lengths``. The counts are the two
streams Deep Compression codes (codebook indices and gaps, ``codec.deep_compression_streams``)
of LeNet-300-100's layers, pruned to 92% and shared with k-means at 15 values.

``check_index_bits(index_bits_per_weight)``: ``index_bits_per_weight(weight, bits)`` is what the
POSITIONS of the nonzero weights cost in Deep Compression's relative-index format, in bits per
kept weight: row-major order, each entry stores the number of zeros skipped since the previous
one in ``bits`` bits, and a longer run is bridged by filler entries (each filler skips
``2**bits - 1`` zeros and holds an explicit zero). Checked against ``codec.sparse.relative_gaps``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import run


@lru_cache(maxsize=None)
def _pruned_shared():
    """LeNet-300-100 pruned to 92% (magnitude, per layer) and shared at k = 15 (k-means)."""
    from .. import METHODS, zoo
    from ..prune import Magnitude
    from ..train import quiet
    with quiet():
        pruned = Magnitude(sparsity=0.92).apply(zoo.pretrained("lenet300"))
        return pruned, METHODS["quant.kmeans"](k=15).apply(pruned)


@lru_cache(maxsize=None)
def _histograms() -> tuple:
    """(label, counts) of both streams of lenet300's two large layers."""
    from .. import codec
    _, shared = _pruned_shared()
    cases = []
    for layer in ("net.1", "net.3"):
        streams = codec.deep_compression_streams(shared.get_submodule(layer).weight.detach())
        cases.append((f"{layer} codebook indices",
                      np.bincount(streams["indices"], minlength=len(streams["codebook"]))))
        cases.append((f"{layer} gaps ({streams['index_bits']}-bit)",
                      np.bincount(streams["gaps"], minlength=2 ** streams["index_bits"])))
    return tuple(cases)


def _lengths_problem(counts: np.ndarray, got) -> str | None:
    from .. import huffman
    try:
        lengths = np.asarray(got, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return f"returned {type(got).__name__}, expected one length per symbol"
    if len(lengths) != len(counts):
        return f"{len(lengths)} lengths for an alphabet of {len(counts)} symbols"
    if np.any(lengths != np.round(lengths)) or np.any(lengths < 0):
        return "code lengths must be whole numbers of bits, 0 or more"
    absent, present = counts == 0, counts > 0
    if np.any(lengths[present] == 0):
        symbol = int(np.flatnonzero(present & (lengths == 0))[0])
        return f"symbol {symbol} occurs {counts[symbol]:,} times but got no code (length 0)"
    if np.any(lengths[absent] > 0):
        symbol = int(np.flatnonzero(absent & (lengths > 0))[0])
        return (f"symbol {symbol} never occurs but got a {int(lengths[symbol])}-bit code: "
                "leave it out of the tree (length 0)")
    kraft = float(np.sum(2.0 ** -lengths[present]))
    if kraft > 1 + 1e-12:
        return (f"no prefix code has these lengths (Kraft sum {kraft:.3f} > 1): some code would "
                "be the start of another")
    total = int(np.sum(counts * lengths))
    best = int(np.sum(counts * huffman.code_lengths(counts)))
    if total != best:
        fixed = int(np.ceil(np.log2(max(int(present.sum()), 2))))
        hint = (f": every symbol got {fixed} bits, a fixed-length code; give the frequent "
                "symbols shorter codes" if np.all(lengths[present] == fixed) else
                ": merge the two least frequent subtrees at every step")
        return (f"your code takes {total:,} bits for this stream, a Huffman code "
                f"{best:,}{hint}")
    return None


def check_huffman_lengths(huffman_lengths) -> bool | None:
    """Your ``huffman_lengths(counts)`` on the index and gap histograms of a pruned, shared
    LeNet-300-100: a prefix code with a length for exactly the symbols that occur, and as few
    total bits as ``huffman.code_lengths``."""
    cases = [(label, (counts.copy(),), {}) for label, counts in _histograms()]
    counts_of = dict(_histograms())
    return run("huffman_lengths", huffman_lengths, cases,
               lambda label, got, args, kw: _lengths_problem(counts_of[label], got),
               f"optimal prefix codes for all {len(cases)} streams (as few bits as "
               "huffman.code_lengths)")


@lru_cache(maxsize=None)
def _index_cases() -> tuple:
    """(label, weight, bits, expected bits per kept weight, entries, fillers)."""
    from ..codec.sparse import relative_gaps
    pruned, _ = _pruned_shared()
    cases = []
    for layer, bits in (("net.1", 3), ("net.1", 5), ("net.3", 4), ("net.5", 2)):
        weight = pruned.get_submodule(layer).weight.detach().clone()
        positions = weight.flatten().nonzero().flatten().numpy()
        stored, is_filler = relative_gaps(positions, bits)
        cases.append((f"{layer} at {bits}-bit gaps", weight, bits,
                      len(stored) * bits / len(positions), len(stored), int(is_filler.sum())))
    return tuple(cases)


def _index_problem(bits: int, expected: float, entries: int, fillers: int, got) -> str | None:
    try:
        got = float(got)
    except (TypeError, ValueError):
        return f"returned {got!r}, expected a number of bits ({expected:.3f})"
    if abs(got - expected) <= 1e-9 * expected:
        return None
    said = (f"expected {expected:.4f} bits per kept weight ({entries:,} entries of {bits} bits, "
            f"{fillers:,} of them fillers), got {got:.4f}")
    if abs(got - bits) < 1e-9:
        return said + (f": you left out the filler entries a gap longer than "
                       f"{2 ** bits - 1} (the largest {bits}-bit number) needs")
    if got < bits:
        return said + ": every kept weight costs at least one entry of `bits` bits"
    return said + (f": a filler skips {2 ** bits - 1} zeros and holds a zero itself, so it "
                   f"advances {2 ** bits} positions")


def check_index_bits(index_bits_per_weight) -> bool | None:
    """Your ``index_bits_per_weight(weight, bits)`` against ``codec.sparse.relative_gaps`` on
    the layers of LeNet-300-100 pruned to 92%, at several gap widths."""
    cases = [(label, (weight.clone(), bits), {}) for label, weight, bits, *_ in _index_cases()]
    truth = {label: rest for label, _, _, *rest in _index_cases()}
    return run("index_bits_per_weight", index_bits_per_weight, cases,
               lambda label, got, args, kw: _index_problem(args[1], *truth[label], got),
               f"right on all {len(cases)} layers and widths (fillers counted)")
