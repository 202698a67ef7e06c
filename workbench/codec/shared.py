"""Formats for tensors of few distinct values (weight sharing, powers of two):

- ``codebook``: the sorted distinct values and each element's index, packed in base k
  (``radix_group``: any k, not only powers of two);
- ``sparse_codebook``: the positions of ``sparse_rel`` and the values as codebook indices,
  Deep Compression's pruned-and-shared layer;
- ``pow2``: values 0 or +-2^e as one symbol each (zero, or sign and exponent), packed in
  base k: no table needed.
"""
from __future__ import annotations

import numpy as np
import torch

from .bits import pack_bits, pack_symbols, unpack_symbols
from .dense import decode_dense, encode_dense
from .formats import Format, narrowest_float, register
from .sparse import decode_sparse_rel, sparse_entries


def encode_codebook(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """The distinct values (the codebook) then each element's index, radix-packed."""
    codebook, indices = torch.unique(tensor.detach().flatten(), return_inverse=True)
    value_dtype = dtype or narrowest_float(codebook)
    values = encode_dense(codebook, value_dtype)[0]
    meta = {"k": len(codebook), "codebook_nbytes": len(values)}
    if value_dtype:
        meta["stored_dtype"] = value_dtype
    return values + pack_symbols(indices.numpy(), len(codebook)), meta


def decode_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    k, head = meta["k"], meta["codebook_nbytes"]
    codebook = decode_dense(payload[:head], [k], dtype, meta)
    count = int(np.prod(shape, dtype=np.int64))
    return codebook[torch.from_numpy(unpack_symbols(payload[head:], k, count))].reshape(shape)


def encode_sparse_codebook(tensor: torch.Tensor, dtype: str | None = None,
                           order: str | None = None, index_bits: int | None = None
                           ) -> tuple[bytes, dict]:
    """Deep Compression's pruned and shared layer: relative positions as in ``sparse_rel``;
    each entry (fillers hold an explicit zero) stored as its index into the codebook."""
    k = len(torch.unique(tensor)) + 1          # the zero of the fillers may be one more value
    order, index_bits, stored, values = sparse_entries(tensor, float(np.log2(k)), order,
                                                       index_bits)
    indices = pack_bits(stored, index_bits)
    packed, value_meta = encode_codebook(values, dtype)
    return indices + packed, {"order": order, "index_bits": index_bits, "entries": len(stored),
                              "index_nbytes": len(indices), "values": value_meta}


def decode_sparse_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    head = meta["index_nbytes"]
    values = decode_codebook(payload[head:], [meta["entries"]], dtype, meta["values"])
    # the values go back in the tensor's own dtype, not the codebook's stored one
    positions_meta = {k: v for k, v in meta.items() if k != "stored_dtype"}
    return decode_sparse_rel(payload[:head] + encode_dense(values)[0], shape, dtype,
                             positions_meta)


def encode_pow2(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """0 or +-2^e: each element one symbol (zero, or sign and exponent), radix-packed."""
    flat = tensor.detach().flatten()
    # tried on every float tensor: the first values alone refuse most of them
    head = flat[:1024]
    if not bool((torch.frexp(head)[0][head != 0].abs() == 0.5).all()):
        raise ValueError("not all values are 0 or a power of two")
    mantissa, exponent = torch.frexp(flat)
    nonzero = flat != 0
    if not bool((mantissa[nonzero].abs() == 0.5).all()):
        raise ValueError("not all values are 0 or a power of two")
    low = int(exponent[nonzero].min()) if nonzero.any() else 0
    span = int(exponent[nonzero].max()) - low + 1 if nonzero.any() else 1
    symbols = torch.zeros_like(exponent)
    symbols[nonzero] = 1 + (exponent[nonzero] - low) + span * (flat[nonzero] < 0).to(exponent.dtype)
    return pack_symbols(symbols.numpy(), 1 + 2 * span), {"low_exponent": low, "span": span}


def decode_pow2(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    low, span = meta["low_exponent"], meta["span"]
    count = int(np.prod(shape, dtype=np.int64))
    symbols = torch.from_numpy(unpack_symbols(payload, 1 + 2 * span, count))
    exponent = (symbols - 1) % span + low
    sign = torch.where(symbols > span, -1.0, 1.0).to(torch.float64)   # any exponent of any dtype
    values = torch.where(symbols > 0, sign * torch.ldexp(torch.full_like(sign, 0.5), exponent), 0.0)
    return values.to(getattr(torch, dtype)).reshape(shape)


register(Format("codebook", encode_codebook, decode_codebook, kind="shared"))
register(Format(
    "sparse_codebook", encode_sparse_codebook, decode_sparse_codebook, kind={"sparse", "shared"},
    lower_bound=lambda nnz, rows, value_bytes: -(-nnz // 8)))
# Not "shared": a few distinct powers of two are no reason to skip it on a small tensor.
register(Format("pow2", encode_pow2, decode_pow2, kind="structured"))
