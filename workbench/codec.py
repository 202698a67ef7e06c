"""The real byte format of a compressed model: ``encode(model) -> bytes``, ``decode(bytes)``.

A file is::

    b"WBNC" | version (u8) | header length (u32 LE) | header (UTF-8 JSON) | payloads | CRC32 (u32 LE)

The header names the architecture and its config, and lists every tensor of the model's plain
state dict (name, dtype, shape, format, payload length, format parameters) in payload order.
A tensor format is a pair of functions in ``FORMATS``:

- ``dense``: raw little-endian values of the tensor's dtype (or of the dtype asked for);
- ``csr32``: plain compressed sparse rows, int32 row pointers and column indices, for
  comparison;
- ``sparse_rel``: Deep Compression's format (Han et al. 2016, section 2): the nonzeros in row
  order (CSR) or column order (CSC) of the tensor viewed as a matrix, each with the *gap* to
  the previous one in ``index_bits`` bits; a gap too long for the bits is bridged by filler
  zeros.
- ``codebook``: a tensor of few distinct values (weight sharing) as its sorted distinct values
  and each element's index, packed in base k (``radix_group``: any k, not only powers of two);
- ``sparse_codebook``: both of the above, Deep Compression's pruned-and-shared layer;
- ``pow2``: values 0 or +-2^e as one symbol each (zero, or sign and exponent), packed in base k;
- ``affine`` (hinted): integers of b bits with a scale and zero point per channel, the form of
  8-bit quantization; used only when the layer's quantizer describes the tensor through
  ``codec_hint()`` and the round trip is bit-exact.

``encode`` stores every tensor in the smallest of the formats allowed (and for ``sparse_rel``
the best bit-width and order), so the bytes of a compressed model are the real length of the
best file. Float values are stored exactly (up to the sign of a zero): in two bytes when every
value is a float16 or bfloat16 number. Families add their own formats with ``register_format``.

Reversible compression (pruning masks, fake quantization) is folded into plain weights before
encoding, so ``decode(encode(m))`` is a plain network with the same outputs as ``m``.
"""
from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import torch

from . import huffman, models

MAGIC = b"WBNC"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")   # magic, version, header length


class CodecError(ValueError):
    """The bytes are not a valid workbench model file."""


# ------------------------------------------------------------------ tensor formats

FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def _encode_dense(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    target = getattr(torch, dtype) if dtype else tensor.dtype
    array = tensor.detach().to(target).contiguous().cpu()
    if target == torch.bfloat16:  # numpy has no bfloat16: store its 16 bits
        array = array.view(torch.int16)
    return array.numpy().astype(array.numpy().dtype.newbyteorder("<")).tobytes(), {}


def _decode_dense(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    stored = getattr(torch, meta.get("stored_dtype", dtype))
    numpy_type = torch.empty(0, dtype=torch.int16 if stored == torch.bfloat16 else stored).numpy().dtype
    expected = int(np.prod(shape, dtype=np.int64)) * numpy_type.itemsize
    if len(payload) != expected:
        raise CodecError(f"corrupt dense payload: {len(payload)} bytes, {list(shape)} values of "
                         f"{numpy_type.itemsize} bytes need {expected}")
    array = np.frombuffer(payload, dtype=numpy_type.newbyteorder("<")).astype(numpy_type)
    tensor = torch.from_numpy(array.copy())
    if stored == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.reshape(shape).to(getattr(torch, dtype))


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


def _sparse_rel_cost(positions: np.ndarray, bits: int, value_bits: float) -> float:
    gaps = np.diff(positions, prepend=-1) - 1
    entries = len(positions) + int((gaps >> bits).sum())
    return -(-entries * bits // 8) + entries * value_bits / 8


def sparse_entries(tensor: torch.Tensor, value_bits: float, order: str | None = None,
                   index_bits: int | None = None) -> tuple[str, int, np.ndarray, torch.Tensor]:
    """(order, index bits, stored gaps, entry values) of the smallest relative-index layout
    when a value costs ``value_bits``; fillers' values are zero. Unless given, the order
    (row / col) and bit-width are those of the smallest file."""
    flats = {o: as_matrix(tensor.detach(), o).flatten() for o in ([order] if order else ["row", "col"])}
    positions = {o: f.nonzero().flatten().numpy() for o, f in flats.items()}
    choices = [(o, b) for o in flats for b in ([index_bits] if index_bits else range(1, 17))]
    order, index_bits = min(choices, key=lambda c: _sparse_rel_cost(positions[c[0]], c[1],
                                                                       value_bits))
    flat, where = flats[order], positions[order]
    stored, is_filler = relative_gaps(where, index_bits)
    values = torch.zeros(len(stored), dtype=flat.dtype)
    values[torch.from_numpy(~is_filler)] = flat[torch.from_numpy(where)]
    return order, index_bits, stored, values


def _encode_sparse_rel(tensor: torch.Tensor, dtype: str | None = None, order: str | None = None,
                       index_bits: int | None = None) -> tuple[bytes, dict]:
    value_bytes = torch.empty(0, dtype=getattr(torch, dtype) if dtype else tensor.dtype
                              ).element_size()
    order, index_bits, stored, values = sparse_entries(tensor, 8 * value_bytes, order, index_bits)
    indices = pack_bits(stored, index_bits)
    payload = indices + _encode_dense(values, dtype)[0]
    return payload, {"order": order, "index_bits": index_bits, "entries": len(stored),
                     "index_nbytes": len(indices), "fillers": int((values == 0).sum())}


def _decode_sparse_rel(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    entries, bits = meta["entries"], meta["index_bits"]
    stored = unpack_bits(payload[:meta["index_nbytes"]], bits, entries)
    values = _decode_dense(payload[meta["index_nbytes"]:], [entries], dtype, meta)
    template = as_matrix(torch.empty(shape), meta["order"])
    flat = torch.zeros(template.numel(), dtype=values.dtype)
    positions = np.cumsum(stored.astype(np.int64) + 1) - 1
    if entries and positions[-1] >= flat.numel():
        raise CodecError(f"corrupt sparse tensor: index {positions[-1]} beyond {flat.numel()}")
    flat[torch.from_numpy(positions)] = values
    matrix = flat.view(template.shape)
    return (matrix.t() if meta["order"] == "col" else matrix).reshape(shape)


def _encode_csr32(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    matrix = as_matrix(tensor.detach(), "row")
    rows, columns = matrix.nonzero(as_tuple=True)           # row-major order
    pointers = torch.zeros(matrix.shape[0] + 1, dtype=torch.int32)
    pointers[1:] = torch.bincount(rows, minlength=matrix.shape[0]).cumsum(0)
    payload = (_encode_dense(pointers)[0] + _encode_dense(columns.to(torch.int32))[0]
               + _encode_dense(matrix[rows, columns], dtype)[0])
    return payload, {"nnz": len(columns)}


def _decode_csr32(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    n_rows, n_cols = as_matrix(torch.empty(shape), "row").shape
    nnz, head = meta["nnz"], 4 * (n_rows + 1)
    pointers = _decode_dense(payload[:head], [n_rows + 1], "int32", {}).long()
    columns = _decode_dense(payload[head:head + 4 * nnz], [nnz], "int32", {}).long()
    values = _decode_dense(payload[head + 4 * nnz:], [nnz], dtype, meta)
    rows = torch.repeat_interleave(torch.arange(n_rows), pointers.diff())
    matrix = torch.zeros(n_rows, n_cols, dtype=values.dtype)
    matrix[rows, columns] = values
    return matrix.reshape(shape)


# -- few distinct values: a codebook and packed indices (weight sharing, powers of two, ...)

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
    g, bits = radix_group(k)
    groups = unpack_bits(data, bits, -(-count // g)).astype(np.uint64)
    if len(groups) and int(groups.max()) >= k ** g:
        raise CodecError(f"corrupt packed indices: a group of {g} indices reads "
                         f"{int(groups.max())}, beyond the {k}**{g} possible")
    digits = (groups[:, None] // (np.uint64(k) ** np.arange(g, dtype=np.uint64))) % np.uint64(k)
    return digits.ravel()[:count].astype(np.int64)


def narrowest_float(tensor: torch.Tensor) -> str | None:
    """"float16" or "bfloat16" if every value of a float32 tensor survives that type exactly."""
    if tensor.dtype != torch.float32:
        return None
    for name in ("float16", "bfloat16"):
        if torch.equal(tensor.to(getattr(torch, name)).float(), tensor):
            return name
    return None


def _encode_codebook(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """The distinct values (the codebook) then each element's index, radix-packed."""
    codebook, indices = torch.unique(tensor.detach().flatten(), return_inverse=True)
    value_dtype = dtype or narrowest_float(codebook)
    values = _encode_dense(codebook, value_dtype)[0]
    meta = {"k": len(codebook), "codebook_nbytes": len(values)}
    if value_dtype:
        meta["stored_dtype"] = value_dtype
    return values + pack_symbols(indices.numpy(), len(codebook)), meta


def _decode_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    k, head = meta["k"], meta["codebook_nbytes"]
    codebook = _decode_dense(payload[:head], [k], dtype, meta)
    count = int(np.prod(shape, dtype=np.int64))
    return codebook[torch.from_numpy(unpack_symbols(payload[head:], k, count))].reshape(shape)


def _encode_pow2(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """0 or +-2^e: each element one symbol (zero, or sign and exponent), radix-packed."""
    flat = tensor.detach().flatten()
    mantissa, exponent = torch.frexp(flat)
    nonzero = flat != 0
    if not bool((mantissa[nonzero].abs() == 0.5).all()):
        raise ValueError("not all values are 0 or a power of two")
    low = int(exponent[nonzero].min()) if nonzero.any() else 0
    span = int(exponent[nonzero].max()) - low + 1 if nonzero.any() else 1
    symbols = torch.zeros_like(exponent)
    symbols[nonzero] = 1 + (exponent[nonzero] - low) + span * (flat[nonzero] < 0).to(exponent.dtype)
    return pack_symbols(symbols.numpy(), 1 + 2 * span), {"low_exponent": low, "span": span}


def _decode_pow2(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    low, span = meta["low_exponent"], meta["span"]
    count = int(np.prod(shape, dtype=np.int64))
    symbols = torch.from_numpy(unpack_symbols(payload, 1 + 2 * span, count))
    exponent = (symbols - 1) % span + low
    sign = torch.where(symbols > span, -1.0, 1.0).to(torch.float64)   # any exponent of any dtype
    values = torch.where(symbols > 0, sign * torch.ldexp(torch.full_like(sign, 0.5), exponent), 0.0)
    return values.to(getattr(torch, dtype)).reshape(shape)


def _encode_sparse_codebook(tensor: torch.Tensor, dtype: str | None = None,
                            order: str | None = None, index_bits: int | None = None
                            ) -> tuple[bytes, dict]:
    """Deep Compression's pruned and shared layer: relative positions as in ``sparse_rel``;
    each entry (fillers hold an explicit zero) stored as its index into the codebook."""
    k = len(torch.unique(tensor)) + 1          # the zero of the fillers may be one more value
    order, index_bits, stored, values = sparse_entries(tensor, float(np.log2(k)), order,
                                                       index_bits)
    indices = pack_bits(stored, index_bits)
    packed, value_meta = _encode_codebook(values, dtype)
    return indices + packed, {"order": order, "index_bits": index_bits, "entries": len(stored),
                              "index_nbytes": len(indices), "values": value_meta}


def _decode_sparse_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    head = meta["index_nbytes"]
    values = _decode_codebook(payload[head:], [meta["entries"]], dtype, meta["values"])
    # the values go back in the tensor's own dtype, not the codebook's stored one
    positions_meta = {k: v for k, v in meta.items() if k != "stored_dtype"}
    return _decode_sparse_rel(payload[:head] + _encode_dense(values)[0], shape, dtype,
                              positions_meta)


# -- formats that need a hint from the layer's quantizer (``codec_hint()``)

def _encode_affine(tensor: torch.Tensor, dtype: str | None = None, hint: dict | None = None
                   ) -> tuple[bytes, dict]:
    """Integers ``q`` of ``bits`` bits with a scale and zero point per slice of ``axis``
    (per channel) or one of each (per tensor): the value is ``(q - zero_point) * scale``."""
    if "bits" not in hint or "scale" not in hint or "zero_point" not in hint:
        raise ValueError("an affine hint needs 'scale', 'zero_point' and 'bits'")
    scale = torch.as_tensor(hint["scale"]).detach().float().reshape(-1)
    zero = torch.as_tensor(hint["zero_point"]).reshape(-1)
    bits, axis = int(hint["bits"]), int(hint.get("axis", 0))
    if not 0 <= axis < max(tensor.dim(), 1) or len(zero) != len(scale) \
            or len(scale) not in (1, tensor.shape[axis] if tensor.dim() else 1):
        raise ValueError(f"affine hint: {len(scale)} scales and {len(zero)} zero points for "
                         f"axis {axis} of a tensor of shape {list(tensor.shape)}")
    view = [1] * tensor.dim()
    if len(scale) > 1:
        view[axis] = len(scale)
    s, z = scale.reshape(view), zero.to(torch.float32).reshape(view)
    q = torch.round(tensor.detach() / s + z)
    low = int(q.min())
    if int(q.max()) - low >= 1 << bits:
        raise ValueError(f"integers span more than {bits} bits")
    payload = (_encode_dense(scale)[0] + _encode_dense(zero.to(torch.int32))[0]
               + pack_bits((q - low).flatten().to(torch.int64).numpy(), bits))
    return payload, {"bits": bits, "axis": axis, "channels": len(scale), "low": low}


def _decode_affine(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    c, bits, axis = meta["channels"], meta["bits"], meta["axis"]
    scale = _decode_dense(payload[:4 * c], [c], "float32", {})
    zero = _decode_dense(payload[4 * c:8 * c], [c], "int32", {})
    count = int(np.prod(shape, dtype=np.int64))
    q = torch.from_numpy(unpack_bits(payload[8 * c:], bits, count).astype(np.int64))
    view = [1] * len(shape)
    if c > 1:
        view[axis] = c
    q = (q + meta["low"]).to(torch.float32).reshape(shape)
    # The same expression, in the same order, as the quantizers compute: bit-exact.
    return ((q - zero.to(torch.float32).reshape(view)) * scale.reshape(view)).to(getattr(torch, dtype))


# -- Huffman-coded streams (Deep Compression's third stage): see workbench.huffman

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


def _encode_huffman_codebook(tensor: torch.Tensor, dtype: str | None = None) -> tuple[bytes, dict]:
    """A shared layer: the codebook, then each element's index Huffman-coded."""
    codebook, indices = torch.unique(tensor.detach().flatten(), return_inverse=True)
    value_dtype = dtype or narrowest_float(codebook)
    values = _encode_dense(codebook, value_dtype)[0]
    stream, stream_meta = _huffman_stream(indices.numpy(), len(codebook))
    meta = {"k": len(codebook), "codebook_nbytes": len(values), "indices": stream_meta}
    if value_dtype:
        meta["stored_dtype"] = value_dtype
    return values + stream, meta


def _decode_huffman_codebook(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    head = meta["codebook_nbytes"]
    codebook = _decode_dense(payload[:head], [meta["k"]], dtype, meta)
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


def _encode_huffman_sparse(tensor: torch.Tensor, dtype: str | None = None,
                           order: str | None = None, index_bits: int | None = None
                           ) -> tuple[bytes, dict]:
    """Deep Compression's final layer (Han et al. 2016, sec. 4): relative positions and
    codebook indices of the kept weights, both Huffman-coded, and the codebook. Unless given,
    the order and the gap alphabet (2**index_bits) are those of the smallest estimate."""
    streams = deep_compression_streams(tensor, order, index_bits)
    order, bits, stored = streams["order"], streams["index_bits"], streams["gaps"]
    codebook, indices = streams["codebook"], torch.from_numpy(streams["indices"])
    value_dtype = dtype or narrowest_float(codebook)
    book = _encode_dense(codebook, value_dtype)[0]
    gaps, gap_meta = _huffman_stream(stored, 1 << bits)
    picks, pick_meta = _huffman_stream(indices.numpy(), len(codebook))
    meta = {"order": order, "index_bits": bits, "entries": len(stored), "k": len(codebook),
            "codebook_nbytes": len(book), "gaps": gap_meta, "indices": pick_meta}
    if value_dtype:
        meta["stored_dtype"] = value_dtype
    return book + gaps + picks, meta


def _decode_huffman_sparse(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    head = meta["codebook_nbytes"]
    codebook = _decode_dense(payload[:head], [meta["k"]], dtype, meta)
    gaps = _read_huffman_stream(payload[head:], meta["gaps"])
    picks = _read_huffman_stream(payload[head + meta["gaps"]["nbytes"]:], meta["indices"])
    values = codebook[torch.from_numpy(picks)]
    positions = np.cumsum(gaps + 1) - 1
    template = as_matrix(torch.empty(shape), meta["order"])
    if len(positions) and positions[-1] >= template.numel():
        raise CodecError(f"corrupt sparse tensor: index {positions[-1]} beyond {template.numel()}")
    flat = torch.zeros(template.numel(), dtype=values.dtype)
    flat[torch.from_numpy(positions)] = values
    matrix = flat.view(template.shape)
    return (matrix.t() if meta["order"] == "col" else matrix).reshape(shape)


FORMATS = {
    "dense": (_encode_dense, _decode_dense),
    "csr32": (_encode_csr32, _decode_csr32),
    "sparse_rel": (_encode_sparse_rel, _decode_sparse_rel),
    "codebook": (_encode_codebook, _decode_codebook),
    "sparse_codebook": (_encode_sparse_codebook, _decode_sparse_codebook),
    "pow2": (_encode_pow2, _decode_pow2),
    "affine": (_encode_affine, _decode_affine),
    "huffman_codebook": (_encode_huffman_codebook, _decode_huffman_codebook),
    "huffman_sparse": (_encode_huffman_sparse, _decode_huffman_sparse),
}
SPARSE_FORMATS = ("sparse_rel", "sparse_codebook", "huffman_sparse")   # positions + values
# Formats that only apply when the layer's quantizer describes the tensor (``codec_hint``).
HINTED = {"affine"}
DEFAULT_FORMATS = ("dense", "sparse_rel", "codebook", "sparse_codebook", "pow2", "affine")
# Entropy coding is Deep Compression's separate last stage: asked for by name, so that the
# bytes of every earlier stage (pruned, shared) stay comparable with the papers' tables.
ENTROPY_FORMATS = ("huffman_codebook", "huffman_sparse")
MAX_CODEBOOK = 1 << 16        # more distinct values than this never beat plain values


def register_format(name: str, encoder, decoder, hinted: bool = False) -> None:
    """Add a tensor format (a family's own compact form, e.g. product quantization).

    ``encoder(tensor, dtype[, hint]) -> (payload, meta)`` raises ValueError when the tensor does
    not fit the format; ``decoder(payload, shape, dtype, meta)`` must give the same tensor.
    A hinted format is tried only for tensors whose quantizer returns a hint naming it.
    """
    global DEFAULT_FORMATS
    if name in FORMATS and FORMATS[name] != (encoder, decoder):
        raise ValueError(f"format {name!r} exists already; choose another name")
    FORMATS[name] = (encoder, decoder)
    if hinted:
        HINTED.add(name)
    if name not in DEFAULT_FORMATS:
        DEFAULT_FORMATS = (*DEFAULT_FORMATS, name)


def _smallest_possible(name: str, nnz: int, rows: int, value_bytes: int) -> int:
    """A lower bound on a format's payload, to skip formats that cannot win."""
    if name == "csr32":
        return nnz * (4 + value_bytes) + 4 * (rows + 1)
    if name.startswith("sparse_rel"):
        return nnz * value_bytes + -(-nnz // 8)
    if name == "sparse_codebook":
        return -(-nnz // 8)
    return 0


def _candidates(tensor: torch.Tensor, formats, hint: dict | None) -> list[str]:
    if not tensor.is_floating_point() or not tensor.dim():
        return ["dense"]
    names = [n for n in formats if n not in HINTED or (hint and hint.get("format") == n)]
    sparse = (*SPARSE_FORMATS, "csr32")
    if int(tensor.count_nonzero()) == tensor.numel() and any(n not in sparse for n in names):
        # no zeros: a sparse layout stores the same values plus positions, never smaller
        names = [n for n in names if n not in sparse]
    shared = ("codebook", "sparse_codebook", *ENTROPY_FORMATS)
    if any(n in names for n in shared) \
            and len(torch.unique(tensor)) > min(MAX_CODEBOOK, tensor.numel() // 2):
        names = [n for n in names if n not in shared]
    return names


# ------------------------------------------------------------------ models

def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` with pruning masks and parametrizations folded in.

    ``torch.nn.utils.prune`` stores ``w_orig`` and ``w_mask``: the plain tensor is their
    product. ``torch.nn.utils.parametrize`` stores ``parametrizations.w.original``: the plain
    tensor is what the module computes for ``w``.
    """
    raw = model.state_dict()
    state = {}
    for key, value in raw.items():
        prefix, _, attr = key.rpartition(".")
        if key.endswith("_mask") and key.removesuffix("_mask") + "_orig" in raw:
            continue
        if key.endswith("_orig") and key.removesuffix("_orig") + "_mask" in raw:
            state[key.removesuffix("_orig")] = value * raw[key.removesuffix("_orig") + "_mask"]
        elif ".parametrizations." in f".{key}":
            owner, _, rest = f".{key}".partition(".parametrizations.")
            name = rest.split(".")[0]
            if f"{owner}.{name}".lstrip(".") not in state:
                module = model.get_submodule(owner.lstrip("."))
                state[f"{owner}.{name}".lstrip(".")] = getattr(module, name)
        else:
            state[key] = value
    return {k: v.detach() for k, v in state.items()}


def encode_tensor(tensor: torch.Tensor, formats=None, dtype: str | None = None,
                  hint: dict | None = None, layout: dict | None = None) -> tuple[bytes, dict]:
    """(payload, header entry) of one tensor in the smallest of ``formats`` that holds it.

    Float values are stored as ``dtype`` if given; otherwise exactly, in 2 bytes when every
    value is a float16 or bfloat16 number. ``hint``: what the layer's quantizer says of the
    tensor (its scales, bits ...), needed by the hinted formats. ``layout``: a fixed
    ``order`` ("row" / "col") and ``index_bits`` for the relative-index formats, instead of
    the best per tensor.
    """
    formats = DEFAULT_FORMATS if formats is None else formats
    if isinstance(formats, str):
        raise ValueError(f"formats={formats!r}: allowed is a tuple of format names, e.g. "
                         f"('dense',)")
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ValueError(f"formats {unknown}; allowed: {', '.join(FORMATS)}")
    tensor = tensor.detach().cpu()
    as_dtype = (dtype or narrowest_float(tensor)) if tensor.is_floating_point() else None
    nnz, rows = int(tensor.count_nonzero()), as_matrix(tensor, "row").shape[0]
    value_bytes = torch.empty(0, dtype=getattr(torch, as_dtype) if as_dtype else tensor.dtype
                              ).element_size()
    best = None
    for name in _candidates(tensor, formats, hint):
        if best and _smallest_possible(name, nnz, rows, value_bytes) >= len(best[0]):
            continue
        encoder, decoder = FORMATS[name]
        try:
            if name in HINTED:
                payload, meta = encoder(tensor, as_dtype, hint=hint)
            elif name in SPARSE_FORMATS and layout:
                payload, meta = encoder(tensor, as_dtype, **layout)
            else:
                payload, meta = encoder(tensor, as_dtype)
        except ValueError:          # the tensor does not have this format's structure
            continue
        if as_dtype and "stored_dtype" not in meta:
            meta["stored_dtype"] = as_dtype
        if name in HINTED and not _round_trips(tensor, decoder, payload, meta):
            continue
        if best is None or len(payload) < len(best[0]):
            best = payload, {"format": name, **meta}
    if best is None:
        raise ValueError(f"none of the formats {list(formats)} holds this {tensor.dtype} tensor "
                         f"of shape {list(tensor.shape)}; add 'dense', which holds any tensor")
    payload, meta = best
    return payload, {"dtype": str(tensor.dtype).removeprefix("torch."),
                     "shape": list(tensor.shape), "nbytes": len(payload), **meta}


def _round_trips(tensor, decoder, payload, meta) -> bool:
    """A hinted format is used only if it gives back exactly the tensor the model computes."""
    back = decoder(payload, list(tensor.shape), str(tensor.dtype).removeprefix("torch."), meta)
    return torch.equal(back, tensor)


def codec_hints(model: torch.nn.Module) -> dict[str, dict]:
    """``{tensor name: hint}`` from the parametrizations that define ``codec_hint()``: the
    last one of a parametrized tensor describes the tensor the module computes."""
    hints = {}
    for path, module in model.named_modules():
        for name, chain in getattr(module, "parametrizations", {}).items():
            if hasattr(chain[-1], "codec_hint"):
                hints[f"{path}.{name}".lstrip(".")] = chain[-1].codec_hint()
    return hints


def encode(model: torch.nn.Module, dtype: str | None = None, formats: tuple[str, ...] = None
           ) -> bytes:
    """Bytes of ``model`` in the workbench format.

    Each tensor is stored in the smallest of ``formats``. By default: the formats an encoding
    method chose for the model (``model.codec_options``, set by ``encode.sparse`` and
    ``encode.huffman``), else every format but entropy coding (dense for a dense tensor, Deep
    Compression's relative-index format for a pruned one, packed indices and a codebook for a
    shared one ...). Floats are stored as ``dtype`` if given, else exactly.
    ``formats=("dense",), dtype="float32"`` gives the naive file, ``("csr32",)`` plain CSR.
    """
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: None (keep each tensor's own) or one of "
                         f"{', '.join(FLOAT_DTYPES)}")
    options = getattr(model, "codec_options", {})
    formats = formats if formats is not None else options.get("formats", DEFAULT_FORMATS)
    hints = codec_hints(model)
    entries, payloads = [], []
    for name, tensor in plain_state_dict(model).items():
        payload, entry = encode_tensor(tensor, formats, dtype, hints.get(name),
                                       options.get("layout"))
        entries.append({"name": name, **entry})
        payloads.append(payload)
    replaced = [{"path": path, "type": type(m).__name__, "config": m.config}
                for path, m in models.custom_modules(model)]
    header = json.dumps({"arch": models.name_of(model), "config": model.config,
                         "modules": replaced, "tensors": entries}, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(payloads)
    return body + struct.pack("<I", zlib.crc32(body))


def read_header(blob: bytes) -> dict:
    """Check the framing and checksum of ``blob`` and return its header."""
    if not isinstance(blob, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(blob).__name__}")
    blob = bytes(blob)
    if len(blob) < _PREFIX.size + 4:
        raise CodecError(f"truncated: {len(blob)} bytes, a model file has at least "
                         f"{_PREFIX.size + 4}")
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CodecError(f"not a workbench model file: starts with {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise CodecError(f"format version {version}; this workbench reads version {VERSION}")
    end = _PREFIX.size + header_len
    if end + 4 > len(blob):
        raise CodecError(f"truncated: the header needs {end + 4} bytes, the file has {len(blob)}")
    # Nothing read from damaged bytes is trusted: the header is parsed tentatively, to say
    # "truncated" rather than "corrupt" when it can, and the checksum decides.
    try:
        header = json.loads(blob[_PREFIX.size:end])
        expected = end + sum(int(t["nbytes"]) for t in header["tensors"]) + 4
    except (ValueError, KeyError, TypeError) as err:
        header, expected, header_error = None, None, err
    if expected is not None and len(blob) != expected:
        raise CodecError(f"truncated or padded: the header describes {expected} bytes, "
                         f"the file has {len(blob)}")
    (stored_crc,) = struct.unpack_from("<I", blob, len(blob) - 4)
    if zlib.crc32(blob[:-4]) != stored_crc:
        raise CodecError(f"corrupt: the CRC32 of the {len(blob)} bytes does not match the one "
                         "stored at the end")
    if header is None:
        raise CodecError(f"corrupt header: {header_error!r}")
    header["_payload_start"] = end
    return header


def decode(blob: bytes) -> torch.nn.Module:
    """The network stored in ``blob``, in eval mode."""
    header = read_header(blob)
    state, offset = {}, header["_payload_start"]
    for entry in header["tensors"]:
        payload = bytes(blob[offset:offset + entry["nbytes"]])
        offset += entry["nbytes"]
        if entry["format"] not in FORMATS:
            raise CodecError(f"tensor {entry['name']} uses format {entry['format']!r}; "
                             f"known formats: {sorted(FORMATS)}")
        try:
            state[entry["name"]] = FORMATS[entry["format"]][1](
                payload, entry["shape"], entry["dtype"], entry)
        except CodecError:
            raise
        except (ValueError, RuntimeError, IndexError, KeyError, TypeError, AttributeError,
                OverflowError) as err:     # a header entry or payload that does not add up
            raise CodecError(f"tensor {entry.get('name')} ({entry['format']}): corrupt payload "
                             f"or header entry: {err}") from err
    model = models.build(header["arch"], **header["config"])
    for entry in header.get("modules", []):
        if entry["type"] not in models.CUSTOM_MODULES:
            raise CodecError(f"the file uses module {entry['type']!r}, unknown to this "
                             f"workbench (known: {sorted(models.CUSTOM_MODULES)})")
        models.replace_module(model, entry["path"],
                              models.CUSTOM_MODULES[entry["type"]](**entry["config"]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CodecError(f"the tensors do not fit the {header['arch']} network the header "
                         f"describes: {err}") from err
    return model.eval()


def gzip_size(blob: bytes) -> int:
    """Size after general-purpose compression (what users compare against)."""
    return len(gzip.compress(blob, compresslevel=6, mtime=0))   # gzip's default level
