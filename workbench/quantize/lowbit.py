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
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Method, clone_model
from ..models import register_module, replace_module
from ..train import Recipe, fit
from .core import fold, quantizable_layers, quantize_weights, round_ste


# ------------------------------------------------------------------ functions on tensors

def ste(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``value`` forward, identity gradient to ``x`` backward (exact: value + 0, not x + (v-x))."""
    return value.detach() + (x - x.detach())


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward, gradient multiplied by ``g`` backward (LSQ's gradient scale)."""
    return (x - x * g).detach() + x * g


def quantize_unit(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's quantize_k: x in [0, 1] to the nearest of 2^k levels i / (2^k - 1), STE."""
    n = 2 ** bits - 1
    return round_ste(x * n) / n


def dorefa_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net eq. 9: ``2 quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1``.

    The max is not detached (as in the authors' tensorpack code), so its gradient flows too.
    1 bit: ``sign(w) * mean|w|`` with the mean held constant (DoReFa-Net, section 2.2).
    """
    if bits == 1:
        scale = w.abs().mean().detach()
        return ste(torch.where(w >= 0, 1.0, -1.0).to(w.dtype), w / scale) * scale
    t = torch.tanh(w)
    x = t / (2 * t.abs().max()) + 0.5
    return 2 * quantize_unit(x, bits) - 1


def dorefa_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's activation quantizer: clip to [0, 1] (gradient 0 outside), then k bits."""
    return quantize_unit(torch.clamp(x, 0.0, 1.0), bits)


def lsq_range(bits: int, signed: bool) -> tuple[int, int]:
    """(Qn, Qp): the integer codes run from -Qn to Qp."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def lsq_init(v: torch.Tensor, qp: int) -> torch.Tensor:
    """LSQ's initial step ``2 mean|v| / sqrt(Qp)``."""
    return 2 * v.detach().abs().mean() / math.sqrt(qp)


def lsq_quantize(v: torch.Tensor, step: torch.Tensor, qn: int, qp: int, g: float) -> torch.Tensor:
    """LSQ eq. 1-2: ``round(clip(v / s, -Qn, Qp)) * s``, STE through the rounding, the step's
    gradient scaled by ``g``. Autograd then gives the step exactly eq. 3 (see lsq_step_gradient)."""
    s = grad_scale(step, g)
    return round_ste(torch.clamp(v / s, -qn, qp)) * s


def lsq_step_gradient(v: torch.Tensor, step: float, qn: int, qp: int) -> torch.Tensor:
    """LSQ eq. 3, d v_hat / d s per element: -v/s + round(v/s) inside, -Qn / Qp when clipped."""
    u = v / step
    return torch.where(u <= -qn, float(-qn), torch.where(u >= qp, float(qp), -u + u.round()))


def pact_activations(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT eq. 1-3: y = clip(x, 0, alpha), k-bit with the STE over the whole rounding, so that
    d y_q / d alpha = 1 where x >= alpha and 0 elsewhere (the paper's gradient)."""
    y = torch.where(x >= alpha, alpha, F.relu(x))
    n = 2 ** bits - 1
    return ste(torch.round(y * n / alpha) * alpha / n, y)


def group_shape(weight: torch.Tensor, group: str) -> tuple[int, ...]:
    """Shape of SYQ's scale tensor (broadcast over the weight): pixel (1,1,K,K), row (1,1,K,1);
    a fully connected layer, or ``layer``, has one scale."""
    if weight.dim() != 4 or group == "layer":
        return (1,) * weight.dim()
    k_h, k_w = weight.shape[2:]
    return (1, 1, k_h, k_w) if group == "pixel" else (1, 1, k_h, 1)


def symmetric_codes(w: torch.Tensor, ternary: bool, eta: float) -> torch.Tensor:
    """SYQ's codes: sign(w), and 0 where |w| <= eta * max|w| when ternary."""
    sign = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    if not ternary:
        return sign
    return sign * (w.abs() > eta * w.detach().abs().max()).to(w.dtype)


def symmetric_quantize(w: torch.Tensor, scale: torch.Tensor, ternary: bool, eta: float
                       ) -> torch.Tensor:
    """Q(w) = a_group * code, exactly; gradients as the authors' code: d/dw = a (1 in the zero
    band), d/da = sum of dE/dQ * code over the group."""
    codes = symmetric_codes(w.detach(), ternary, eta)
    multiplier = torch.where(codes != 0, scale.expand_as(w), torch.ones_like(w))
    return ste(codes, w) * multiplier


def symmetric_init(w: torch.Tensor, ternary: bool, eta: float, group: str) -> torch.Tensor:
    """Initial scales: mean |w| of each group's nonzero codes (the least-squares scale for
    the codes; our choice, the paper loads scales from a file)."""
    codes = symmetric_codes(w.detach(), ternary, eta).abs()
    dims = [d for d, n in enumerate(group_shape(w, group)) if n == 1]
    total = (w.detach().abs() * codes).sum(dims, keepdim=True)
    return total / codes.sum(dims, keepdim=True).clamp(min=1)


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
    def init_step(module, inputs):
        qp = lsq_range(module.bits, signed=False)[1]
        module.step.copy_(lsq_init(F.relu(inputs[0]), qp).clamp(min=1e-8))

    handles = [m.register_forward_pre_hook(init_step) for m in model.modules()
               if isinstance(m, QuantReLU) and m.mode == "lsq"]
    was_training = model.training
    model.eval()
    model(x)
    model.train(was_training)
    for h in handles:
        h.remove()


def end_layers(model: nn.Module) -> set[str]:
    """Names of the first and last Conv2d / Linear layers."""
    names = [n for n, _ in quantizable_layers(model)]
    return {names[0], names[-1]}


# ------------------------------------------------------------------ methods

@dataclass
class _Trained(Method):
    """Shared fields and training of the three STE quantizers (not registered)."""
    needs_data: ClassVar[bool] = True
    progress: ClassVar[bool] = True
    smoke = {"epochs": 1}

    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 1e-4
    seed: int = 0

    def _check_training(self):
        self._check_int("epochs", 0, 1000)
        self._check_int("batch_size", 1, 1 << 16)
        self._check_int("seed", 0, 2**31 - 1)
        self._check_range("lr", 1e-8, 10.0)
        self._check_range("weight_decay", 0.0, 1.0)

    def _train(self, model: nn.Module, data) -> nn.Module:
        if data is None:
            raise ValueError(f"{type(self).__name__} trains: pass the training set as data")
        recipe = Recipe(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                        weight_decay=self.weight_decay, seed=self.seed)
        fit(model, data, recipe, progress=self.progress)
        return fold(model.eval())


@dataclass
class DoReFa(_Trained):
    """DoReFa-Net k-bit weights (tanh projection, STE, shadow weights), optional k-bit
    activations (``act_bits=0``: float). Returns the folded model."""
    id = "quant.dorefa"
    reference = ("Zhou, Wu, Ni, Zhou, Wen, Zou 2016, DoReFa-Net: Training Low Bitwidth "
                 "Convolutional Neural Networks with Low Bitwidth Gradients")
    sliders = {"weight_bits": (1, 8, 1), "act_bits": (0, 8, 1), "epochs": (0, 10, 1)}

    weight_bits: int = 2
    act_bits: int = 0               # 0: activations stay float
    end_bits: int = 0               # first / last layer: 0 keeps them float (DoReFa-Net)

    def validate(self):
        self._check_int("weight_bits", 1, 8)
        self._check_int("act_bits", 0, 8)
        self._check_int("end_bits", 0, 8)
        self._check_training()

    def bits_per_weight(self) -> float:
        return float(self.weight_bits)

    def apply(self, model, data=None):
        out = clone_model(model)
        ends = end_layers(out)
        quantize_weights(out, lambda name, m: DoReFaWeight(self.weight_bits, m.weight)
                         if name not in ends else DoReFaWeight(self.end_bits, m.weight)
                         if self.end_bits else None)
        if self.act_bits:
            quantize_relus(out, self.act_bits, "dorefa")
        return self._train(out, data)


@dataclass
class LearnedStep(_Trained):
    """LSQ (learned step for weights and activations) or PACT (learned activation clip, DoReFa
    weights). ``end_bits`` for the first and last layer's weights (8 as in LSQ; 0 = float).
    Returns the folded model (its QuantReLU modules keep the learned step / alpha)."""
    id = "quant.learned_step"
    reference = ("Esser, McKinstry, Bablani, Appuswamy, Modha 2020, Learned Step Size "
                 "Quantization; Choi, Wang, Venkataramani, Chuang, Srinivasan, Gopalakrishnan "
                 "2018, PACT: Parameterized Clipping Activation for Quantized Neural Networks")
    sliders = {"weight_bits": (2, 8, 1), "act_bits": (1, 8, 1), "epochs": (0, 10, 1)}

    learn: str = "lsq"              # "lsq" | "pact"
    weight_bits: int = 2
    act_bits: int = 2
    end_bits: int = 8
    pact_alpha: float = 10.0        # PACT's initial clip (the paper starts alpha at 10)

    def validate(self):
        self._check_choice("learn", ("lsq", "pact"))
        self._check_int("weight_bits", 2, 8)
        self._check_int("act_bits", 1, 8)
        self._check_int("end_bits", 0, 8)
        if self.learn == "lsq" and self.end_bits == 1:
            raise ValueError("LearnedStep.end_bits=1: LSQ's signed weights need 0 or 2..8")
        self._check_range("pact_alpha", 1e-3, 1e3)
        self._check_training()

    def settings(self):
        shown = self.params()
        if self.learn == "lsq":
            shown.pop("pact_alpha")
        return shown

    def bits_per_weight(self) -> float:
        return float(self.weight_bits)

    def _weight_quantizer(self, bits: int, weight: torch.Tensor) -> nn.Module:
        return LSQWeight(weight, bits) if self.learn == "lsq" else DoReFaWeight(bits, weight)

    def apply(self, model, data=None):
        out = clone_model(model)
        ends = end_layers(out)
        quantize_weights(out, lambda name, m: self._weight_quantizer(self.weight_bits, m.weight)
                         if name not in ends else self._weight_quantizer(self.end_bits, m.weight)
                         if self.end_bits else None)
        if self.learn == "pact":
            quantize_relus(out, self.act_bits, "pact", self.pact_alpha)
        elif quantize_relus(out, self.act_bits, "lsq") and data is not None:
            first = next(iter(data.loader(self.batch_size, shuffle=True, seed=self.seed)))[0]
            calibrate_lsq_steps(out, first)
        return self._train(out, data)


@dataclass
class Symmetric(_Trained):
    """SYQ: binary / ternary weights with a learned scale per group (pixel, row or layer),
    optional k-bit DoReFa activations. First and last layer float unless ``quantize_ends``."""
    id = "quant.symmetric"
    reference = ("Faraone, Fraser, Blott, Leong 2018, SYQ: Learning Symmetric Quantization "
                 "For Efficient Deep Neural Networks")
    sliders = {"eta": (0.0, 0.5, 0.01), "act_bits": (0, 8, 1), "epochs": (0, 10, 1)}

    codebook: str = "ternary"       # "ternary" {-a, 0, a} | "binary" {-a, a}
    group: str = "pixel"            # conv scales per "pixel" (K*K) | "row" (K) | "layer"
    eta: float = 0.05               # ternary threshold, a share of max|w| (authors' code)
    act_bits: int = 0
    quantize_ends: bool = False

    def validate(self):
        self._check_choice("codebook", ("ternary", "binary"))
        self._check_choice("group", ("pixel", "row", "layer"))
        self._check_range("eta", 0.0, 0.99)
        self._check_int("act_bits", 0, 8)
        self._check_choice("quantize_ends", (False, True))
        self._check_training()

    def settings(self):
        shown = self.params()
        if self.codebook == "binary":
            shown.pop("eta")
        return shown

    def bits_per_weight(self) -> float:
        return math.log2(3) if self.codebook == "ternary" else 1.0

    def apply(self, model, data=None):
        out = clone_model(model)
        skip = set() if self.quantize_ends else end_layers(out)
        quantize_weights(out, lambda name, m: None if name in skip else SymmetricWeight(
            m.weight.detach(), self.codebook == "ternary", self.eta, self.group))
        if self.act_bits:
            quantize_relus(out, self.act_bits, "dorefa")
        return self._train(out, data)


METHODS = (DoReFa, LearnedStep, Symmetric)
