"""Scalar number formats: fixed point Qm.n (Gupta et al. 2015), fp16 / bf16, and per-layer
bit-widths under a size budget (Lin, Talathi, Annapureddy 2016).

``fixed_point(x, word, frac, rounding)`` puts ``x`` on the grid ``k * 2**-frac`` with ``k`` a
``word``-bit two's-complement integer, saturating outside it. Round-to-nearest rounds halves
up (``floor(x / eps + 1/2)``, Gupta et al.'s definition); stochastic rounding rounds up with
probability equal to the distance from the lower grid point, so ``E[round(x)] = x``: an update
smaller than half a step survives in expectation instead of being lost.

``FixedPoint`` trains as Gupta et al. do, with the network held in fixed point:

- weights AND biases of every Conv2d / Linear are put on the grid after every SGD step (the
  float update ``w - lr * g`` is computed, then stored back rounded with the chosen rounding:
  this is where round-to-nearest loses small updates);
- every Conv2d / Linear output (the dot product, accumulated in float as their multiply-
  accumulate unit accumulates in wide precision, then rounded once) is rounded to Q(word,
  act_frac) in the forward pass, with a straight-through gradient;
- NOT quantized: the input images, the back-propagated errors and the gradients (float32).

The activations take ``act_frac`` fraction bits (default: the weights' ``frac``). One format
for both saturates LeNet-300-100's activations once ``frac >= 12`` (range +-8) and training
fails whatever the rounding (measured); ``act_frac=8`` keeps them in range.

Plain SGD (no momentum; no weight decay unless ``weight_decay`` is set), so the step reaching
the weights is exactly ``lr * grad``. The returned model holds fixed-point weights and biases;
the activation rounding is a training / evaluation context (``fixed_point_activations``), not
part of the stored network, so ``decode(encode(m))`` is a plain network with the same outputs.

``Float16`` stores every float tensor as fp16 or bf16 (the values are rounded to the type, the
network still computes in fp32 and the codec stores 2 bytes per value). ``compute_in(model,
dtype)`` runs the network itself in that type, to compare accuracy and CPU latency.

``BitAllocation`` quantizes each layer to its own fixed-point word length. Lin et al. model a
layer's quantization noise as ``1/SQNR_i ~ 10**(-kappa * b_i / 10)`` (kappa ~ 6 dB per bit) and
the output noise as the sum over layers; minimizing the size ``sum n_i b_i`` at fixed output
SQNR gives ``b_i - b_j = 10 log10(n_j / n_i) / kappa`` (about half a bit less per doubling of a
layer's weights). Rule ``"sqnr"`` uses that model, rule ``"sensitivity"`` replaces it by the
noise measured at the logits when one layer alone is quantized; both spend the budget
exactly (dynamic programming on the integer problem, whose continuous relaxation is the
closed form; it reproduces the closed form when that is integer).

The functions on tensors (the grid, the roundings, the allocation) are in ``scalar_tensors``
and importable from here.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..hooks import hooked
from ..method import (Choice, Int, Method, Optional, Real, Tags, TrainingMethod, clone_model,
                      knob)
from ..train import Hook, seeded
from .core import quantizable_layers
from .scalar_tensors import (HALF_TYPES, KAPPA, ROUNDINGS, allocate_bits, best_frac,  # noqa: F401
                             fixed_point, fixed_point_range, fixed_point_ste, quantize_layer,
                             round_to, sqnr_bits, sqnr_noise)

# ------------------------------------------------------------------ fixed point


@contextlib.contextmanager
def fixed_point_activations(model: nn.Module, word: int, frac: int, rounding: str = "nearest",
                            generator: torch.Generator | None = None):
    """Within the block, every Conv2d / Linear output is rounded to Q(word, frac) (STE).
    The model's mode is left to the caller (training happens inside the block)."""
    def hook(module, inputs, output, name):
        return fixed_point_ste(output, word, frac, rounding, generator)
    with hooked(model, {name: hook for name, _ in quantizable_layers(model)}, eval_mode=False):
        yield model


class KeepFixedPoint(Hook):
    """After every optimizer step, store each layer's weight and bias back in fixed point."""

    def __init__(self, word, frac, rounding, generator):
        self.word, self.frac, self.rounding, self.generator = word, frac, rounding, generator

    def after_step(self, model):
        for _, module in quantizable_layers(model):
            for p in (module.weight, module.bias):
                if p is not None:
                    p.copy_(fixed_point(p, self.word, self.frac, self.rounding, self.generator))


@dataclass
class FixedPoint(TrainingMethod):
    """Qm.n fixed point for inference, or for training from the start (Gupta et al. 2015).

    ``epochs=0``: round the weights and biases of the given network (post-training).
    ``epochs>0``: train in fixed point (see the module docstring for what is quantized),
    from the given network (``init="model"``) or from a fresh seeded initialization
    (``init="scratch"``, what Gupta et al. do). ``seed`` also drives stochastic rounding.
    """
    id = "quant.fixed_point"
    reference = ("Gupta, Agrawal, Gopalakrishnan, Narayanan 2015, Deep Learning with Limited "
                 "Numerical Precision")
    sliders = {"word": (2, 32, 1), "frac": (0, 24, 1), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")

    word: int = knob(16, Int(2, 32))
    frac: int = knob(12, Int(-16, 40))
    act_frac: int | None = knob(None, Optional(Int(-16, 40)))   # activations (None: frac)
    rounding: str = knob("stochastic", Choice(ROUNDINGS))
    epochs: int = 0
    init: str = knob("model", Choice(("model", "scratch")))
    lr: float = 0.05

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.word))

    def settings(self) -> dict:
        shown = dict(super().settings())
        if not self.epochs:
            for name in ("act_frac", "init", "lr", "batch_size", "weight_decay"):
                shown.pop(name)
        return shown

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        generator = torch.Generator().manual_seed(self.seed)
        if self.init == "scratch" and self.epochs:
            with seeded(self.seed):   # layer init draws from the global RNG: a forked one
                for m in model.modules():
                    if m is not model and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        keep = KeepFixedPoint(self.word, self.frac, self.rounding, generator)
        with torch.no_grad():
            keep.after_step(model)
        if self.epochs:
            act = self.frac if self.act_frac is None else self.act_frac
            with fixed_point_activations(model, self.word, act, self.rounding, generator):
                self.fit(model, data, hooks=[keep], momentum=0.0, nesterov=False,
                         schedule="constant")
        return model


# ------------------------------------------------------------------ fp16 / bf16

class ComputeIn(nn.Module):
    """Runs ``model`` in ``dtype``: the input is cast in, the logits cast back to fp32."""

    def __init__(self, model: nn.Module, dtype: str):
        super().__init__()
        self.dtype = getattr(torch, dtype)
        self.model = model.to(self.dtype)

    def forward(self, x):
        return self.model(x.to(self.dtype)).float()


def compute_in(model: nn.Module, dtype: str) -> nn.Module:
    """A copy of ``model`` computing in fp16 / bf16 (every weight, activation, accumulator
    as torch's CPU kernels for that type do). Not encodable: for measurements only."""
    return ComputeIn(clone_model(model), dtype).eval()


@dataclass
class Float16(Method):
    """fp16 / bf16 storage: every float tensor rounded to the 16-bit type (2 bytes each in
    the codec); the network computes in fp32. ``compute_in`` runs it in the type itself.
    Not lossless: the rounding changes the outputs (a little)."""
    id = "quant.float16"
    reference = ("IEEE 754 half precision (fp16) and Google's bfloat16 (seed 002: "
                 "'Google TPUs bfloat16')")
    sliders = {}
    effects = ("fewer_bytes", "different_outputs")

    dtype: str = knob("bfloat16", Choice(HALF_TYPES))

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=16.0)

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.copy_(round_to(t, self.dtype))
        return model


# ------------------------------------------------------------------ bit allocation

@torch.no_grad()
def output_noise(model: nn.Module, x: torch.Tensor, layer: str, bits: int) -> float:
    """1 / SQNR at the logits when only ``layer`` is quantized to ``bits`` bits."""
    reference = model(x)
    module = model.get_submodule(layer)
    original = module.weight.detach().clone()
    module.weight.copy_(quantize_layer(original, bits))
    try:
        noisy = model(x)
    finally:
        module.weight.copy_(original)
    return ((noisy - reference).pow(2).mean() / reference.pow(2).mean()).item()


@dataclass
class BitAllocation(Method):
    """Per-layer fixed-point bit-widths under a size budget (Lin et al. 2016).

    ``budget`` is the average number of bits per weight over the Conv2d / Linear weights
    (biases stay fp32, as in the uniform case it is compared with). Rules: ``uniform`` (every
    layer ``floor(budget)`` bits, the baseline), ``sqnr`` (Lin et al.'s closed form, no data),
    ``sensitivity`` (the output noise of each layer measured on ``calibration`` training
    images drawn with ``seed``).
    """
    id = "quant.bit_allocation"
    reference = ("Lin, Talathi, Annapureddy 2016, Fixed Point Quantization of Deep "
                 "Convolutional Networks")
    sliders = {"budget": (2.0, 8.0, 0.25)}
    smoke = {"calibration": 8, "max_bits": 4}
    effects = ("fewer_bytes", "different_outputs")

    budget: float = knob(3.0, Real(2.0, 16.0))     # within [min_bits, max_bits]
    rule: str = knob("sensitivity", Choice(("uniform", "sqnr", "sensitivity")))
    min_bits: int = knob(2, Int(2, 16))
    max_bits: int = knob(8, Int(2, 16))
    calibration: int = knob(256, Int(1, 60000))
    seed: int = knob(0, Int(0, 2**31 - 1))

    def validate(self):
        if self.max_bits < self.min_bits:
            raise ValueError(f"BitAllocation.max_bits={self.max_bits}: allowed is a number of "
                             f"bits from min_bits={self.min_bits} to 16")
        if not self.min_bits <= self.budget <= self.max_bits:
            raise ValueError(f"BitAllocation.budget={self.budget!r}: allowed is a number from "
                             f"min_bits={self.min_bits} to max_bits={self.max_bits}")

    def tags(self) -> Tags:
        bits = math.floor(self.budget) if self.rule == "uniform" else self.budget
        return replace(super().tags(), needs_data=self.rule == "sensitivity",
                       bits_per_weight=float(bits))

    def settings(self) -> dict:
        shown = dict(super().settings())
        if self.rule != "sensitivity":
            shown.pop("calibration")
            shown.pop("seed")
        return shown

    def allocate(self, model: nn.Module, data=None) -> dict[str, int]:
        """Layer name -> bits."""
        layers = quantizable_layers(model)
        sizes = [m.weight.numel() for _, m in layers]
        if self.rule == "uniform":
            bits = [math.floor(self.budget)] * len(layers)
        elif self.rule == "sqnr":
            bits = allocate_bits(sizes, lambda i, b: sqnr_noise(b), self.budget,
                                 self.min_bits, self.max_bits)
        else:
            if data is None:
                raise ValueError("BitAllocation rule='sensitivity' needs data (calibration "
                                 "images); rule='sqnr' does not")
            x, _ = data.subset(min(self.calibration, len(data)), seed=self.seed).tensors()
            model.eval()
            table = {(i, b): output_noise(model, x, name, b) for i, (name, _) in
                     enumerate(layers) for b in range(self.min_bits, self.max_bits + 1)}
            bits = allocate_bits(sizes, lambda i, b: table[i, b], self.budget,
                                 self.min_bits, self.max_bits)
        return {name: b for (name, _), b in zip(layers, bits)}

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        bits = self.allocate(model, data)
        with torch.no_grad():
            for name, module in quantizable_layers(model):
                module.weight.copy_(quantize_layer(module.weight, bits[name]))
        return model


METHODS = (FixedPoint, Float16, BitAllocation)
