"""Property-based tests of the decoder (Hypothesis): real files of compressed zoo networks,
damaged the ways a bad disk, a buggy encoder or a hostile one would, must raise ``CodecError``
or decode to a network; never another exception, never a large allocation.

- truncation at any length;
- byte flips with the CRC recomputed (as a buggy encoder would write it), in the header as
  stored (deflated), in the header's JSON text before it is deflated, or in the payloads: a
  file that still decodes must give a network, and the check (outputs against the original's)
  says whether it differs;
- header edits, the JSON re-serialized with a consistent length and CRC: any value at any
  place, and values that are impossible for what they describe (0 bits, a codebook of no
  entries, a config asking for millions of units, an exponent of 10**12): the latter must be
  refused with a CodecError.

A decode runs under an address-space cap (``memory_cap``): an allocation of more than
``ALLOWED_BYTES`` fails there, and counts as the defect "large allocation". Each check returns
``None`` or ``(class of defect, detail)``; ``/work/figs/s23/count_defects.py`` counts them.
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import struct
import zlib

import pytest
import torch
from conftest import with_crc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench
from workbench import codec

LONG = os.environ.get("WORKBENCH_PROPERTIES") == "long"
ALLOWED_BYTES = 768 << 20         # a small network's file never needs more to decode
_PREFIX = struct.Struct("<4sBI")


def budget(ci: int, long: int) -> settings:
    return settings(max_examples=long if LONG else ci, derandomize=not LONG, database=None,
                    deadline=None, suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------ real files

def real_files() -> dict[str, bytes]:
    """Files of compressed zoo networks covering every format the codec writes by default or
    by request, registered custom modules and attachments. Small networks, fixed seeds."""
    from conftest import untrained

    from workbench import METHODS, data
    torch.manual_seed(0)
    lenet300, lenet5 = untrained("lenet300", seed=3), untrained("lenet5", seed=3)
    train = data.load("mnist", "train").subset(64, seed=0)
    M = METHODS
    made = {
        "dense": lenet5,
        "sparse": M["prune.magnitude"](sparsity=0.9).apply(lenet300),
        "sparse_codebook": M["quant.kmeans"](k=8).apply(
            M["prune.magnitude"](sparsity=0.8).apply(lenet300)),
        "huffman": M["encode.huffman"]().apply(M["quant.kmeans"](k=8).apply(
            M["prune.magnitude"](sparsity=0.8).apply(lenet300))),
        "pow2": M["quant.log"](bits=4).apply(lenet5),
        "signs_ternary": M["ternary.twn"](epochs=0).apply(lenet5),
        "binary": M["binary.sign"]().apply(lenet5),
        "row_codebook": M["binary.sketch"](tensors=2).apply(lenet5),
        "affine": M["quant.int8"](calibration=16).apply(lenet5, train),
        "pq": M["quant.pq"](subvector=25, k=4).apply(lenet5),
        "factorized": M["lowrank.svd"](rank=4, epochs=0).apply(lenet300),
    }
    return {name: codec.encode(model) for name, model in made.items()}


_FILES: dict = {}
_ORIGINALS: dict = {}


def files() -> dict[str, bytes]:
    if not _FILES:
        with workbench.train.quiet():
            _FILES.update(real_files())
        for name, blob in _FILES.items():
            model = codec.decode(blob)
            _ORIGINALS[name] = (model, _outputs(model))
    return _FILES


def _outputs(model) -> torch.Tensor:
    x = torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x)


# ------------------------------------------------------------------ the guard and the check

@contextlib.contextmanager
def memory_cap(extra: int = ALLOWED_BYTES):
    """Cap the address space at what the process uses now plus ``extra`` bytes."""
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def decode_problem(blob: bytes, name: str, impossible: bool = False) -> tuple[str, str] | None:
    """None if ``blob`` raises CodecError, or decodes to a runnable network (the check
    compares its outputs with the original's; a difference is what a flip may cause).
    ``impossible``: the file holds a value nothing valid holds, so only CodecError will do."""
    try:
        with memory_cap():
            model = codec.decode(blob)
            out = _outputs(model)
    except codec.CodecError:
        return None
    except MemoryError as err:
        return "large_allocation", f"{name}: MemoryError {str(err)[:80]}"
    except RuntimeError as err:
        if "alloc" in str(err).lower() or "memory" in str(err).lower():
            return "large_allocation", f"{name}: {str(err)[:100]}"
        return "crash", f"{name}: RuntimeError: {str(err)[:120]}"
    except Exception as err:          # noqa: BLE001 - anything else is the defect
        return "crash", f"{name}: {type(err).__name__}: {str(err)[:120]}"
    if impossible:
        return "impossible_value_decoded", f"{name}: decoded silently"
    _, original = _ORIGINALS[name]
    different = out.shape != original.shape or not torch.equal(out, original)
    del different        # either is allowed: the check has told the two apart
    return None


# ------------------------------------------------------------------ damage

def split(blob: bytes) -> tuple[dict, bytes]:
    header = codec.read_header(blob)
    return header, blob[header.pop("_payload_start"):-4]


def join(header, payloads: bytes) -> bytes:
    return with_crc(codec.header_block(header) + payloads)


def flip(blob: bytes, at: int, mask: int) -> bytes:
    raw = bytearray(blob[:-4])
    raw[at % len(raw)] ^= mask
    return with_crc(bytes(raw))


def flip_text(header: dict, payloads: bytes, at: int, mask: int) -> bytes:
    """A byte of the header's JSON text flipped, then deflated: what the deflated header
    protects from a bad disk, a buggy encoder writes with its own checksums right."""
    text = bytearray(json.dumps(header, separators=(",", ":")).encode())
    text[at % len(text)] ^= mask
    packed = zlib.compress(bytes(text), 9)
    return with_crc(_PREFIX.pack(codec.MAGIC, codec.VERSION, len(packed)) + packed + payloads)


def paths(node, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


def set_at(node, path, value):
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def delete_at(node, path):
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from(
        [0, -1, 1, 2**31, 10**12, 3002100]), st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6)

# Keys of a tensor entry (or of its nested streams) and values no valid file holds there.
IMPOSSIBLE = {
    "bits": [0, -1, 33, 2.5, "8", None], "index_bits": [0, -1, 33, 1.5, None],
    "k": [0, -1, 2**40, 1.5, "4"], "entries": [-1, 2**40, 0.5], "nbytes": [-1, 2.5, "3"],
    "channels": [0, -1, 2**40], "span": [0, -1, 2**40], "low_exponent": [10**12, -10**12],
    "codebook_nbytes": [-1, 2**40], "index_nbytes": [-1, 2**40], "count": [-1, 2**40],
    "scale_nbytes": [-1, 2**40], "shape": [[-1], [2**40, 2**40], "x", [1.5], None],
    "dtype": ["float99", 5, None], "format": [5, None, ["dense"]], "name": [5, None],
    "stored_dtype": ["int99", 5], "table_nbytes": [-1, 2**40], "stream_bits": [-1, 2**60],
    "alphabet": [0, -1, 2**40], "low": [2**70, 1.5],
}
TOP_IMPOSSIBLE = {"arch": [5, None, ["lenet5"], {"a": 1}, "no_such_net"],
                  "config": [5, "x", None, [1], {"hidden": [3002100]},
                             {"hidden": [10**9, 10**9]}, {"no_such_arg": 1}],
                  "modules": [5, "x", {"a": 1}, [5], [{"path": 5}],
                              [{"path": "net.1", "type": "NoSuchModule", "config": {}}]],
                  "tensors": [5, None, "x", {"a": 1}, [5]]}


def corruption(name: str) -> st.SearchStrategy:
    """(kind, damaged bytes, impossible?) for the file ``name``."""
    blob = files()[name]
    header, payloads = split(blob)
    cut = st.integers(0, len(blob) - 1).map(lambda n: ("truncate", blob[:n], False))
    flipped = st.tuples(st.integers(0, len(blob) - 5), st.integers(1, 255)).map(
        lambda a: ("flip", flip(blob, *a), False))
    header_end = len(blob) - len(payloads) - 4
    header_flip = st.tuples(st.integers(_PREFIX.size, header_end - 1), st.integers(1, 255)).map(
        lambda a: ("header_flip", flip(blob, *a), False))
    text_length = len(json.dumps(header, separators=(",", ":")))
    text_flip = st.tuples(st.integers(0, text_length - 1), st.integers(1, 255)).map(
        lambda a: ("header_text_flip", flip_text(header, payloads, *a), False))
    places = [p for p, _ in paths(header) if p]

    def edit(path, value):
        h = json.loads(json.dumps(header))
        set_at(h, path, value)
        return "header_edit", join(h, payloads), False

    def remove(path):
        h = json.loads(json.dumps(header))
        delete_at(h, path)
        return "header_edit", join(h, payloads), False

    def impossible(path, value):
        h = json.loads(json.dumps(header))
        set_at(h, path, value)
        return "impossible_value", join(h, payloads), True

    targets = [(p, v) for p, _ in paths(header) if p and isinstance(p[-1], str)
               and p[0] == "tensors" for v in IMPOSSIBLE.get(p[-1], [])]
    targets += [((key,), v) for key, values in TOP_IMPOSSIBLE.items() for v in values]
    return st.one_of(
        cut, flipped, header_flip, text_flip,
        st.tuples(st.sampled_from(places), JSON_VALUES).map(lambda a: edit(*a)),
        st.sampled_from(places).map(remove),
        st.sampled_from(targets).map(lambda a: impossible(*a)))


FILE_NAMES = ["dense", "sparse", "sparse_codebook", "huffman", "pow2", "signs_ternary",
              "binary", "row_codebook", "affine", "pq", "factorized"]


@pytest.mark.parametrize("name", FILE_NAMES)
@budget(ci=12, long=1000)
@given(st.data())
def test_damaged_files_raise_codec_error_or_decode(name, data):
    kind, blob, impossible = data.draw(corruption(name), label="damage")
    problem = decode_problem(blob, name, impossible)
    assert problem is None, (kind, problem)


def test_the_files_cover_every_default_format():
    used = {t["format"] for blob in files().values() for t in codec.read_header(blob)["tensors"]}
    assert set(codec.default_formats()) | {"huffman_sparse"} <= used | {"codebook", "csr32"}


def test_the_guard_catches_a_large_allocation():
    with pytest.raises((MemoryError, RuntimeError)), memory_cap():
        torch.empty(ALLOWED_BYTES // 2, dtype=torch.float64).fill_(1.0)
