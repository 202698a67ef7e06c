"""What a file's header may hold, checked before anything is built or allocated.

A header comes from bytes that a buggy or hostile encoder may have written with a valid CRC, so
nothing in it is trusted: ``check_header`` checks the types of the network's description
(``arch``, ``config``, ``modules``, ``attachments``) and of every tensor entry (name, dtype,
shape, format, payload length), and the integers a format's parameters hold (bits, counts,
codebook sizes, exponents) against the ranges any valid file keeps; ``check_shapes`` compares
the tensors the header lists with those of the network its config describes, built on the
``meta`` device (shapes only, no memory), so that a config asking for millions of units is
refused before torch allocates them. Each failure is a ``CodecError`` saying what was wrong.
"""
from __future__ import annotations

import math

import torch

from .formats import FLOAT_DTYPES, CodecError

# dtypes a state dict of the workbench holds (floats, integer buffers, BatchNorm's counter)
TENSOR_DTYPES = FLOAT_DTYPES + ("float64", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_ELEMENTS = 1 << 31          # elements of one tensor; the zoo's largest layer has ~1e6
_COUNT = (0, 1 << 44)           # byte, bit and entry counts of a file that fits in memory

# Integer parameters of the formats (also inside their nested "values", "gaps", "indices"),
# and the range of each in any file the encoders write.
INT_RANGES = {
    "bits": (1, 32), "index_bits": (1, 32), "k": (1, 1 << 32), "alphabet": (1, 1 << 32),
    "channels": (1, MAX_ELEMENTS), "span": (1, 2200), "axis": (0, 16),
    # float64's exponents run from -1074 to 1024: anything outside is not a stored value
    "low_exponent": (-1100, 1100), "low": (-(1 << 33), 1 << 33),
    **{key: _COUNT for key in ("nbytes", "entries", "codebook_nbytes", "index_nbytes",
                               "scale_nbytes", "count", "table_nbytes", "stream_bits", "nnz",
                               "fillers", "values")},
}
CHOICES = {"order": ("row", "col"), "stored_dtype": TENSOR_DTYPES}


def _fail(where: str, key: str, value, allowed: str):
    raise CodecError(f"corrupt header: {where} {key}={value!r}: allowed is {allowed}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_meta(meta: dict, where: str) -> None:
    """The format parameters of a tensor entry, nested dicts included."""
    for key, value in meta.items():
        if isinstance(value, dict):
            check_meta(value, f"{where} {key}:")
        elif key in INT_RANGES:
            low, high = INT_RANGES[key]
            if not _is_int(value) or not low <= value <= high:
                _fail(where, key, value, f"an integer from {low} to {high}")
        elif key in CHOICES and value not in CHOICES[key]:
            _fail(where, key, value, f"one of {', '.join(CHOICES[key])}")


def check_entry(entry, position: int) -> None:
    """One tensor entry: name, dtype, shape, format, payload length, format parameters."""
    if not isinstance(entry, dict):
        _fail("tensor", str(position), entry, "a dict describing a tensor")
    name = entry.get("name")
    if not isinstance(name, str):
        _fail(f"tensor {position}", "name", name, "a string")
    where = f"tensor {name}:"
    if entry.get("dtype") not in TENSOR_DTYPES:
        _fail(where, "dtype", entry.get("dtype"), f"one of {', '.join(TENSOR_DTYPES)}")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 8 \
            or not all(_is_int(n) and 0 <= n <= MAX_ELEMENTS for n in shape) \
            or math.prod(shape) > MAX_ELEMENTS:
        _fail(where, "shape", shape, f"a list of at most 8 sizes >= 0, at most {MAX_ELEMENTS} "
                                     "elements in all")
    if not isinstance(entry.get("format"), str):
        _fail(where, "format", entry.get("format"), "a format name")
    check_meta({k: v for k, v in entry.items() if k not in ("name", "dtype", "shape", "format")},
               where)


def check_header(header) -> None:
    """The header's types and ranges (see the module notes); CodecError at the first fault."""
    if not isinstance(header, dict):
        _fail("the", "header", type(header).__name__, "a JSON object")
    if not isinstance(header.get("arch"), str):
        _fail("the", "arch", header.get("arch"), "the name of a zoo network or registered module")
    if not isinstance(header.get("config"), dict):
        _fail("the", "config", header.get("config"), "a dict of constructor arguments")
    modules = header.get("modules", [])
    if not isinstance(modules, list) or not all(
            isinstance(m, dict) and isinstance(m.get("path"), str) and m["path"]
            and isinstance(m.get("type"), str) and isinstance(m.get("config"), dict)
            for m in modules):
        _fail("the", "modules", modules, "a list of {path, type, config} with a string path and "
                                         "type and a dict config")
    attachments = header.get("attachments", {})
    if not isinstance(attachments, dict) or not all(isinstance(v, dict)
                                                    for v in attachments.values()):
        _fail("the", "attachments", attachments, "a dict {module path: dict}")
    tensors = header.get("tensors")
    if not isinstance(tensors, list):
        _fail("the", "tensors", tensors, "a list of tensor entries")
    for position, entry in enumerate(tensors):
        check_entry(entry, position)
    names = [t["name"] for t in tensors]
    if len(set(names)) != len(names):
        _fail("the", "tensors", sorted({n for n in names if names.count(n) > 1}),
              "each tensor once")


def check_shapes(expected: dict[str, torch.Size], header: dict) -> None:
    """The header's tensors are those of the network it describes (``expected``: name ->
    shape of the network built on the meta device), before any tensor is decoded."""
    listed = {t["name"]: t["shape"] for t in header["tensors"]}
    missing, unknown = sorted(set(expected) - set(listed)), sorted(set(listed) - set(expected))
    if missing or unknown:
        raise CodecError(f"the tensors do not fit the {header['arch']} network the header "
                         f"describes: missing {missing[:5]}, unexpected {unknown[:5]}")
    for name, shape in expected.items():
        if list(shape) != listed[name]:
            raise CodecError(f"the tensors do not fit the {header['arch']} network the header "
                             f"describes: {name} has shape {listed[name]} in the file, "
                             f"{list(shape)} in the network its config builds")
