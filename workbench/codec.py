"""The real byte format of a compressed model: ``encode(model) -> bytes``, ``decode(bytes)``.

A file is::

    b"WBNC" | version (u8) | header length (u32 LE) | header (UTF-8 JSON) | payloads | CRC32 (u32 LE)

The header names the architecture and its config, and lists every tensor of the model's plain
state dict (name, dtype, shape, format, payload length) in payload order. A tensor format is
a pair of functions in ``FORMATS``; this version has ``dense`` (raw little-endian values of the
tensor's dtype, or of the dtype asked for). Later families add their own formats (sparse,
packed indices with codebooks, Huffman) to ``FORMATS``.

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


FORMATS = {"dense": (_encode_dense, _decode_dense)}


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


FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def encode(model: torch.nn.Module, dtype: str | None = None) -> bytes:
    """Bytes of ``model`` in the workbench format (dense; floats stored as ``dtype`` if given)."""
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: None (keep each tensor's own) or one of "
                         f"{', '.join(FLOAT_DTYPES)}")
    entries, payloads = [], []
    for name, tensor in plain_state_dict(model).items():
        as_dtype = dtype if dtype and tensor.is_floating_point() else None
        payload, meta = _encode_dense(tensor, as_dtype)
        if as_dtype:
            meta["stored_dtype"] = as_dtype
        entries.append({"name": name, "dtype": str(tensor.dtype).removeprefix("torch."),
                        "shape": list(tensor.shape), "format": "dense",
                        "nbytes": len(payload), **meta})
        payloads.append(payload)
    header = json.dumps({"arch": models.name_of(model), "config": model.config,
                         "tensors": entries}, separators=(",", ":")).encode()
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
    model.load_state_dict(state)
    return model.eval()


def gzip_size(blob: bytes) -> int:
    """Size after general-purpose compression (what users compare against)."""
    return len(gzip.compress(blob, compresslevel=6, mtime=0))   # gzip's default level
