"""The file around the tensors: framing, header, checksum; ``encode(model)`` and ``decode``.

A file is::

    b"WBNC" | version (u8) | header length (u32 LE) | header | payloads | CRC32 (u32 LE)

where the header is UTF-8 JSON deflated with zlib (version 2) or plain (version 1, still read).
Deflating it matters on the smallest files: the JSON repeats names and field names, and on a
Deep Compression LeNet the plain header was a noticeable share of the whole file.

The header names the network's root ("arch": a zoo name or a registered class name) and its
config, the registered custom modules inside it ("modules"), its attachments when it has some
("attachments": path -> dict), and every tensor of its plain state dict (name, dtype, shape,
format, payload length, format parameters) in payload order.
"""
from __future__ import annotations

import gzip
import json
import struct
import zlib

import torch

from .. import models
from .formats import (FLOAT_DTYPES, FORMATS, CodecError, default_formats, encode_tensor,
                      entropy_formats)
from .schema import check_header, check_shapes

MAGIC = b"WBNC"
VERSION = 2                        # 2: the header is deflated; 1: plain JSON (read, not written)
READABLE = (1, 2)
MAX_HEADER = 1 << 20               # bytes of inflated header, far above any zoo network's
_PREFIX = struct.Struct("<4sBI")   # magic, version, header length
_EXTRA_STATE = "_extra_state"      # torch's key for a module's get_extra_state()


def plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of ``model``'s state dict with pruning masks and parametrizations folded in.

    ``torch.nn.utils.prune`` stores ``w_orig`` and ``w_mask``: the plain tensor is their
    product. ``torch.nn.utils.parametrize`` stores ``parametrizations.w.original``: the plain
    tensor is what the module computes for ``w``. Extra state (attachments) is not a tensor
    and is left out.
    """
    raw = model.state_dict()
    state = {}
    for key, value in raw.items():
        if key.rpartition(".")[2] == _EXTRA_STATE:
            continue
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


def codec_hints(model: torch.nn.Module) -> dict[str, dict]:
    """``{tensor name: hint}`` from the parametrizations that define ``codec_hint()``: the
    last one of a parametrized tensor describes the tensor the module computes."""
    hints = {}
    for path, module in model.named_modules():
        for name, chain in getattr(module, "parametrizations", {}).items():
            if hasattr(chain[-1], "codec_hint"):
                hints[f"{path}.{name}".lstrip(".")] = chain[-1].codec_hint()
    return hints


def _structure(model: torch.nn.Module) -> dict:
    """The header's description of the network, without its tensors. ValueError when a file
    could not rebuild it."""
    arch = models.architecture_of(model)
    replaced = []
    for path, module in models.custom_modules(model):
        if not isinstance(getattr(module, "config", None), dict):
            raise ValueError(f"cannot store the {type(module).__name__} at {path}: it has no "
                             f"self.config, the dict of constructor arguments")
        replaced.append({"path": path, "type": type(module).__name__, "config": module.config})
    attachments = {path: module.info for path, module in model.named_modules()
                   if isinstance(module, models.Attachment)}
    structure = {"arch": arch, "config": model.config, "modules": replaced}
    if attachments:     # only then: the files of models without any stay as they were
        structure["attachments"] = attachments
    return structure


def encode(model: torch.nn.Module, dtype: str | None = None, formats: tuple[str, ...] = None
           ) -> bytes:
    """Bytes of ``model`` in the workbench format.

    Each tensor is stored in the smallest of ``formats``. By default: every default format
    (dense for a dense tensor, Deep Compression's relative-index format for a pruned one,
    packed indices and a codebook for a shared one ...), plus entropy coding if an encoding
    method asked for it (``attached(model, "codec_options")``, set by ``encode.sparse`` and
    ``encode.huffman``, with their layout). Floats are stored as ``dtype`` if given, else
    exactly.
    ``formats=("dense",), dtype="float32"`` gives the naive file, ``("csr32",)`` plain CSR.
    """
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; allowed: None (keep each tensor's own) or one of "
                         f"{', '.join(FLOAT_DTYPES)}")
    structure = _structure(model)
    options = models.attached(model, "codec_options") or {}
    if formats is None:
        formats = default_formats() + (entropy_formats() if options.get("entropy") else ())
    hints = codec_hints(model)
    entries, payloads = [], []
    for name, tensor in plain_state_dict(model).items():
        payload, entry = encode_tensor(tensor, formats, dtype, hints.get(name),
                                       options.get("layout"))
        entries.append({"name": name, **entry})
        payloads.append(payload)
    try:
        start = header_block({**structure, "tensors": entries})
    except TypeError as err:
        raise ValueError(f"cannot store a {type(model).__name__}: its config is not JSON-able "
                         f"({err})") from err
    body = start + b"".join(payloads)
    return body + struct.pack("<I", zlib.crc32(body))


def header_block(header: dict) -> bytes:
    """The start of a file: magic, version, length and the deflated JSON ``header`` (the
    tensors' payloads and the CRC32 follow). Tests forge damaged files with it."""
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > MAX_HEADER:      # what read_header would refuse is not written
        raise ValueError(f"the header is {len(text)} bytes of JSON; a file's header may have at "
                         f"most {MAX_HEADER}")
    packed = zlib.compress(text, 9)
    return _PREFIX.pack(MAGIC, VERSION, len(packed)) + packed


def _inflate(packed: bytes) -> bytes:
    """The JSON text of a version 2 header; at most ``MAX_HEADER`` bytes, so that a few
    hostile bytes cannot inflate to gigabytes."""
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(packed, MAX_HEADER + 1)
    except zlib.error as err:
        raise ValueError(f"the header does not inflate ({err})") from None
    if len(text) > MAX_HEADER:
        raise ValueError(f"the header inflates past {MAX_HEADER} bytes")
    if not inflater.eof or inflater.unused_data:
        raise ValueError("the deflated header is cut short or followed by stray bytes")
    return text


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
    if version not in READABLE:
        raise CodecError(f"format version {version}; this workbench reads versions "
                         f"{', '.join(map(str, READABLE))}")
    end = _PREFIX.size + header_len
    if end + 4 > len(blob):
        raise CodecError(f"truncated: the header needs {end + 4} bytes, the file has {len(blob)}")
    # Nothing read from damaged bytes is trusted: the header is parsed tentatively, to say
    # "truncated" rather than "corrupt" when it can, and the checksum decides.
    try:
        text = blob[_PREFIX.size:end]
        header = json.loads(_inflate(text) if version == 2 else text)
        expected = end + sum(int(t["nbytes"]) for t in header["tensors"]) + 4
    except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as err:
        # RecursionError: JSON nested thousands deep; OverflowError: a size of 1e400
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
    check_header(header)
    header["_payload_start"] = end
    return header


def _decode_tensors(blob: bytes, header: dict) -> dict[str, torch.Tensor]:
    state, offset = {}, header["_payload_start"]
    for entry in header["tensors"]:
        payload = bytes(blob[offset:offset + entry["nbytes"]])
        offset += entry["nbytes"]
        if entry["format"] not in FORMATS:
            raise CodecError(f"tensor {entry['name']} uses format {entry['format']!r}; "
                             f"known formats: {sorted(FORMATS)}")
        try:
            state[entry["name"]] = FORMATS[entry["format"]].decode(
                payload, entry["shape"], entry["dtype"], entry)
        except CodecError:
            raise
        except (ValueError, RuntimeError, IndexError, KeyError, TypeError, AttributeError,
                ArithmeticError) as err:     # a header entry or payload that does not add up
            raise CodecError(f"tensor {entry.get('name')} ({entry['format']}): corrupt payload "
                             f"or header entry: {err}") from err
    return state


def _rebuild(header: dict) -> torch.nn.Module:
    """The network the header describes, freshly initialized, with its attachments.

    Everything that shapes the network (its config, custom modules, resized layers) belongs
    here: ``decode`` calls this once on the meta device, to check the header's shapes before
    anything is allocated, then for real."""
    arch = header["arch"]
    try:
        model = models.build(arch, **header["config"])
    except Exception as err:      # a config from a file may break a constructor any way
        raise CodecError(f"the file's network {arch!r} cannot be built here from config "
                         f"{_short(header['config'])} ({type(err).__name__}: {err}); a network of "
                         f"your own must be registered with @workbench.models.register_module "
                         f"before decoding") from err
    for entry in header.get("modules", []):
        if entry["type"] not in models.CUSTOM_MODULES or entry["type"] == "Attachment":
            raise CodecError(f"the file uses module {entry['type']!r}, unknown to this "
                             f"workbench (known: {sorted(models.CUSTOM_MODULES)})")
        try:
            models.replace_module(model, entry["path"],
                                  models.CUSTOM_MODULES[entry["type"]](**entry["config"]))
        except Exception as err:  # as above, for a module inside the network
            raise CodecError(f"the file's module {entry['type']} at {entry['path']!r} cannot be "
                             f"built from config {_short(entry['config'])} "
                             f"({type(err).__name__}: {err})") from err
    for path, info in header.get("attachments", {}).items():
        try:
            models.replace_module(model, path, models.Attachment(info))
        except Exception as err:  # a path from a file may name no module
            raise CodecError(f"the file's attachment at {path!r} cannot be placed: {err}") \
                from err
    return model


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected_shapes(header: dict) -> dict[str, torch.Size]:
    """Name -> shape of the tensors of the network the header describes, built on the meta
    device: sizes only, nothing allocated, whatever the config asks for."""
    with torch.device("meta"):
        model = _rebuild(header)
    return {k: v.shape for k, v in model.state_dict().items()
            if isinstance(v, torch.Tensor) and k.rpartition(".")[2] != _EXTRA_STATE}


def decode(blob: bytes) -> torch.nn.Module:
    """The network stored in ``blob``, in eval mode. The header is checked (types, ranges,
    and the shapes of the network it describes) before any tensor or module is made."""
    header = read_header(blob)
    check_shapes(_expected_shapes(header), header)
    state = _decode_tensors(blob, header)
    model = _rebuild(header)
    # attachments are loaded as what they are, extra state
    state.update({f"{path}.{_EXTRA_STATE}": module.info for path, module in
                  model.named_modules() if isinstance(module, models.Attachment)})
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CodecError(f"the tensors do not fit the {header['arch']} network the header "
                         f"describes: {err}") from err
    return model.eval()


def gzip_size(blob: bytes) -> int:
    """Size after general-purpose compression (what users compare against)."""
    return len(gzip.compress(blob, compresslevel=6, mtime=0))   # gzip's default level
