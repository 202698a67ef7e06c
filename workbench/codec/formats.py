"""The tensor format object, the one registry of formats, and the choice among them.

A format is a pair of functions (``encode``, ``decode``) with a few attributes that say when
it is worth trying; ``encode_tensor`` picks the smallest payload among the formats allowed
and decides only from those attributes, so a family adds a format by registering it here and
touches nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
MAX_CODEBOOK = 1 << 16        # more distinct values than this never beat plain values

# What a format stores, and what that means for the choice:
KINDS = {
    "dense": "every value as it is; holds any tensor, the only kind tried for integer and "
             "0-d tensors",
    "sparse": "positions of the nonzeros and their values; takes the layout options (order, "
              "index_bits); not tried on a tensor without zeros",
    "shared": "a table of distinct values and an index per element; not tried when most "
              "values are distinct",
    "entropy": "variable-length codes (Huffman), Deep Compression's separate last stage",
    "hinted": "built from the codec_hint() of the layer's quantizer: tried only when the hint "
              "names the format, kept only if the round trip is bit-exact",
    "structured": "values with a structure of their own (powers of two ...): tried on every "
                  "float tensor; encode raises ValueError when the tensor lacks it",
}


class CodecError(ValueError):
    """The bytes are not a valid workbench model file."""


def no_bound(nnz: int, rows: int, value_bytes: int) -> int:
    return 0          # nothing known: the format is always tried


@dataclass(frozen=True)
class Format:
    """One way of storing a tensor.

    ``encode(tensor, dtype, **options) -> (payload, meta)`` raises ValueError when the tensor
    does not have the format's structure; ``decode(payload, shape, dtype, meta)`` gives the
    tensor back. ``kind``: a word of ``KINDS`` or a set of them (a pruned-and-shared format is
    both "sparse" and "shared"). ``default``: in the formats tried when none are asked for
    (otherwise only by name). ``lower_bound(nnz, rows, value_bytes)``: bytes that the payload
    takes at least (0 if unknown), so that the choice skips a format that cannot win.
    """
    name: str
    encode: Callable[..., tuple[bytes, dict]]
    decode: Callable[..., torch.Tensor]
    kind: frozenset[str]
    default: bool = True
    lower_bound: Callable[[int, int, int], int] = no_bound

    def __post_init__(self):
        kind = frozenset([self.kind] if isinstance(self.kind, str) else self.kind)
        if not kind or kind - set(KINDS):
            raise ValueError(f"format {self.name!r}: kind={sorted(kind)}; allowed: one or more "
                             f"of {', '.join(KINDS)}")
        object.__setattr__(self, "kind", kind)

    def __getitem__(self, i):
        # FORMATS held (encoder, decoder) pairs before formats were objects; old callers index
        return (self.encode, self.decode)[i]


FORMATS: dict[str, Format] = {}    # in registration order: the earlier wins a tie


def register(fmt: Format) -> None:
    """Add a format to the registry (again with the same functions is harmless)."""
    if fmt.name in FORMATS and FORMATS[fmt.name] != fmt:
        raise ValueError(f"format {fmt.name!r} exists already; choose another name")
    FORMATS[fmt.name] = fmt


def register_format(name: str, encoder, decoder, hinted: bool = False) -> None:
    """Add a family's own format (e.g. product quantization), tried by default; ``hinted``:
    only for tensors whose quantizer returns a hint naming it (``encoder`` gets ``hint=``)."""
    register(Format(name, encoder, decoder, kind="hinted" if hinted else "structured"))


def default_formats() -> tuple[str, ...]:
    return tuple(name for name, fmt in FORMATS.items() if fmt.default)


def entropy_formats() -> tuple[str, ...]:
    return tuple(name for name, fmt in FORMATS.items() if "entropy" in fmt.kind)


def narrowest_float(tensor: torch.Tensor) -> str | None:
    """"float16" or "bfloat16" if every value of a float32 tensor survives that type exactly."""
    if tensor.dtype != torch.float32:
        return None
    for name in ("float16", "bfloat16"):
        if torch.equal(tensor.to(getattr(torch, name)).float(), tensor):
            return name
    return None


def _candidates(tensor: torch.Tensor, names, hint: dict | None) -> list[Format]:
    if not tensor.is_floating_point() or not tensor.dim():
        return [fmt for fmt in FORMATS.values() if "dense" in fmt.kind]
    chosen = [FORMATS[n] for n in names
              if "hinted" not in FORMATS[n].kind or (hint and hint.get("format") == n)]
    if int(tensor.count_nonzero()) == tensor.numel() and any("sparse" not in f.kind
                                                             for f in chosen):
        # no zeros: a sparse layout stores the same values plus positions, never smaller
        chosen = [f for f in chosen if "sparse" not in f.kind]
    if any("shared" in f.kind for f in chosen) \
            and len(torch.unique(tensor)) > min(MAX_CODEBOOK, tensor.numel() // 2):
        chosen = [f for f in chosen if "shared" not in f.kind]
    return chosen


def _options(fmt: Format, hint: dict | None, layout: dict | None) -> dict:
    if "hinted" in fmt.kind:
        return {"hint": hint}
    return dict(layout) if "sparse" in fmt.kind and layout else {}


def encode_tensor(tensor: torch.Tensor, formats=None, dtype: str | None = None,
                  hint: dict | None = None, layout: dict | None = None) -> tuple[bytes, dict]:
    """(payload, header entry) of one tensor in the smallest of ``formats`` that holds it.

    Float values are stored as ``dtype`` if given; otherwise exactly, in 2 bytes when every
    value is a float16 or bfloat16 number. ``hint``: what the layer's quantizer says of the
    tensor (its scales, bits ...), needed by the hinted formats. ``layout``: a fixed
    ``order`` ("row" / "col") and ``index_bits`` for the sparse formats, instead of the best
    per tensor.
    """
    formats = default_formats() if formats is None else formats
    if isinstance(formats, str):
        raise ValueError(f"formats={formats!r}: allowed is a tuple of format names, e.g. "
                         f"('dense',)")
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ValueError(f"formats {unknown}; allowed: {', '.join(FORMATS)}")
    tensor = tensor.detach().cpu()
    as_dtype = (dtype or narrowest_float(tensor)) if tensor.is_floating_point() else None
    nnz = int(tensor.count_nonzero())
    rows = tensor.shape[0] if tensor.dim() > 1 else 1       # of the tensor seen as a matrix
    value_bytes = torch.empty(0, dtype=getattr(torch, as_dtype) if as_dtype else tensor.dtype
                              ).element_size()
    best = None
    order = list(FORMATS)           # registration order: the earlier wins a tie
    candidates = _candidates(tensor, formats, hint)
    # Structured formats (1-bit, ternary, powers of two) are cheap to try and, when the tensor
    # has their structure, small: trying them first lets the lower bounds skip the costly
    # sparse layouts. The choice is still the smallest payload, the earlier format on a tie.
    for fmt in sorted(candidates, key=lambda f: "structured" not in f.kind):
        if best and _cannot_win(fmt, fmt.lower_bound(nnz, rows, value_bytes), best, order):
            continue
        try:
            payload, meta = fmt.encode(tensor, as_dtype, **_options(fmt, hint, layout))
        except ValueError:          # the tensor does not have this format's structure
            continue
        if as_dtype and "stored_dtype" not in meta:
            meta["stored_dtype"] = as_dtype
        if "hinted" in fmt.kind and not _round_trips(tensor, fmt, payload, meta):
            continue
        if best is None or (len(payload), order.index(fmt.name)) < \
                (len(best[0]), order.index(best[1]["format"])):
            best = payload, {"format": fmt.name, **meta}
    if best is None:
        raise ValueError(f"none of the formats {list(formats)} holds this {tensor.dtype} tensor "
                         f"of shape {list(tensor.shape)}; add 'dense', which holds any tensor")
    payload, meta = best
    own = str(tensor.dtype).removeprefix("torch.")
    return payload, {"dtype": own, "shape": list(tensor.shape), "nbytes": len(payload),
                     **_without_own_dtype(meta, own)}


def _without_own_dtype(meta: dict, own: str) -> dict:
    """``meta`` without the ``stored_dtype`` entries that name the tensor's own dtype (the
    decoders' default): the file is then the same whether ``dtype`` named that type or not."""
    return {key: _without_own_dtype(value, own) if isinstance(value, dict) else value
            for key, value in meta.items() if not (key == "stored_dtype" and value == own)}


def _cannot_win(fmt: Format, bound: int, best, order: list[str]) -> bool:
    """Whether a format whose payload takes at least ``bound`` bytes loses to ``best``."""
    size = len(best[0])
    return bound > size or (bound == size
                            and order.index(fmt.name) > order.index(best[1]["format"]))


def _round_trips(tensor, fmt: Format, payload, meta) -> bool:
    """A hinted format is used only if it gives back exactly the tensor the model computes."""
    back = fmt.decode(payload, list(tensor.shape), str(tensor.dtype).removeprefix("torch."), meta)
    return torch.equal(back, tensor)
