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

``encode`` stores every tensor in the smallest of the formats allowed (and for ``sparse_rel``
the best bit-width and order), so the bytes of a pruned model are the real length of the best
file. Later families add their formats (packed codebook indices, Huffman) to ``FORMATS``.

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

from . import models

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
    matrix = tensor.reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.reshape(1, -1)
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


def _sparse_rel_cost(positions: np.ndarray, bits: int, value_bytes: int) -> int:
    gaps = np.diff(positions, prepend=-1) - 1
    entries = len(positions) + int((gaps >> bits).sum())
    return -(-entries * bits // 8) + entries * value_bytes


def _encode_sparse_rel(tensor: torch.Tensor, dtype: str | None = None, order: str | None = None,
                       index_bits: int | None = None) -> tuple[bytes, dict]:
    """Unless given, the order (row / col) and bit-width are those of the smallest file."""
    value_bytes = torch.empty(0, dtype=getattr(torch, dtype) if dtype else tensor.dtype
                              ).element_size()
    flats = {o: as_matrix(tensor.detach(), o).flatten() for o in ([order] if order else ["row", "col"])}
    positions = {o: f.nonzero().flatten().numpy() for o, f in flats.items()}
    choices = [(o, b) for o in flats for b in ([index_bits] if index_bits else range(1, 17))]
    order, index_bits = min(choices, key=lambda c: _sparse_rel_cost(positions[c[0]], c[1],
                                                                       value_bytes))
    flat, where = flats[order], positions[order]
    stored, is_filler = relative_gaps(where, index_bits)
    values = torch.zeros(len(stored), dtype=flat.dtype)
    values[torch.from_numpy(~is_filler)] = flat[torch.from_numpy(where)]
    indices = pack_bits(stored, index_bits)
    payload = indices + _encode_dense(values, dtype)[0]
    return payload, {"order": order, "index_bits": index_bits, "entries": len(stored),
                     "index_nbytes": len(indices), "fillers": int(is_filler.sum())}


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


FORMATS = {
    "dense": (_encode_dense, _decode_dense),
    "csr32": (_encode_csr32, _decode_csr32),
    "sparse_rel": (_encode_sparse_rel, _decode_sparse_rel),
}
DEFAULT_FORMATS = ("dense", "sparse_rel")


def _smallest_possible(name: str, nnz: int, rows: int, value_bytes: int) -> int:
    """A lower bound on a format's payload, to skip formats that cannot win."""
    if name == "csr32":
        return nnz * (4 + value_bytes) + 4 * (rows + 1)
    if name.startswith("sparse_rel"):
        return nnz * value_bytes + -(-nnz // 8)
    return 0


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


def encode_tensor(tensor: torch.Tensor, formats=DEFAULT_FORMATS,
                  dtype: str | None = None) -> tuple[bytes, dict]:
    """(payload, header entry) of one tensor in the smallest of ``formats``."""
    as_dtype = dtype if dtype and tensor.is_floating_point() else None
    candidates = formats if tensor.is_floating_point() and tensor.dim() else ("dense",)
    unknown = [name for name in candidates if name not in FORMATS]
    if unknown:
        raise ValueError(f"formats {unknown}; allowed: {', '.join(FORMATS)}")
    nnz, rows = int(tensor.count_nonzero()), as_matrix(tensor, "row").shape[0]
    value_bytes = torch.empty(0, dtype=getattr(torch, as_dtype) if as_dtype else tensor.dtype
                              ).element_size()
    best = None
    for name in candidates:
        if best and _smallest_possible(name, nnz, rows, value_bytes) >= len(best[0]):
            continue
        payload, meta = FORMATS[name][0](tensor, as_dtype)
        if best is None or len(payload) < len(best[0]):
            best = payload, {"format": name, **meta}
    payload, meta = best
    if as_dtype:
        meta["stored_dtype"] = as_dtype
    return payload, {"dtype": str(tensor.dtype).removeprefix("torch."),
                     "shape": list(tensor.shape), "nbytes": len(payload), **meta}


def encode(model: torch.nn.Module, dtype: str | None = None,
           formats: tuple[str, ...] = DEFAULT_FORMATS) -> bytes:
    """Bytes of ``model`` in the workbench format.

    Each tensor is stored in the smallest of ``formats`` (dense for a dense tensor, Deep
    Compression's relative-index sparse format for a pruned one); floats as ``dtype`` if given.
    ``formats=("dense",)`` gives the naive file, ``("csr32",)`` plain CSR for comparison.
    """
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: None (keep each tensor's own) or one of "
                         f"{', '.join(FLOAT_DTYPES)}")
    entries, payloads = [], []
    for name, tensor in plain_state_dict(model).items():
        payload, entry = encode_tensor(tensor, formats, dtype)
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
        state[entry["name"]] = FORMATS[entry["format"]][1](
            payload, entry["shape"], entry["dtype"], entry)
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
