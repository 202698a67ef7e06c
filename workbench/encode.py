"""Lossless encodings of a network's weights (catalogue section G): they change the file, not
the network.

``SparseFormat`` (``encode.sparse``) stores every pruned tensor in Deep Compression's sparse
format (Han et al. 2016, sec. 2): the kept values in row (CSR) or column (CSC) order, each
with the gap to the previous one in ``index_bits`` bits, filler zeros bridging longer gaps; a
shared layer's values as codebook indices. ``Huffman`` (``encode.huffman``) adds Deep
Compression's third stage: the gaps and the codebook indices Huffman-coded (Huffman 1952),
the code tables in the file (see ``workbench.huffman``).

Both return a copy of the network, identical in every weight, that carries its encoding in
``codec_options``; ``codec.encode`` (and so ``measure.report``'s bytes) uses it, and any later
method keeps it. ``decode`` gives back a network with identical outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from . import codec
from .method import Method, clone_model


def with_codec_options(model: nn.Module, formats: tuple, layout: dict | None) -> nn.Module:
    out = clone_model(model)
    out.codec_options = {"formats": tuple(formats), "layout": layout or None}
    return out


@dataclass
class _Layout(Method):
    """The layout knobs shared by both encodings."""
    sliders = {"index_bits": (0, 16, 1)}

    index_bits: int = 0           # bits of a relative index; 0: the best per tensor
    order: str = "best"           # "best" | "row" (CSR) | "col" (CSC)

    def validate(self):
        self._check_int("index_bits", 0, 16)       # 0: the best per tensor
        self._check_choice("order", ("best", "row", "col"))

    def layout(self) -> dict | None:
        out = {}
        if self.index_bits:
            out["index_bits"] = int(self.index_bits)
        if self.order != "best":
            out["order"] = self.order
        return out or None

    def bits_per_weight(self) -> None:
        return None       # lossless: the bits per weight are those of the network it is given


@dataclass
class SparseFormat(_Layout):
    """Deep Compression's relative-index sparse storage (fixed-length codes)."""
    id = "encode.sparse"
    reference = ("Han, Mao, Dally 2016, Deep Compression, sec. 2 (relative indices, filler "
                 "zeros)")

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        # every format but entropy coding: quantized layers keep their own (int8, PQ ...)
        return with_codec_options(model, codec.DEFAULT_FORMATS, self.layout())


@dataclass
class Huffman(_Layout):
    """Huffman coding of the relative indices and the codebook indices."""
    id = "encode.huffman"
    reference = ("Huffman 1952, A Method for the Construction of Minimum-Redundancy Codes; "
                 "Han, Mao, Dally 2016, Deep Compression, sec. 4")
    sliders = {"index_bits": (0, 10, 1)}

    def validate(self):
        super().validate()
        self._check_int("index_bits", 0, 10)       # an alphabet of up to 1024 gaps

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        return with_codec_options(model, codec.DEFAULT_FORMATS + codec.ENTROPY_FORMATS,
                                  self.layout())


METHODS = (SparseFormat, Huffman)
