"""Formats for binary and ternary weights: the file of a 1-bit network is about 1/32 of the
float one, because only the signs and the scales are stored (not the float shadow weights).

- ``signs``: every value of a row (output channel, the tensor seen as a matrix) is -a_c or
  +a_c (BinaryConnect, BWN, XNOR-Net ...): one bit per value (its sign bit) and the scales,
  one per row, or a single one when every row has the same (a per-layer scale);
- ``ternary``: every value of a row is -n_c, 0 or +p_c: TWN (n_c = p_c, per layer or per
  channel) and TTQ (two scales per layer). One symbol per value, packed in base 3
  (``radix_group(3)``: 17 digits in 27 bits, 1.59 bits each) or in 2 bits, whichever is
  smaller, plus the scales: one pair per layer, one per row, or two per row.

Scales are stored exactly, in two bytes when they are float16 or bfloat16 numbers (as the
codebook of ``shared.py`` does), or in the ``dtype`` asked for. Both formats are "structured":
tried on every float tensor, they refuse (ValueError) a tensor without their structure, and the
choice among formats is by size. A per-layer {-a, +a} tensor is also a two-value codebook
(1 bit per weight plus two values), so ``signs`` wins there by a few bytes only; with one scale
per channel the codebook would need 2C values and log2(2C) bits per weight. Several binary
bases with per-layer scales (ABC-Net's M bases: at most 2^M distinct values) need no format of
their own: the codebook stores them in M bits per weight.

- ``row_codebook``: every row has few distinct values, the layer many: network sketching's M
  binary tensors with scales per output filter (up to 2^M values per row, thousands per
  layer, so the per-layer codebook needs ~log2(rows 2^M) bits per weight). Per row its sorted
  distinct values (k_r of them, stored as the codebook's are), then each element's index in its
  row's values, base-k packed with one k for the layer (the largest k_r; log2 k bits when k
  is a power of two); the k_r themselves come first, base-k packed too (as k_r - 1).
  Registered after every other format: it wins only where it is strictly smaller.

Speed: these formats are tried on every float tensor, so each one looks at the first row
alone before the whole tensor, refusing most tensors without their structure at the cost of
one row; and ternary computes the size of both packings from the count, packing once.
"""
from __future__ import annotations

import numpy as np
import torch

from .bits import pack_bits, pack_symbols, radix_group, unpack_bits, unpack_symbols
from .dense import decode_dense, encode_dense
from .formats import CodecError, Format, narrowest_float, register
from .sparse import as_matrix

SIGN_SCALES = ("layer", "channel")
TERNARY_SCALES = {"layer": 2, "channel": 1, "channel2": 2}   # mode -> scales per unit
PACKINGS = ("base3", "2bit")


def _rows(shape) -> int:
    return int(shape[0]) if len(shape) > 1 else 1


def _count(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _store_scales(scales: torch.Tensor, dtype: str | None) -> tuple[bytes, dict]:
    # the scales are values of the tensor: their own narrowest exact float type, as codebooks
    value_dtype = dtype or narrowest_float(scales)
    meta = {"stored_dtype": value_dtype} if value_dtype else {}
    return encode_dense(scales, value_dtype)[0], meta


def _read_scales(payload: bytes, n: int, dtype: str, meta: dict) -> tuple[torch.Tensor, bytes]:
    head = meta.get("scale_nbytes")
    if not isinstance(head, int) or not 0 <= head <= len(payload):
        raise CodecError(f"corrupt payload: {len(payload)} bytes cannot hold scales of "
                         f"{head!r} bytes")
    return decode_dense(payload[:head], [n], dtype, meta), payload[head:]


def _expect(data: bytes, needed: int, what: str) -> None:
    if len(data) != needed:
        kind = "truncated" if len(data) < needed else "padded"
        raise CodecError(f"{kind} {what}: {needed} bytes expected, got {len(data)}")


def weight_structure(tensor: torch.Tensor) -> str | None:
    """"signs" if every row of the tensor (seen as a matrix) is made of -a_c and +a_c with
    a_c > 0, "ternary" if of -n_c, 0 and +p_c (zeros included), else None: what ``measure``
    asks of a layer's weight (a zero weight is skipped, not a binary operation)."""
    if not tensor.is_floating_point() or tensor.dim() == 0 or not tensor.numel():
        return None
    matrix = as_matrix(tensor.detach(), "row")
    try:
        _ternary_parts(matrix[:1])          # one row first: most float tensors stop here
        _, _, hi, lo = _ternary_parts(matrix)
    except ValueError:
        return None
    # a ternary row without zeros whose max and min have the same magnitude is {-a_c, +a_c}
    if bool((hi.abs() == lo.abs()).all()) and bool((matrix != 0).all()):
        return "signs"
    return "ternary"


# ---------------------------------------------------------------- signs: {-a_c, +a_c}

def encode_signs(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """Sign bits (1 for a negative value, including -0.0) and the scale of each row."""
    if not tensor.is_floating_point():
        raise ValueError("signs: not a float tensor")
    matrix = as_matrix(tensor.detach(), "row")
    if not matrix.numel():
        raise ValueError("signs: an empty tensor")
    first = matrix[0].abs()
    if not bool((first == first[0]).all()):     # one row first: most tensors stop here
        raise ValueError("signs: the values of a row are not all -a or +a")
    magnitude = matrix.abs()
    scales = magnitude.amax(dim=1)
    if not bool((magnitude == scales[:, None]).all()):     # NaN fails this too
        raise ValueError("signs: the values of a row are not all -a or +a")
    mode = "layer" if bool((scales == scales[0]).all()) else "channel"
    scales = scales[:1] if mode == "layer" else scales
    stored, meta = _store_scales(scales, dtype)
    # the bit stream of pack_bits(signs, 1), without its (n, bits) planes
    bits = np.packbits(torch.signbit(matrix).flatten().numpy(), bitorder="little").tobytes()
    return stored + bits, {"scales": mode, "scale_nbytes": len(stored), **meta}


def decode_signs(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    mode, rows, count = meta.get("scales"), _rows(shape), _count(shape)
    if mode not in SIGN_SCALES:
        raise CodecError(f"signs: scales={mode!r}; known: {', '.join(SIGN_SCALES)}")
    n = 1 if mode == "layer" else rows
    scales, bits = _read_scales(payload, n, dtype, meta)
    _expect(bits, -(-count // 8), f"sign bits of {count} values")
    negative = torch.from_numpy(unpack_bits(bits, 1, count).astype(bool))
    a = scales.reshape(-1, 1).expand(rows, count // rows if rows else 0).reshape(-1)
    return torch.where(negative, -a, a).reshape(shape)


# ---------------------------------------------------------------- ternary: {-n_c, 0, +p_c}

def _ternary_parts(matrix: torch.Tensor):
    """(positive mask, negative mask, each row's largest value, its smallest); ValueError when
    a row has two different positive (or negative) values, or NaN. A ternary row's positive
    values all equal its max, its negative ones its min."""
    hi, lo = matrix.amax(dim=1, keepdim=True), matrix.amin(dim=1, keepdim=True)
    positive = matrix > 0
    if not bool(((matrix == torch.where(positive, hi, lo)) | (matrix == 0)).all()):
        if bool(matrix.isnan().any()):
            raise ValueError("ternary: the tensor holds NaN")
        raise ValueError("ternary: a row has more than one positive or negative value")
    return positive, matrix < 0, hi[:, 0], lo[:, 0]


def _ternary_scales(neg, has_neg, pos, has_pos) -> tuple[str, torch.Tensor]:
    """The fewest scales that give the values back: per layer (n, p), per row (a), or two per
    row (n_c, p_c)."""
    if bool((neg[has_neg] == neg[has_neg][:1]).all() and (pos[has_pos] == pos[has_pos][:1]).all()):
        n = neg[has_neg][:1] if has_neg.any() else neg[:1] * 0
        p = pos[has_pos][:1] if has_pos.any() else pos[:1] * 0
        return "layer", torch.cat([n, p])
    both = has_neg & has_pos
    if bool((neg[both] == pos[both]).all()):
        return "channel", torch.where(has_pos, pos, neg)
    return "channel2", torch.cat([neg, pos])


def encode_ternary(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """A symbol per value (0: zero, 1: +p, 2: -n), base-3 or 2-bit packed, then the scales."""
    if not tensor.is_floating_point():
        raise ValueError("ternary: not a float tensor")
    matrix = as_matrix(tensor.detach(), "row")
    if not matrix.numel():
        raise ValueError("ternary: an empty tensor")
    _ternary_parts(matrix[:1])              # one row first: most float tensors stop here
    positive, negative, hi, lo = _ternary_parts(matrix)
    has_pos, has_neg = hi > 0, lo < 0
    pos, neg = torch.where(has_pos, hi, 0.0), torch.where(has_neg, -lo, 0.0)
    mode, scales = _ternary_scales(neg, has_neg, pos, has_pos)
    stored, meta = _store_scales(scales, dtype)
    symbols = (positive.to(torch.uint8) + 2 * negative.to(torch.uint8)).flatten().numpy()
    # both sizes follow from the count: pack once, base 3 unless very few values (ties too)
    packing = min(PACKINGS, key=lambda p: _packed_nbytes(p, symbols.size))
    packed = pack_symbols(symbols, 3) if packing == "base3" else pack_bits(symbols, 2)
    return stored + packed, {"scales": mode, "packing": packing,
                             "scale_nbytes": len(stored), **meta}


def _packed_nbytes(packing: str, count: int) -> int:
    if packing == "2bit":
        return -(-count * 2 // 8)
    g, bits = radix_group(3)
    groups = -(-count // g)
    return -(-groups * bits // 8)


def decode_ternary(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    mode, packing = meta.get("scales"), meta.get("packing")
    rows, count = _rows(shape), _count(shape)
    if mode not in TERNARY_SCALES or packing not in PACKINGS:
        raise CodecError(f"ternary: scales={mode!r}, packing={packing!r}; known: "
                         f"{', '.join(TERNARY_SCALES)} and {', '.join(PACKINGS)}")
    n = 2 if mode == "layer" else rows * TERNARY_SCALES[mode]
    scales, packed = _read_scales(payload, n, dtype, meta)
    _expect(packed, _packed_nbytes(packing, count), f"{packing} symbols of {count} values")
    if packing == "2bit":
        symbols = unpack_bits(packed, 2, count).astype(np.int64)
        if len(symbols) and symbols.max() > 2:
            raise CodecError("corrupt ternary symbols: a 2-bit symbol reads 3 (allowed 0, 1, 2)")
    else:
        symbols = unpack_symbols(packed, 3, count)
    if mode == "layer":
        neg, pos = scales[:1].expand(rows), scales[1:].expand(rows)
    elif mode == "channel":
        neg = pos = scales
    else:
        neg, pos = scales[:rows], scales[rows:]
    per_row = count // rows if rows else 0
    neg, pos = (v.reshape(-1, 1).expand(rows, per_row).reshape(-1) for v in (neg, pos))
    symbols = torch.from_numpy(symbols)
    zero = torch.zeros((), dtype=scales.dtype)
    return torch.where(symbols == 1, pos, torch.where(symbols == 2, -neg, zero)).reshape(shape)


# ---------------------------------------------------------------- row_codebook: few values per row

def _packed_symbols_nbytes(k: int, count: int) -> int:
    g, bits = radix_group(k)
    groups = -(-count // g)
    return -(-groups * bits // 8)


def encode_row_codebook(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """Each row's k_r (as k_r - 1), each row's sorted distinct values, each element's index in
    its row's values; the k_r and the indices base-k packed with k = max k_r."""
    if not tensor.is_floating_point():
        raise ValueError("row_codebook: not a float tensor")
    matrix = as_matrix(tensor.detach(), "row")
    n = matrix.shape[1]
    if not matrix.numel():
        raise ValueError("row_codebook: an empty tensor")
    most = max(1, n // 2)        # more distinct values than this in a row: plain values win
    if len(torch.unique(matrix[0])) > most:     # one row first: most float tensors stop here
        raise ValueError("row_codebook: most values of a row are distinct")
    ordered, order = matrix.sort(dim=1)
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]          # first of each distinct value
    counts = new.sum(dim=1)
    k = int(counts.max())
    if k > most:
        raise ValueError("row_codebook: most values of a row are distinct")
    indices = torch.empty_like(order).scatter_(1, order, new.cumsum(dim=1) - 1)
    values = ordered[new]                    # row after row, each row's values ascending
    value_dtype = dtype or narrowest_float(values)
    stored = encode_dense(values, value_dtype)[0]
    payload = (pack_symbols((counts - 1).numpy(), k) + stored
               + pack_symbols(indices.flatten().numpy(), k))
    meta = {"k": k, "values": len(values)}
    return payload, {**meta, "stored_dtype": value_dtype} if value_dtype else meta


def decode_row_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    k, count, rows = meta.get("k"), _count(shape), _rows(shape)
    per_row = count // rows if rows else 0
    if not isinstance(k, int) or not 1 <= k <= per_row:
        raise CodecError(f"corrupt row_codebook: k={k!r}; allowed an integer from 1 to the "
                         f"{per_row} values of a row")
    head = _packed_symbols_nbytes(k, rows)
    value_bytes = torch.empty(0, dtype=getattr(torch, meta.get("stored_dtype", dtype))
                              ).element_size()
    # every row has a value at least: check the bytes against the declared counts before
    # unpacking anything
    least = head + rows * value_bytes + _packed_symbols_nbytes(k, count)
    if len(payload) < least:
        raise CodecError(f"truncated row_codebook: {rows} rows and {count} indices of base {k} "
                         f"need {least} bytes at least, got {len(payload)}")
    if k == 1:          # one value a row: the row sizes and indices are all 0, nothing to unpack
        if meta.get("values") != rows:
            raise CodecError(f"corrupt row_codebook: k=1 means {rows} values, the header says "
                             f"{meta.get('values')!r}")
        _expect(payload, least, f"row_codebook of {rows} rows of one value")
        if any(payload[:head]) or any(payload[head + rows * value_bytes:]):
            raise CodecError("corrupt row_codebook: an index beyond its row's values (k=1)")
        values = decode_dense(payload[head:head + rows * value_bytes], [rows], dtype, meta)
        return values.repeat_interleave(per_row).reshape(shape)
    counts = torch.from_numpy(unpack_symbols(payload[:head], k, rows)) + 1
    total = int(counts.sum())
    if meta.get("values") != total:
        raise CodecError(f"corrupt row_codebook: the row sizes add up to {total} values, "
                         f"the header says {meta.get('values')!r}")
    middle = head + total * value_bytes
    _expect(payload, middle + _packed_symbols_nbytes(k, count),
            f"row_codebook of {rows} rows, {total} values and {count} indices of base {k}")
    values = decode_dense(payload[head:middle], [total], dtype, meta)
    indices = torch.from_numpy(unpack_symbols(payload[middle:], k, count)).reshape(rows, -1)
    if bool((indices >= counts[:, None]).any()):
        raise CodecError("corrupt row_codebook: an index beyond its row's values")
    starts = counts.cumsum(0) - counts
    return values[starts[:, None] + indices].reshape(shape)


# At least one bit per nonzero value: lets the choice skip them next to a smaller payload.
register(Format("signs", encode_signs, decode_signs, kind="structured",
                lower_bound=lambda nnz, rows, value_bytes: -(-nnz // 8)))
# A symbol per value at least (count >= nnz): skipped next to the signs of a binary tensor.
register(Format("ternary", encode_ternary, decode_ternary, kind="structured",
                lower_bound=lambda nnz, rows, value_bytes: min(_packed_nbytes(p, nnz)
                                                               for p in PACKINGS)))
# Last of all formats: it takes no tie from another. At least one stored value per row.
register(Format("row_codebook", encode_row_codebook, decode_row_codebook, kind="shared",
                lower_bound=lambda nnz, rows, value_bytes: rows * value_bytes))
