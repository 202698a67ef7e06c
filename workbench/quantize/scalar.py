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

Plain SGD (no momentum, no weight decay), so the step reaching the weights is exactly
``lr * grad``. The returned model holds fixed-point weights and biases; the activation
rounding is a training / evaluation context (``fixed_point_activations``), not part of the
stored network, so ``decode(encode(m))`` is a plain network with the same outputs.

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
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..method import Method, clone_model
from ..train import Hook, Recipe, fit
from .core import quantizable_layers

# ------------------------------------------------------------------ fixed point on tensors

ROUNDINGS = ("nearest", "stochastic")


def fixed_point_range(word: int, frac: int) -> tuple[float, float, float]:
    """(lowest, highest, step) of Q(word, frac): two's complement integers times 2**-frac."""
    step = 2.0 ** -frac
    return -(2 ** (word - 1)) * step, (2 ** (word - 1) - 1) * step, step


def fixed_point(x: torch.Tensor, word: int, frac: int, rounding: str = "nearest",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` rounded to the ``word``-bit fixed-point grid with ``frac`` fraction bits.

    Values beyond the range saturate to its ends (Gupta et al.'s Convert). Division and
    multiplication by a power of two are exact in floating point, so the result is exactly a
    grid point.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    scaled = x / 2.0 ** -frac
    if rounding == "nearest":
        k = torch.floor(scaled + 0.5)
    else:   # floor(s + u), u ~ U[0, 1): up with probability s - floor(s), hence unbiased
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        k = torch.floor(scaled + u)
    k = k.clamp(-(2 ** (word - 1)), 2 ** (word - 1) - 1)
    return k * 2.0 ** -frac


def fixed_point_ste(x, word, frac, rounding="nearest", generator=None):
    """Forward: ``fixed_point``; backward: identity (straight-through)."""
    return x + (fixed_point(x.detach(), word, frac, rounding, generator) - x).detach()


def best_frac(w: torch.Tensor, word: int) -> int:
    """The fraction length with the smallest squared rounding error (nearest) for ``w``.

    Starts from the largest fraction that does not saturate the largest |w| and tries up to
    six more bits (saturating a few outliers can pay for a finer step).
    """
    top = w.abs().max().item()
    if top == 0:
        return word - 1
    start = word - 1 - math.floor(math.log2(top)) - 1
    errors = {f: (fixed_point(w, word, f) - w).pow(2).sum().item() for f in range(start, start + 7)}
    return min(errors, key=errors.get)


@contextlib.contextmanager
def fixed_point_activations(model: nn.Module, word: int, frac: int, rounding: str = "nearest",
                            generator: torch.Generator | None = None):
    """Within the block, every Conv2d / Linear output is rounded to Q(word, frac) (STE)."""
    def hook(module, inputs, output):
        return fixed_point_ste(output, word, frac, rounding, generator)
    handles = [m.register_forward_hook(hook) for _, m in quantizable_layers(model)]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


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
class FixedPoint(Method):
    """Qm.n fixed point for inference, or for training from the start (Gupta et al. 2015).

    ``epochs=0``: round the weights and biases of the given network (post-training).
    ``epochs>0``: train in fixed point (see the module docstring for what is quantized),
    from the given network (``init="model"``) or from a fresh seeded initialization
    (``init="scratch"``, what Gupta et al. do).
    """
    id = "quant.fixed_point"
    reference = ("Gupta, Agrawal, Gopalakrishnan, Narayanan 2015, Deep Learning with Limited "
                 "Numerical Precision")
    progress: ClassVar[bool] = True
    sliders = {"word": (2, 32, 1), "frac": (0, 24, 1), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    needs_data = True

    word: int = 16
    frac: int = 12
    act_frac: int | None = None     # fraction bits of the activations (None: same as frac)
    rounding: str = "stochastic"    # "nearest" | "stochastic"
    epochs: int = 0
    init: str = "model"             # "model" | "scratch"
    lr: float = 0.05
    batch_size: int = 128
    seed: int = 0

    def validate(self):
        self._check_int("word", 2, 32)
        self._check_int("frac", -16, 40)
        if self.act_frac is not None:
            self._check_int("act_frac", -16, 40)
        self._check_choice("rounding", ROUNDINGS)
        self._check_choice("init", ("model", "scratch"))
        self._check_int("epochs", 0, 1000)
        self._check_int("batch_size", 1, 1 << 16)
        self._check_int("seed", 0, 2**31 - 1)
        self._check_range("lr", 1e-8, 10.0)

    def bits_per_weight(self) -> float:
        return float(self.word)

    def settings(self) -> dict:
        shown = dict(self.params())
        if not self.epochs:
            for knob in ("act_frac", "init", "lr", "batch_size"):
                shown.pop(knob)
        return shown

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        out = clone_model(model)
        generator = torch.Generator().manual_seed(self.seed)
        if self.init == "scratch" and self.epochs:
            with torch.random.fork_rng():
                torch.manual_seed(self.seed)
                for m in out.modules():
                    if m is not out and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        keep = KeepFixedPoint(self.word, self.frac, self.rounding, generator)
        with torch.no_grad():
            keep.after_step(out)
        if self.epochs:
            if data is None:
                raise ValueError("FixedPoint with epochs > 0 needs data: the training set")
            act = self.frac if self.act_frac is None else self.act_frac
            recipe = Recipe(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                            momentum=0.0, nesterov=False, weight_decay=0.0,
                            schedule="constant", seed=self.seed)
            with fixed_point_activations(out, self.word, act, self.rounding, generator):
                fit(out, data, recipe, hooks=[keep], progress=self.progress)
        return out.eval()


# ------------------------------------------------------------------ fp16 / bf16

HALF_TYPES = ("float16", "bfloat16")


def round_to(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """``x`` rounded to fp16 / bf16 (torch's cast: round to nearest even) and back to fp32."""
    return x.to(getattr(torch, dtype)).to(x.dtype)


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
    the codec); the network computes in fp32. ``compute_in`` runs it in the type itself."""
    id = "quant.float16"
    reference = ("IEEE 754 half precision (fp16) and Google's bfloat16 (seed 002: "
                 "'Google TPUs bfloat16')")
    sliders = {}

    dtype: str = "bfloat16"         # "float16" | "bfloat16"

    def validate(self):
        self._check_choice("dtype", HALF_TYPES)

    def bits_per_weight(self) -> float:
        return 16.0

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        out = clone_model(model)
        with torch.no_grad():
            for t in list(out.parameters()) + list(out.buffers()):
                if t.is_floating_point():
                    t.copy_(round_to(t, self.dtype))
        return out.eval()


# ------------------------------------------------------------------ bit allocation

KAPPA = 6.02      # dB of SQNR per bit of a uniform quantizer (Lin et al.)


def sqnr_bits(sizes: list[int], budget: float, kappa: float = KAPPA) -> list[float]:
    """Lin et al.'s optimal (real-valued) bit-widths: ``b_i - b_j = 10 log10(n_j/n_i)/kappa``
    with ``sum n_i b_i = budget * sum n_i``."""
    offsets = [-10 * math.log10(n) / kappa for n in sizes]
    total = sum(sizes)
    c = budget - sum(n * o for n, o in zip(sizes, offsets)) / total
    return [c + o for o in offsets]


def sqnr_noise(bits: int, kappa: float = KAPPA) -> float:
    """Lin et al.'s noise model: 1 / SQNR of a ``bits``-bit quantizer, up to a constant."""
    return 10 ** (-kappa * bits / 10)


def allocate_bits(sizes: list[int], noise, budget: float, low: int = 2, high: int = 8
                  ) -> list[int]:
    """Integer bit-widths with ``sum n_i b_i <= budget * sum n_i`` minimizing ``sum_i
    noise(i, b_i)``, exactly.

    Lin et al.'s closed form is the continuous relaxation; rounding it can waste much of the
    budget when one large layer cannot afford its next bit, so the integer problem (a small
    knapsack) is solved by dynamic programming over the layers, keeping only the (size, noise)
    pairs that no other partial allocation beats on both.
    """
    cap = budget * sum(sizes) + 1e-9
    if low * sum(sizes) > cap:
        raise ValueError(f"budget {budget} bits per weight is below the minimum {low}")
    front = [(0, 0.0, ())]                       # (size so far, noise so far, bits so far)
    for i, n in enumerate(sizes):
        rest = low * sum(sizes[i + 1:])           # the layers after still need `low` bits
        options = sorted((c + n * b, e + noise(i, b), bits + (b,)) for c, e, bits in front
                         for b in range(low, high + 1) if c + n * b + rest <= cap)
        front, best = [], math.inf
        for option in options:                    # cheapest first: keep strict improvements
            if option[1] < best:
                front.append(option)
                best = option[1]
    return list(min(front, key=lambda t: (t[1], t[0]))[2])


def quantize_layer(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` in ``bits``-bit fixed point, fraction length chosen for the smallest error."""
    return fixed_point(w, bits, best_frac(w, bits))


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
    images).
    """
    id = "quant.bit_allocation"
    reference = ("Lin, Talathi, Annapureddy 2016, Fixed Point Quantization of Deep "
                 "Convolutional Networks")
    needs_data = True
    sliders = {"budget": (2.0, 8.0, 0.25)}
    smoke = {"calibration": 8, "max_bits": 4}

    budget: float = 3.0
    rule: str = "sensitivity"       # "uniform" | "sqnr" | "sensitivity"
    min_bits: int = 2
    max_bits: int = 8
    calibration: int = 256
    seed: int = 0

    def validate(self):
        self._check_choice("rule", ("uniform", "sqnr", "sensitivity"))
        self._check_int("min_bits", 2, 16)
        self._check_int("max_bits", self.min_bits, 16)
        self._check_range("budget", self.min_bits, self.max_bits)
        self._check_int("calibration", 1, 60000)
        self._check_int("seed", 0, 2**31 - 1)

    def bits_per_weight(self) -> float:
        return float(math.floor(self.budget)) if self.rule == "uniform" else float(self.budget)

    def settings(self) -> dict:
        shown = dict(self.params())
        if self.rule != "sensitivity":
            shown.pop("calibration")
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

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        out = clone_model(model)
        bits = self.allocate(out, data)
        with torch.no_grad():
            for name, module in quantizable_layers(out):
                module.weight.copy_(quantize_layer(module.weight, bits[name]))
        return out.eval()


METHODS = (FixedPoint, Float16, BitAllocation)
