"""Sparse formats: the positions of the nonzeros and their values.

- ``csr32``: plain compressed sparse rows, int32 row pointers and column indices, for
  comparison (asked for by name);
- ``sparse_rel``: Deep Compression's format (Han et al. 2016, section 2): the nonzeros in row
  order (CSR) or column order (CSC) of the tensor viewed as a matrix, each with the *gap* to
  the previous one in ``index_bits`` bits; a gap too long for the bits is bridged by filler
  zeros.

The relative-index helpers here are shared by the codebook and Huffman variants.
"""
from __future__ import annotations

import numpy as np
import torch

from .bits import pack_bits, unpack_bits
from .dense import decode_dense, encode_dense
from .formats import CodecError, Format, register


def as_matrix(tensor: torch.Tensor, order: str) -> torch.Tensor:
    """The tensor as a matrix (rows = first dim), transposed for column order (CSC)."""
    if order not in ("row", "col"):
        raise ValueError(f"order={order!r}; allowed: 'row' (CSR) or 'col' (CSC)")
    if tensor.dim() > 1:
        matrix = tensor.reshape(tensor.shape[0], int(np.prod(tensor.shape[1:], dtype=np.int64)))
    else:
        matrix = tensor.reshape(1, -1)
    return matrix.t() if order == "col" else matrix


def relative_gaps(positions: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's relative indices: (stored gaps, is_filler) for sorted positions.

    Entry i skips ``gap`` zeros, then holds a value. The largest gap storable is
    2**bits - 1; a longer run is bridged by filler entries that skip 2**bits - 1 zeros and hold
    an explicit zero (so each filler advances 2**bits positions).
    """
    span = 1 << bits
    gaps = np.diff(positions, prepend=-1) - 1
    fillers, rest = gaps // span, gaps % span
    counts = fillers + 1
    stored = np.repeat(np.full(len(gaps), span - 1), counts)
    is_filler = np.ones(counts.sum(), dtype=bool)
    last = np.cumsum(counts) - 1                  # the real entry closes each group
    stored[last], is_filler[last] = rest, False
    return stored, is_filler


def _sparse_rel_cost(gaps: np.ndarray, bits: int, value_bits: float) -> float:
    entries = len(gaps) + int((gaps >> bits).sum())
    return -(-entries * bits // 8) + entries * value_bits / 8


def sparse_entries(tensor: torch.Tensor, value_bits: float, order: str | None = None,
                   index_bits: int | None = None) -> tuple[str, int, np.ndarray, torch.Tensor]:
    """(order, index bits, stored gaps, entry values) of the smallest relative-index layout
    when a value costs ``value_bits``; fillers' values are zero. Unless given, the order
    (row / col) and bit-width are those of the smallest file."""
    flats = {o: as_matrix(tensor.detach(), o).flatten() for o in ([order] if order else ["row", "col"])}
    positions = {o: f.nonzero().flatten().numpy() for o, f in flats.items()}
    gaps = {o: np.diff(p, prepend=-1) - 1 for o, p in positions.items()}    # once per order
    choices = [(o, b) for o in flats for b in ([index_bits] if index_bits else range(1, 17))]
    order, index_bits = min(choices, key=lambda c: _sparse_rel_cost(gaps[c[0]], c[1],
                                                                       value_bits))
    flat, where = flats[order], positions[order]
    stored, is_filler = relative_gaps(where, index_bits)
    values = torch.zeros(len(stored), dtype=flat.dtype)
    values[torch.from_numpy(~is_filler)] = flat[torch.from_numpy(where)]
    return order, index_bits, stored, values


def scatter_entries(gaps: np.ndarray, values: torch.Tensor, shape, order: str) -> torch.Tensor:
    """The tensor of ``shape`` whose entries in ``order`` follow ``gaps`` (inverse of
    ``sparse_entries``)."""
    template = as_matrix(torch.empty(shape), order)
    positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
    if len(positions) and positions[-1] >= template.numel():
        raise CodecError(f"corrupt sparse tensor: index {positions[-1]} beyond {template.numel()}")
    flat = torch.zeros(template.numel(), dtype=values.dtype)
    flat[torch.from_numpy(positions)] = values
    matrix = flat.view(template.shape)
    return (matrix.t() if order == "col" else matrix).reshape(shape)


def encode_sparse_rel(tensor: torch.Tensor, dtype: str | None = None, order: str | None = None,
                      index_bits: int | None = None) -> tuple[bytes, dict]:
    value_bytes = torch.empty(0, dtype=getattr(torch, dtype) if dtype else tensor.dtype
                              ).element_size()
    order, index_bits, stored, values = sparse_entries(tensor, 8 * value_bytes, order, index_bits)
    indices = pack_bits(stored, index_bits)
    payload = indices + encode_dense(values, dtype)[0]
    return payload, {"order": order, "index_bits": index_bits, "entries": len(stored),
                     "index_nbytes": len(indices), "fillers": int((values == 0).sum())}


def decode_sparse_rel(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    entries, bits = meta["entries"], meta["index_bits"]
    stored = unpack_bits(payload[:meta["index_nbytes"]], bits, entries)
    values = decode_dense(payload[meta["index_nbytes"]:], [entries], dtype, meta)
    return scatter_entries(stored, values, shape, meta["order"])


def encode_csr32(tensor: torch.Tensor, dtype: str | None = None, order: str | None = None,
                 index_bits: int | None = None) -> tuple[bytes, dict]:
    """Row pointers, column indices, values. Rows and 32-bit indices are what CSR *is*: a
    layout asked for (``order``, ``index_bits``) does not apply."""
    matrix = as_matrix(tensor.detach(), "row")
    rows, columns = matrix.nonzero(as_tuple=True)           # row-major order
    pointers = torch.zeros(matrix.shape[0] + 1, dtype=torch.int32)
    pointers[1:] = torch.bincount(rows, minlength=matrix.shape[0]).cumsum(0)
    payload = (encode_dense(pointers)[0] + encode_dense(columns.to(torch.int32))[0]
               + encode_dense(matrix[rows, columns], dtype)[0])
    return payload, {"nnz": len(columns)}


def decode_csr32(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    n_rows, n_cols = as_matrix(torch.empty(shape), "row").shape
    nnz, head = meta["nnz"], 4 * (n_rows + 1)
    pointers = decode_dense(payload[:head], [n_rows + 1], "int32", {}).long()
    columns = decode_dense(payload[head:head + 4 * nnz], [nnz], "int32", {}).long()
    values = decode_dense(payload[head + 4 * nnz:], [nnz], dtype, meta)
    rows = torch.repeat_interleave(torch.arange(n_rows), pointers.diff())
    matrix = torch.zeros(n_rows, n_cols, dtype=values.dtype)
    matrix[rows, columns] = values
    return matrix.reshape(shape)


register(Format(
    "csr32", encode_csr32, decode_csr32, kind="sparse", default=False,
    lower_bound=lambda nnz, rows, value_bytes: nnz * (4 + value_bytes) + 4 * (rows + 1)))
register(Format(
    "sparse_rel", encode_sparse_rel, decode_sparse_rel, kind="sparse",
    lower_bound=lambda nnz, rows, value_bytes: nnz * value_bytes + -(-nnz // 8)))
