"""Huffman-coded formats, Deep Compression's third stage (Han et al. 2016, sec. 4); the codes
themselves are in ``workbench.huffman``.

- ``huffman_codebook``: a shared layer, the codebook and each element's index Huffman-coded;
- ``huffman_sparse``: a pruned and shared layer, the relative positions and the codebook
  indices both Huffman-coded.

Not tried by default: entropy coding is asked for by name (``encode.huffman``), so that the
bytes of every earlier stage (pruned, shared) stay comparable with the papers' tables.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import huffman
from .dense import decode_dense, encode_dense
from .formats import CodecError, Format, narrowest_float, register
from .sparse import scatter_entries, sparse_entries


def _huffman_stream(symbols: np.ndarray, alphabet: int) -> tuple[bytes, dict]:
    """Code table then bit stream; the meta keeps the sizes and the entropy bound beside."""
    table, stream, bits = huffman.encode(symbols, alphabet)
    return table + stream, {"alphabet": alphabet, "count": len(symbols), "table_nbytes":
                            len(table), "stream_bits": bits, "nbytes": len(table) + len(stream),
                            "entropy_bits": round(huffman.entropy_bits(symbols), 1)}


def _read_huffman_stream(payload: bytes, meta: dict) -> np.ndarray:
    head = meta["table_nbytes"]
    try:
        return huffman.decode(payload[:head], payload[head:meta["nbytes"]], meta["count"],
                              bits=meta["stream_bits"])
    except huffman.HuffmanError as err:
        raise CodecError(str(err)) from err


def encode_huffman_codebook(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """A shared layer: the codebook, then each element's index Huffman-coded."""
    codebook, indices = torch.unique(tensor.detach().flatten(), return_inverse=True)
    value_dtype = dtype or narrowest_float(codebook)
    values = encode_dense(codebook, value_dtype)[0]
    stream, stream_meta = _huffman_stream(indices.numpy(), len(codebook))
    meta = {"k": len(codebook), "codebook_nbytes": len(values), "indices": stream_meta}
    if value_dtype:
        meta["stored_dtype"] = value_dtype
    return values + stream, meta


def decode_huffman_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    head = meta["codebook_nbytes"]
    codebook = decode_dense(payload[:head], [meta["k"]], dtype, meta)
    indices = _read_huffman_stream(payload[head:], meta["indices"])
    return codebook[torch.from_numpy(indices)].reshape(shape)


def _huffman_sparse_cost(tensor: torch.Tensor, order: str, bits: int) -> float:
    """Entropy of the gap stream and of the value stream of one layout (a close estimate of
    the Huffman-coded size, used to choose the layout)."""
    _, _, stored, values = sparse_entries(tensor, 0, order, bits)
    _, indices = torch.unique(values, return_inverse=True)
    return huffman.entropy_bits(stored) + huffman.entropy_bits(indices.numpy()) + 8 * (1 << bits)


def deep_compression_streams(tensor: torch.Tensor, order: str | None = None,
                             index_bits: int | None = None) -> dict:
    """The two symbol streams Deep Compression Huffman-codes for a pruned, shared tensor, in
    the layout ``huffman_sparse`` would choose: ``gaps`` (relative indices, fillers included)
    and ``indices`` (each entry's codebook index), with the ``codebook``."""
    order, index_bits = min(((o, b) for o in ([order] if order else ["row", "col"])
                             for b in ([index_bits] if index_bits else range(2, 11))),
                            key=lambda ob: _huffman_sparse_cost(tensor, *ob))
    _, _, stored, values = sparse_entries(tensor, 0, order, index_bits)
    codebook, indices = torch.unique(values, return_inverse=True)
    return {"order": order, "index_bits": index_bits, "gaps": stored,
            "indices": indices.numpy(), "codebook": codebook}


def encode_huffman_sparse(tensor: torch.Tensor, dtype: str | None = None,
                          order: str | None = None, index_bits: int | None = None
                          ) -> tuple[bytes, dict]:
    """Deep Compression's final layer: relative positions and codebook indices of the kept
    weights, both Huffman-coded, and the codebook. Unless given, the order and the gap
    alphabet (2**index_bits) are those of the smallest estimate."""
    streams = deep_compression_streams(tensor, order, index_bits)
    order, bits, stored = streams["order"], streams["index_bits"], streams["gaps"]
    codebook, indices = streams["codebook"], torch.from_numpy(streams["indices"])
    value_dtype = dtype or narrowest_float(codebook)
    book = encode_dense(codebook, value_dtype)[0]
    gaps, gap_meta = _huffman_stream(stored, 1 << bits)
    picks, pick_meta = _huffman_stream(indices.numpy(), len(codebook))
    meta = {"order": order, "index_bits": bits, "entries": len(stored), "k": len(codebook),
            "codebook_nbytes": len(book), "gaps": gap_meta, "indices": pick_meta}
    if value_dtype:
        meta["stored_dtype"] = value_dtype
    return book + gaps + picks, meta


def decode_huffman_sparse(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    head = meta["codebook_nbytes"]
    codebook = decode_dense(payload[:head], [meta["k"]], dtype, meta)
    gaps = _read_huffman_stream(payload[head:], meta["gaps"])
    picks = _read_huffman_stream(payload[head + meta["gaps"]["nbytes"]:], meta["indices"])
    return scatter_entries(gaps, codebook[torch.from_numpy(picks)], shape, meta["order"])


register(Format("huffman_codebook", encode_huffman_codebook, decode_huffman_codebook,
                kind={"shared", "entropy"}, default=False))
register(Format("huffman_sparse", encode_huffman_sparse, decode_huffman_sparse,
                kind={"sparse", "shared", "entropy"}, default=False))
