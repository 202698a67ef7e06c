"""Lossless encodings of a network's weights (catalogue section G): they change the file, not
the network.

``SparseFormat`` (``encode.sparse``) stores every pruned tensor in Deep Compression's sparse
format (Han et al. 2016, sec. 2): the kept values in row (CSR) or column (CSC) order, each
with the gap to the previous one in ``index_bits`` bits, filler zeros bridging longer gaps; a
shared layer's values as codebook indices. ``Huffman`` (``encode.huffman``) adds Deep
Compression's third stage: the gaps and the codebook indices Huffman-coded (Huffman 1952),
the code tables in the file (see ``workbench.huffman``).

Both return a copy of the network, identical in every weight, that carries its encoding as the
attachment ``codec_options`` (``models.attached(model, "codec_options")``): it is in the
state dict, so any later method and the file keep it, and ``codec.encode`` (and so
``measure.report``'s bytes) uses it. ``decode`` gives back a network with identical outputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from .method import Choice, Int, Method, Tags, clone_model, knob
from .models import attach


def _attach(model: nn.Module, entropy: bool, layout: dict | None) -> None:
    # What was chosen, not a list of format names: formats registered later (binary,
    # factorized ...) are then used for such a network too.
    attach(model, "codec_options", {"entropy": entropy, **({"layout": layout} if layout else {})})


def with_codec_options(model: nn.Module, entropy: bool, layout: dict | None) -> nn.Module:
    """A copy of ``model`` that the codec stores with entropy coding or not, and ``layout``."""
    out = clone_model(model)
    _attach(out, entropy, layout)
    return out


@dataclass
class _Layout(Method):
    """The layout knobs shared by both encodings."""
    sliders = {"index_bits": (0, 16, 1)}
    effects = ("encoding", "same_outputs")

    index_bits: int = knob(0, Int(0, 16))    # bits of a relative index; 0: the best per tensor
    order: str = knob("best", Choice(("best", "row", "col")))   # row: CSR, col: CSC

    def layout(self) -> dict | None:
        out = {}
        if self.index_bits:
            out["index_bits"] = int(self.index_bits)
        if self.order != "best":
            out["order"] = self.order
        return out or None

    def tags(self) -> Tags:
        # lossless; the bits per weight are those of the network it is given
        return Tags(lossless=True)

    entropy: ClassVar[bool] = False       # Huffman-code the streams

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        _attach(model, self.entropy, self.layout())
        return model


@dataclass
class SparseFormat(_Layout):
    """Deep Compression's relative-index sparse storage (fixed-length codes)."""
    id = "encode.sparse"
    reference = ("Han, Mao, Dally 2016, Deep Compression, sec. 2 (relative indices, filler "
                 "zeros)")

    # every format but entropy coding: quantized layers keep their own (int8, PQ ...)


@dataclass
class Huffman(_Layout):
    """Huffman coding of the relative indices and the codebook indices."""
    id = "encode.huffman"
    reference = ("Huffman 1952, A Method for the Construction of Minimum-Redundancy Codes; "
                 "Han, Mao, Dally 2016, Deep Compression, sec. 4")
    sliders = {"index_bits": (0, 10, 1)}

    index_bits: int = knob(0, Int(0, 10))    # an alphabet of up to 1024 gaps; 0: the best

    entropy = True


METHODS = (SparseFormat, Huffman)
