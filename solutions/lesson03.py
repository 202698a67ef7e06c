"""Solutions to lesson 03's exercises (workbench.exercises.lesson03)."""
import heapq

import numpy as np


def huffman_lengths(counts):
    """Huffman code length of each symbol (0 for symbols that never occur)."""
    counts = np.asarray(counts)
    lengths = np.zeros(len(counts), dtype=int)
    heap = [(int(c), i, [i]) for i, c in enumerate(counts) if c > 0]
    if len(heap) == 1:                       # one symbol still needs one bit
        lengths[heap[0][2]] = 1
        return lengths
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:                     # merge the two least frequent subtrees
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        lengths[s1 + s2] += 1                # their symbols go one level deeper
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def index_bits_per_weight(weight, bits):
    """Bits per kept weight of the relative indices (row-major, with filler entries)."""
    positions = weight.flatten().nonzero().flatten().numpy()
    gaps = np.diff(positions, prepend=-1) - 1          # zeros skipped before each entry
    fillers = gaps // 2 ** bits                         # each filler advances 2**bits places
    return (len(positions) + int(fillers.sum())) * bits / len(positions)
