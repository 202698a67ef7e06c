"""Low-bit quantizers trained with the straight-through estimator: DoReFa, LSQ / PACT, SYQ.

All three keep a float "shadow" weight and compute the quantized weight from it on every
forward pass, through a ``torch.nn.utils.parametrize`` parametrization (``core.quantize_weights``):
the optimizer updates ``parametrizations.weight.original`` (the shadow), the layer computes
with the quantized value, and the rounding is crossed by the straight-through estimator (STE:
identity gradient). After training, ``core.fold`` leaves plain weights with at most 2^k
distinct values per layer (or per group), which the codec stores as packed indices.

- ``DoReFa`` (Zhou et al. 2016): ``w -> tanh(w) / (2 max|tanh w|) + 1/2`` in [0, 1], k-bit
  rounding, back to ``2x - 1``; 1-bit weights are ``sign(w) * mean|w|``. Activations (optional)
  are clipped to [0, 1] and rounded to k bits. First and last layers stay float, as DoReFa-Net
  does (``end_bits=0``). Each layer keeps a constant scale (its initial max |w|) in place of
  the BatchNorm that renormalizes DoReFa-Net's layers (see DoReFaWeight).
- ``LearnedStep``: ``learn="lsq"`` is LSQ (Esser et al. 2020): a learned step ``s`` per layer
  for weights (signed, Qn = 2^(b-1), Qp = 2^(b-1) - 1) and for every ReLU output (unsigned,
  Qp = 2^b - 1), its gradient scaled by g = 1/sqrt(N Qp), initialised at 2 mean|v| / sqrt(Qp);
  first and last layers at 8 bits as in LSQ. ``learn="pact"`` is PACT (Choi et al. 2018): each
  ReLU becomes ``clip(x, 0, alpha)`` with a learned alpha (L2-decayed like the weights), then k
  bits; the weights use DoReFa's scheme (our choice: PACT is about the activations).
- ``Symmetric`` (SYQ, Faraone et al. 2018): codebook {-a, 0, +a} (ternary) or {-a, +a}
  (binary), threshold ``eta * max|w|``, a learned scale ``a`` per group. Groups follow the
  authors' code: for a convolution one scale per kernel *pixel* (K*K scales, each shared by all
  channels) or per kernel *row* (K scales); a fully connected layer has one scale.

Activations are quantized by replacing each ``nn.ReLU`` module with ``QuantReLU`` (a module
the codec rebuilds); ResNet-20's in-block ``F.relu`` calls are not modules and stay float.

The functions on tensors are in ``lowbit_tensors`` and importable from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import hooked
from ..method import Choice, Flag, Int, Real, Tags, TrainingMethod, knob
from ..models import register_module, replace_module
from .core import fold, quantizable_layers, quantize_weights
from .lowbit_tensors import (dorefa_activations, dorefa_weights, grad_scale,  # noqa: F401
                             group_shape, lsq_init, lsq_quantize, lsq_range, lsq_step_gradient,
                             pact_activations, quantize_unit, ste, symmetric_codes, symmetric_init,
                             symmetric_quantize)


# ------------------------------------------------------------------ modules

class DoReFaWeight(nn.Module):
    """Parametrization: the layer computes with ``scale * dorefa_weights(shadow, bits)``.

    DoReFa's k-bit weights lie in [-1, 1]; the paper's networks renormalize with BatchNorm
    after each layer, the LeNets have none, so a k >= 2 layer keeps a constant ``scale``: the
    max |w| of its float weight at the start (our choice; 1-bit weights carry mean|w| already).
    """

    def __init__(self, bits: int, weight: torch.Tensor | None = None):
        super().__init__()
        self.bits = bits
        scale = weight.detach().abs().max() if weight is not None and bits > 1 else 1.0
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, w):
        return dorefa_weights(w, self.bits) * self.scale.to(w.dtype)


class LSQWeight(nn.Module):
    """Parametrization: signed LSQ with a learned step (initialised from the layer's weight)."""

    def __init__(self, weight: torch.Tensor, bits: int):
        super().__init__()
        self.qn, self.qp = lsq_range(bits, signed=True)
        self.g = 1 / math.sqrt(weight.numel() * self.qp)
        self.step = nn.Parameter(lsq_init(weight, self.qp))

    def forward(self, w):
        return lsq_quantize(w, self.step, self.qn, self.qp, self.g)


class SymmetricWeight(nn.Module):
    """Parametrization: SYQ's symmetric codebook with a learned scale per group."""

    def __init__(self, weight: torch.Tensor, ternary: bool, eta: float, group: str):
        super().__init__()
        self.ternary, self.eta = ternary, eta
        self.scale = nn.Parameter(symmetric_init(weight, ternary, eta, group))

    def forward(self, w):
        return symmetric_quantize(w, self.scale, self.ternary, self.eta)


@register_module
class QuantReLU(nn.Module):
    """A ReLU whose output is quantized to ``bits``: DoReFa (clip to [0, 1]), PACT (learned
    clip ``alpha``) or LSQ (learned ``step``). ``init`` is the first alpha / step."""

    def __init__(self, bits: int, mode: str = "dorefa", init: float = 1.0):
        super().__init__()
        self.config = {"bits": bits, "mode": mode, "init": init}
        self.bits, self.mode = bits, mode
        if mode == "pact":
            self.alpha = nn.Parameter(torch.tensor(float(init)))
        elif mode == "lsq":
            self.step = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x):
        if self.mode == "dorefa":
            return dorefa_activations(x, self.bits)
        if self.mode == "pact":
            return pact_activations(x, self.alpha, self.bits)
        qn, qp = lsq_range(self.bits, signed=False)
        g = 1 / math.sqrt(x[0].numel() * qp)       # N_F: features of one example
        return lsq_quantize(F.relu(x), self.step, qn, qp, g)


def quantize_relus(model: nn.Module, bits: int, mode: str, init: float = 1.0) -> list[str]:
    """Replace every nn.ReLU module of ``model`` by a QuantReLU (in place); their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for name in names:
        replace_module(model, name, QuantReLU(bits, mode, init))
    return names


@torch.no_grad()
def calibrate_lsq_steps(model: nn.Module, x: torch.Tensor) -> None:
    """Set each LSQ activation step to 2 mean|v| / sqrt(Qp) of its input on the batch ``x``."""
    def init_step(module, inputs, name):
        qp = lsq_range(module.bits, signed=False)[1]
        module.step.copy_(lsq_init(F.relu(inputs[0]), qp).clamp(min=1e-8))

    relus = {n: init_step for n, m in model.named_modules()
             if isinstance(m, QuantReLU) and m.mode == "lsq"}
    with hooked(model, relus, pre=True):
        model(x)


def end_layers(model: nn.Module) -> set[str]:
    """Names of the first and last Conv2d / Linear layers."""
    names = [n for n, _ in quantizable_layers(model)]
    return {names[0], names[-1]}


# ------------------------------------------------------------------ methods

@dataclass
class _Trained(TrainingMethod):
    """Shared defaults and training of the three STE quantizers (not registered): SGD with
    momentum, one-cycle schedule, L2 ``weight_decay``; the result is folded."""
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")

    epochs: int = 3
    lr: float = 0.01
    weight_decay: float = 1e-4

    def _train(self, model: nn.Module, data) -> nn.Module:
        if self.epochs:
            self.fit(model, data)
        return fold(model.eval())


@dataclass
class DoReFa(_Trained):
    """DoReFa-Net k-bit weights (tanh projection, STE, shadow weights), optional k-bit
    activations (``act_bits=0``: float). Returns the folded model."""
    id = "quant.dorefa"
    reference = ("Zhou, Wu, Ni, Zhou, Wen, Zou 2016, DoReFa-Net: Training Low Bitwidth "
                 "Convolutional Neural Networks with Low Bitwidth Gradients")
    sliders = {"weight_bits": (1, 8, 1), "act_bits": (0, 8, 1), "epochs": (0, 10, 1)}

    weight_bits: int = knob(2, Int(1, 8))
    act_bits: int = knob(0, Int(0, 8))      # 0: activations stay float
    end_bits: int = knob(0, Int(0, 8))      # first / last layer: 0 keeps them float (DoReFa-Net)

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.weight_bits))

    def compress(self, model, data=None):
        ends = end_layers(model)
        quantize_weights(model, lambda name, m: DoReFaWeight(self.weight_bits, m.weight)
                         if name not in ends else DoReFaWeight(self.end_bits, m.weight)
                         if self.end_bits else None)
        if self.act_bits:
            quantize_relus(model, self.act_bits, "dorefa")
        return self._train(model, data)


@dataclass
class LearnedStep(_Trained):
    """LSQ (learned step for weights and activations) or PACT (learned activation clip, DoReFa
    weights). ``end_bits`` for the first and last layer's weights (8 as in LSQ; 0 = float).
    Returns the folded model (its QuantReLU modules keep the learned step / alpha). LSQ's
    activation steps start from one training batch, so ``learn="lsq"`` needs data even
    with ``epochs=0``."""
    id = "quant.learned_step"
    reference = ("Esser, McKinstry, Bablani, Appuswamy, Modha 2020, Learned Step Size "
                 "Quantization; Choi, Wang, Venkataramani, Chuang, Srinivasan, Gopalakrishnan "
                 "2018, PACT: Parameterized Clipping Activation for Quantized Neural Networks")
    sliders = {"weight_bits": (2, 8, 1), "act_bits": (1, 8, 1), "epochs": (0, 10, 1)}

    learn: str = knob("lsq", Choice(("lsq", "pact")))
    weight_bits: int = knob(2, Int(2, 8))
    act_bits: int = knob(2, Int(1, 8))
    end_bits: int = knob(8, Int(0, 8))
    pact_alpha: float = knob(10.0, Real(1e-3, 1e3))   # PACT's initial clip (the paper: 10)

    def validate(self):
        if self.learn == "lsq" and self.end_bits == 1:
            raise ValueError("LearnedStep.end_bits=1 with learn='lsq': LSQ's signed weights "
                             "need end_bits 0 or 2..8")

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.weight_bits),
                       needs_data=self.epochs > 0 or self.learn == "lsq")

    def settings(self):
        shown = super().settings()
        if self.learn == "lsq":
            shown.pop("pact_alpha")
        return shown

    def _weight_quantizer(self, bits: int, weight: torch.Tensor) -> nn.Module:
        return LSQWeight(weight, bits) if self.learn == "lsq" else DoReFaWeight(bits, weight)

    def compress(self, model, data=None):
        ends = end_layers(model)
        quantize_weights(model, lambda name, m: self._weight_quantizer(self.weight_bits, m.weight)
                         if name not in ends else self._weight_quantizer(self.end_bits, m.weight)
                         if self.end_bits else None)
        if self.learn == "pact":
            quantize_relus(model, self.act_bits, "pact", self.pact_alpha)
        elif quantize_relus(model, self.act_bits, "lsq") and data is not None:
            first = next(iter(data.loader(self.batch_size, shuffle=True, seed=self.seed)))[0]
            calibrate_lsq_steps(model, first)
        return self._train(model, data)


@dataclass
class Symmetric(_Trained):
    """SYQ: binary / ternary weights with a learned scale per group (pixel, row or layer),
    optional k-bit DoReFa activations. First and last layer float unless ``quantize_ends``."""
    id = "quant.symmetric"
    reference = ("Faraone, Fraser, Blott, Leong 2018, SYQ: Learning Symmetric Quantization "
                 "For Efficient Deep Neural Networks")
    sliders = {"eta": (0.0, 0.5, 0.01), "act_bits": (0, 8, 1), "epochs": (0, 10, 1)}

    codebook: str = knob("ternary", Choice(("ternary", "binary")))   # {-a, 0, a} | {-a, a}
    group: str = knob("pixel", Choice(("pixel", "row", "layer")))   # conv: K*K | K | 1 scales
    eta: float = knob(0.05, Real(0.0, 0.99))   # ternary threshold, a share of max|w|
    act_bits: int = knob(0, Int(0, 8))
    quantize_ends: bool = knob(False, Flag())

    def settings(self):
        shown = super().settings()
        if self.codebook == "binary":
            shown.pop("eta")
        return shown

    def tags(self) -> Tags:
        bits = math.log2(3) if self.codebook == "ternary" else 1.0
        return replace(super().tags(), bits_per_weight=bits)

    def compress(self, model, data=None):
        skip = set() if self.quantize_ends else end_layers(model)
        quantize_weights(model, lambda name, m: None if name in skip else SymmetricWeight(
            m.weight.detach(), self.codebook == "ternary", self.eta, self.group))
        if self.act_bits:
            quantize_relus(model, self.act_bits, "dorefa")
        return self._train(model, data)


METHODS = (DoReFa, LearnedStep, Symmetric)
