"""Our own bit-packed XNOR-popcount kernel, in numpy: what a 1-bit layer really computes.

A +-1 vector of length K is stored as K bits (1 for +1, 0 for -1) packed into 64-bit words.
For two such vectors a and w, a_i * w_i is +1 where the bits agree and -1 where they differ,
so with d = popcount(a XOR w) differing positions,

    a . w = (K - d) - d = K - 2 * popcount(a XOR w)

(the same as 2 * popcount(XNOR) - K, OpenVINO's formula): one XOR and one popcount per 64
multiply-accumulates. The tail of the last word is padded with 0 bits in both operands, so it
XORs to 0 and adds nothing; the true K is used in the formula.

``binary_linear`` (batch x K times K x N) and ``binary_conv2d`` (im2col, any stride and padding)
take real activations, binarize them with sign (sign(0) = +1, as ``core.sign``), and return the
integer dot products, or, when the packed weight carries a per-output-channel scale alpha, the
dot products times alpha (the scale is applied after the popcount: it is not a 1-bit value).
Weights are packed once (``pack_weight``); activations are signed and packed on every call,
which is part of the layer's cost. numpy has no multithreaded popcount: one thread.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

WORD = 64
CHUNK = 1 << 21     # (rows x outputs) entries per block of the popcount: bounds temporaries
SMALL = 1 << 16     # (rows x outputs x words) below which the popcount is one broadcast


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pack_signs(x, axis: int = -1) -> tuple[np.ndarray, int]:
    """Bits of sign(x) (1 where x >= 0; a boolean array is taken as the bits) along ``axis``,
    packed into uint64 words with that axis last: (..., ceil(K / 64)) words and K. Bit i of
    word j is element 64 j + i."""
    x = _numpy(x)
    bits = np.moveaxis(x if x.dtype == bool else x >= 0, axis, -1)
    k = bits.shape[-1]
    tail = -k % WORD        # zero bits: identical in both operands, they XOR to 0
    if tail:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], tail), bool)], axis=-1)
    packed = np.packbits(bits, axis=-1, bitorder="little")
    # eight little-endian bytes are one word whose bit i is element i (any byte order: '<u8')
    return np.ascontiguousarray(packed).view("<u8"), k


def popcount_dot(a_words: np.ndarray, w_words: np.ndarray, k: int) -> np.ndarray:
    """Integer dot products of packed +-1 rows: (M, W) and (N, W) words -> (M, N) int32,
    K - 2 popcount(a XOR w); for many rows one 64-bit word at a time, in blocks of rows, so
    temporaries stay (rows, N)."""
    if a_words.shape[-1] != w_words.shape[-1]:
        raise ValueError(f"{a_words.shape[-1]} words against {w_words.shape[-1]}: "
                         "the two operands must have the same K")
    m, n = a_words.shape[0], w_words.shape[0]
    if m * n * a_words.shape[-1] <= SMALL:     # a few rows: one broadcast, fewer numpy calls
        xor = a_words[:, None, :] ^ w_words[None, :, :]
        return k - 2 * np.bitwise_count(xor).sum(-1, dtype=np.int32)
    out = np.empty((m, n), np.int32)
    a_t, w_t = np.ascontiguousarray(a_words.T), np.ascontiguousarray(w_words.T)
    step = max(1, CHUNK // max(n, 1))
    for start in range(0, m, step):
        rows = slice(start, min(m, start + step))
        differ = np.zeros((rows.stop - rows.start, n), np.int32)
        xor = np.empty((rows.stop - rows.start, n), np.uint64)
        for j in range(a_t.shape[0]):
            np.bitwise_xor(a_t[j, rows, None], w_t[j, None, :], out=xor)
            differ += np.bitwise_count(xor)
        out[rows] = k - 2 * differ
    return out


@dataclass
class PackedWeight:
    """A binary weight ready for the kernel: sign bits of each output's row, packed.

    ``words`` (N, W) uint64; ``k`` the reduction length; ``shape`` the weight's shape, (N, K)
    or (O, C, kh, kw); ``alpha`` an optional scale per output (N,). Conv rows are ordered
    (kh, kw, C), the order in which ``binary_conv2d`` lays out its patches.
    """
    words: np.ndarray
    k: int
    shape: tuple[int, ...]
    alpha: np.ndarray | None = None

    @property
    def bytes(self) -> int:
        return self.words.nbytes


def pack_weight(weight, alpha=None) -> PackedWeight:
    """Pack sign(weight) of a Linear (N, K) or Conv2d (O, C, kh, kw) weight, with an optional
    scale per output channel (a tensor of any shape with N elements, e.g. ``core.ls_scale``)."""
    w = _numpy(weight)
    if w.ndim not in (2, 4):
        raise ValueError(f"weight of shape {w.shape}: expected (N, K) or (O, C, kh, kw)")
    rows = w if w.ndim == 2 else w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
    words, k = pack_signs(rows)
    if alpha is not None:
        alpha = _numpy(alpha).astype(np.float32).reshape(-1)
        if alpha.size != w.shape[0]:
            raise ValueError(f"alpha has {alpha.size} values for {w.shape[0]} outputs")
    return PackedWeight(words, k, tuple(w.shape), alpha)


def _scaled(dots: np.ndarray, alpha: np.ndarray | None, channel_axis: int) -> np.ndarray:
    if alpha is None:
        return dots
    shape = [1] * dots.ndim
    shape[channel_axis] = -1
    return dots.astype(np.float32) * alpha.reshape(shape)


def binary_linear(x, weight: PackedWeight) -> np.ndarray:
    """sign(x) (batch, K) times sign(W)^T: (batch, N) int32 dots, times alpha if the weight has
    one. No bias: a binary layer's bias (or BatchNorm) is a float step after it."""
    x = _numpy(x)
    x = x.reshape(len(x), -1) if x.ndim > 2 else x
    if len(weight.shape) != 2 or x.shape[-1] != weight.k:
        raise ValueError(f"input of {x.shape[-1]} features for a weight of shape {weight.shape}")
    words, k = pack_signs(x)
    return _scaled(popcount_dot(words, weight.words, k), weight.alpha, 1)


def binary_conv2d(x, weight: PackedWeight, stride: int = 1, padding: int = 1) -> np.ndarray:
    """sign(x) (B, C, H, W) convolved with sign(W) (O, C, kh, kw): (B, O, H', W') int32, times
    alpha per output channel if the weight has one.

    Padded positions hold -1, as OpenVINO's BinaryConvolution with ``pad_value=-1``: a 1-bit
    activation has no 0, so the float network's zero padding cannot be stored in the packed
    patches; -1 is the 0 bit, so padding is a fill of zero bits, and it is the same convention
    as the runtime that runs these layers (a -1-padded float conv is the exact reference).
    """
    x = _numpy(x)
    o, c, kh, kw = weight.shape if len(weight.shape) == 4 else (None,) * 4
    if o is None or x.ndim != 4 or x.shape[1] != c:
        raise ValueError(f"input of shape {x.shape} for a conv weight of shape {weight.shape}")
    bits = x >= 0
    if padding:
        bits = np.pad(bits, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2),
                      constant_values=False)                  # False = the -1 bit
    b, _, hp, wp = bits.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    # patches (B, C, H', W', kh, kw) -> rows (B H' W', kh kw C), the weight's row order
    windows = np.lib.stride_tricks.sliding_window_view(bits, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :ho, :wo]
    rows = windows.transpose(0, 2, 3, 4, 5, 1).reshape(b * ho * wo, kh * kw * c)
    words, k = pack_signs(rows)
    dots = popcount_dot(words, weight.words, k).reshape(b, ho, wo, o).transpose(0, 3, 1, 2)
    return _scaled(np.ascontiguousarray(dots), weight.alpha, 1)


def xnor_dot_explained(a, w) -> dict:
    """The arithmetic of one binary dot product, step by step, for a lesson: two +-1 vectors
    of the same length -> their packed words (hex), the XOR, the number of differing bits,
    and K - 2 * popcount beside the plain sum of products."""
    a, w = _numpy(a).ravel(), _numpy(w).ravel()
    if a.shape != w.shape or not np.isin(a, (-1, 1)).all() or not np.isin(w, (-1, 1)).all():
        raise ValueError("a and w must be +-1 vectors of the same length")
    (aw,), k = pack_signs(a[None])
    (ww,), _ = pack_signs(w[None])
    xor = aw ^ ww
    differ = int(np.bitwise_count(xor).sum())
    return {"k": k, "a_words": [f"{v:#018x}" for v in aw], "w_words": [f"{v:#018x}" for v in ww],
            "xor_words": [f"{v:#018x}" for v in xor], "popcount": differ,
            "dot": k - 2 * differ, "sum_of_products": int((a * w).sum())}
