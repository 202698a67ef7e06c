"""8-bit approximation of gradients (Dettmers 2016, "8-Bit Approximations for Parallelism in
Deep Learning"): the dynamic tree data type, applied to every gradient during training.

Data parallelism sends each worker's gradients over the network every step; Dettmers sends
them as 8-bit codes plus one 32-bit scale per tensor (the max |g|) instead of 32-bit floats.

The dynamic tree format of one byte (Dettmers 2016, Fig. 2), bits from the most significant:

    sign | E zeros (the decimal exponent) | indicator bit 1 | 6 - E linear fraction bits

A code with exponent E and fraction f (F = 6 - E bits) is ``(-1)^sign * 10^-E * m`` with m the
midpoint of leaf f of the bisection of [0.1, 1] into 2^F equal parts, so large magnitudes get
many fraction bits and tiny ones a wide range. The code with no indicator bit (7 zeros) is 0;
its sign-set twin 0x80 stands for +1.0, so the tensor's max is exact (the convention of
Dettmers's own bitsandbytes, ``create_dynamic_map``): 256 distinct values.

``GradientCodec`` registers a ``Tensor.register_hook`` on every parameter: the gradient is
replaced by decode(encode(gradient)) before the optimizer sees it, and the bytes of the real
codes (plus a 4-byte scale) are counted beside the 4 bytes per value of float32. ``Grad8``
attaches the counts to the trained network (``gradient_traffic(model)``), so they travel with
copies and the file. One worker
is simulated (every gradient crosses the "network" once a step); activations (Dettmers's
model parallelism) are not compressed here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import nn

from ..method import Choice, Tags, TrainingMethod, knob
from ..models import attach, attached


# ------------------------------------------------------------------ the dynamic tree format

def decode_byte(code: int) -> float:
    """The value of one dynamic-tree byte, read bit by bit as the format says."""
    sign, rest = code >> 7, code & 0x7F
    if rest == 0:
        return 1.0 if sign else 0.0
    exponent = 7 - rest.bit_length()          # zeros before the indicator bit
    fraction_bits = 6 - exponent
    leaf = rest & ((1 << fraction_bits) - 1)
    mantissa = 0.1 + 0.9 * (leaf + 0.5) / (1 << fraction_bits)
    return (-1.0 if sign else 1.0) * 10.0 ** -exponent * mantissa


@lru_cache(maxsize=1)
def _codebook() -> torch.Tensor:
    return torch.tensor([decode_byte(c) for c in range(256)], dtype=torch.float64)


def dynamic_tree_codebook() -> torch.Tensor:
    """Value of each of the 256 codes (index = the byte), float64, in units of the scale."""
    return _codebook().clone()


@lru_cache(maxsize=1)
def _sorted_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values, order = _codebook().float().sort()
    return values, order.to(torch.uint8), (values[1:] + values[:-1]) / 2


def quantize_dynamic_tree(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 of x's shape, scale = max|x| float32): each x / scale to the nearest code."""
    scale = x.detach().abs().max().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    _, order, midpoints = _sorted_table()
    rank = torch.bucketize((x.detach().float() / scale).flatten(), midpoints)
    return order[rank].view(x.shape), scale


def dequantize_dynamic_tree(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 values of ``codes`` times ``scale``."""
    return _codebook().float()[codes.long()] * scale


def quantize_linear8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain symmetric 8-bit for comparison: int8 codes round(127 x / max|x|), and the scale."""
    scale = x.detach().abs().max().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(x.detach().float() / scale * 127).to(torch.int8), scale


def dequantize_linear8(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return codes.float() / 127 * scale


def encoded_bytes(codes: torch.Tensor, scale: torch.Tensor) -> int:
    """Length of what is sent: the codes' raw bytes and the float32 scale."""
    return len(codes.contiguous().numpy().tobytes()) + len(scale.float().numpy().tobytes())


FORMATS = {"dynamic_tree": (quantize_dynamic_tree, dequantize_dynamic_tree),
           "linear": (quantize_linear8, dequantize_linear8)}


# ------------------------------------------------------------------ gradients in training

class GradientCodec:
    """Replace every parameter's gradient by its 8-bit approximation while active; count bytes.

    Use as a context manager around ``train.fit``: the tensor hooks are removed on exit.
    ``fmt="fp32"`` sends the gradients unchanged (the baseline) and counts the same way.
    """

    def __init__(self, model: nn.Module, fmt: str = "dynamic_tree"):
        self.model, self.fmt = model, fmt
        self.sent, self.fp32, self.tensors, self.handles = 0, 0, 0, []

    def _hook(self, grad: torch.Tensor) -> torch.Tensor:
        self.fp32 += 4 * grad.numel()
        self.tensors += 1
        if self.fmt == "fp32":
            self.sent += len(grad.detach().float().numpy().tobytes())
            return grad
        encode, decode = FORMATS[self.fmt]
        codes, scale = encode(grad)
        self.sent += encoded_bytes(codes, scale)
        return decode(codes, scale).to(grad.dtype)

    def __enter__(self):
        self.handles = [p.register_hook(self._hook) for p in self.model.parameters()
                        if p.requires_grad]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def traffic(self) -> dict:
        return {"format": self.fmt, "gradient_tensors": self.tensors, "bytes_sent": self.sent,
                "bytes_fp32": self.fp32, "ratio": self.fp32 / max(self.sent, 1)}


def gradient_traffic(model: nn.Module) -> dict | None:
    """The gradient bytes counted while ``quant.grad8`` trained ``model`` (None: not trained
    by it): format, gradient_tensors, bytes_sent, bytes_fp32, ratio."""
    return attached(model, "gradient_traffic")


@dataclass
class Grad8(TrainingMethod):
    """Train with every gradient sent as 8 bits (dynamic tree, or linear for comparison, or
    fp32 as the baseline). Weights stay float32; ``gradient_traffic(model)`` gives the bytes."""
    id = "quant.grad8"
    reference = "Dettmers 2016, 8-Bit Approximations for Parallelism in Deep Learning"
    sliders = {"epochs": (0, 10, 1), "lr": (0.001, 0.1, 0.001)}
    smoke = {"epochs": 1}
    effects = ("different_outputs",)   # it trains; the stored weights stay float32

    gradients: str = knob("dynamic_tree", Choice(("dynamic_tree", "linear", "fp32")))
    epochs: int = 1
    lr: float = 0.01
    weight_decay: float = 1e-4

    def tags(self) -> Tags:
        # the stored weights are float32: 8 bits is for the traffic
        return replace(super().tags(), bits_per_weight=32.0)

    def compress(self, model, data=None):
        with GradientCodec(model, self.gradients) as codec:
            if self.epochs:
                self.fit(model, data)
        attach(model, "gradient_traffic", codec.traffic())
        return model


METHODS = (Grad8,)
