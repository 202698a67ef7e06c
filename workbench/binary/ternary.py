"""Ternary weights {-a_n, 0, +a_p}: Ternary Weight Networks (TWN) and Trained Ternary
Quantization (TTQ).

Both keep a float "shadow" weight and compute the ternary weight from it on every forward pass
through a ``quantize.core.quantize_weights`` parametrization; ``quantize.core.fold`` leaves the
plain tensor, three distinct values per layer, which the codec stores as 2-bit codes plus the
scales (the shadow weights are not in the file). Biases and BatchNorm stay float in both.

- ``TWN`` (Li, Zhang, Liu 2016): per layer, threshold Delta = c * E|W| and scale alpha = the
  mean of |W| over |W| > Delta (the least-squares alpha for those codes, eq. 5 of the paper).
  c = 0.7 by default: the paper's derivation gives (2/3) E|W| for a uniform and 0.6 sigma
  = 0.75 E|W| for a normal distribution, and takes 0.7 E|W| between them; the authors' Caffe
  code uses 0.7 (``TERNARY_DELTA = 7``), the arXiv v3 text writes 0.75. ``c`` is a knob, and
  ``optimal_threshold`` is the exact brute-force optimum to compare it with. Training uses the straight-through
  estimator (the shadow weight gets the gradient of the ternary one; Delta and alpha are
  recomputed each step, constants for autograd). The authors' Caffe code ternarizes every
  convolution and inner-product layer, the first and last included: so does ``TWN`` unless
  ``keep_ends``.
- ``TTQ`` (Zhu, Han, Mao, Dally 2017): per layer, threshold t * max|W| (t = 0.05, the paper's
  and the authors' default) and two learned scales W_p, W_n: the layer computes +W_p, 0, -W_n.
  dL/dW_p is the sum of dL/dw_t over the positive positions (paper eq. 6); for W_n it is minus
  the sum over the negative ones (w_t = -W_n there: the paper's eq. 6 leaves the sign out, the
  authors' TensorFlow code, ``w = sign(x) * mask * W``, has it). The shadow gradient is dL/dw_t
  times W_p / 1 / W_n in the three regions (eq. 7). First and last layers stay float, as in the
  authors' code ("don't binarize first and last layer"). The shadow weight is normalized by
  the layer's max |W| as in the paper (a fixed factor multiplies the result back, see
  TTQWeight). The authors start the scales at 1.0, on networks with BatchNorm after every
  ternary layer; ours start at the mean normalized |W| of each sign's region (TWN's alpha, per
  sign), so a fine-tuned network starts close to its float self, LeNets included. We train
  with Adam where the authors used SGD (see TTQ.compress).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import Flag, Real, Tags, TrainingMethod, knob
from ..quantize.core import fold, quantize_weights
from .core import chosen_layers

# ------------------------------------------------------------------ functions on tensors


def ternary_codes(weight: torch.Tensor, delta) -> torch.Tensor:
    """+1 where w > delta, -1 where w < -delta, 0 elsewhere (same dtype as ``weight``)."""
    return (weight > delta).to(weight.dtype) - (weight < -delta).to(weight.dtype)


def twn_threshold(weight: torch.Tensor, c: float = 0.7) -> torch.Tensor:
    """TWN's approximate optimal threshold: c * E|W| over the whole layer."""
    return c * weight.abs().mean()


def twn_scale(weight: torch.Tensor, delta) -> torch.Tensor:
    """alpha = mean |W| over |W| > delta (0 when no weight is above: the layer is all zeros)."""
    big = weight.abs() > delta
    return (weight.abs() * big).sum() / big.sum().clamp(min=1)


def twn_ternarize(weight: torch.Tensor, c: float = 0.7) -> torch.Tensor:
    """alpha * codes with TWN's Delta and alpha; identity gradient to ``weight`` (the STE)."""
    w = weight.detach()
    delta = twn_threshold(w, c)
    q = twn_scale(w, delta) * ternary_codes(w, delta)
    # q + (w - w): exactly q forward (w + (q - w) is not, by an ulp), identity gradient
    return q + (weight - w)


def ternary_error(weight: torch.Tensor, delta) -> torch.Tensor:
    """||W - alpha t||^2 with the codes t of ``delta`` and their least-squares alpha."""
    q = twn_scale(weight, delta) * ternary_codes(weight, delta)
    return ((weight - q) ** 2).sum()


def optimal_threshold(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact minimizer of ||W - alpha t||^2 over every threshold (TWN eq. 6): with the k
    largest |w| kept, the error is ||W||^2 - S_k^2 / k (S_k their sum), so one sort and a
    cumulative sum try every k. Returns (delta, error); delta is halfway between the k-th and
    the (k+1)-th largest |w|."""
    a = weight.detach().abs().flatten().double().sort(descending=True).values
    k = torch.arange(1, a.numel() + 1, dtype=a.dtype)
    errors = (a ** 2).sum() - a.cumsum(0) ** 2 / k
    best = int(errors.argmin())
    below = a[best + 1] if best + 1 < a.numel() else torch.zeros((), dtype=a.dtype)
    return ((a[best] + below) / 2).to(weight.dtype), errors[best].to(weight.dtype)


def ttq_threshold(weight: torch.Tensor, t: float = 0.05) -> torch.Tensor:
    """TTQ's threshold t * max|W| (a constant for autograd, as the authors' stop_gradient)."""
    return t * weight.detach().abs().max()


def ttq_init(weight: torch.Tensor, t: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial (W_p, W_n): the mean |W| over the positive / negative region."""
    w = weight.detach()
    delta = ttq_threshold(w, t)
    pos, neg = w > delta, w < -delta
    return ((w * pos).sum() / pos.sum().clamp(min=1),
            (-w * neg).sum() / neg.sum().clamp(min=1))


def ttq_quantize(weight: torch.Tensor, w_p: torch.Tensor, w_n: torch.Tensor,
                 t: float = 0.05) -> torch.Tensor:
    """+W_p / 0 / -W_n, as the authors' code builds it: codes with an identity gradient, times
    a mask that is W_p, 1 or W_n. Autograd then gives the shadow weight dL/dw_t times that mask
    (eq. 7) and W_p, W_n the sums of eq. 6 (with the minus on W_n)."""
    w = weight.detach()
    delta = ttq_threshold(w, t)
    pos, neg = w > delta, w < -delta
    codes = ternary_codes(w, delta) + (weight - w)      # exact codes, identity gradient
    ones = torch.ones_like(w)
    mask = torch.where(pos, w_p.to(w.dtype) * ones, torch.where(neg, w_n.to(w.dtype) * ones, ones))
    return codes * mask


def zero_fraction(model: nn.Module) -> float:
    """Share of zeros among the weights of the Conv2d / Linear layers."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


# ------------------------------------------------------------------ parametrizations

class TWNWeight(nn.Module):
    """Parametrization: the layer computes with TWN's alpha * codes of its shadow weight."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, w):
        return twn_ternarize(w, self.c)


class TTQWeight(nn.Module):
    """Parametrization: ``scale * (+W_p / 0 / -W_n)`` with learned W_p, W_n.

    As in the paper, the shadow weight is the layer's weight divided by its max |w|, so it lies
    in [-1, 1] (``right_inverse`` stores it so), and the scales are learned on that scale: with
    the fixed ``scale`` (the initial max |w|) left out, a layer of small weights (0.02) would
    give its scales steps 1/0.02 times too big for their size, and they cross zero. The layer
    computes with ``scale`` times the ternary value, so a network without BatchNorm after each
    layer (the LeNets) keeps its output scale; the folded values are {-scale W_n, 0, scale W_p}.
    """

    def __init__(self, weight: torch.Tensor, t: float):
        super().__init__()
        self.t = t
        scale = weight.detach().abs().max().clamp(min=1e-12)
        self.register_buffer("scale", scale.clone())
        w_p, w_n = ttq_init(weight.detach() / scale, t)
        self.w_p, self.w_n = nn.Parameter(w_p.clone()), nn.Parameter(w_n.clone())

    def forward(self, w):
        return self.scale.to(w.dtype) * ttq_quantize(w, self.w_p, self.w_n, self.t)

    def right_inverse(self, weight):
        return weight / self.scale.to(weight.dtype)


# ------------------------------------------------------------------ methods

BITS = math.log2(3)     # nominal: three values per weight (stored as 2-bit codes)


@dataclass
class TWN(TrainingMethod):
    """Ternary Weight Networks: Delta = c * E|W|, alpha = mean |W| over |W| > Delta, per layer;
    STE training of the float shadow weights for ``epochs`` (0: ternarize the trained network
    as it is, no data), then folded to {-alpha, 0, +alpha}. Every Conv2d / Linear layer is
    ternary unless ``keep_ends`` (the first and last stay float); biases and BatchNorm float."""
    id = "ternary.twn"
    reference = "Li, Zhang, Liu 2016, Ternary Weight Networks (arXiv 1605.04711)"
    sliders = {"c": (0.0, 2.0, 0.05), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("fewer_nonzeros", "fewer_bytes", "different_outputs")
    requires = ("a Conv2d or Linear layer it may ternarize (keep_ends=True keeps the first and "
                "last float: set keep_ends=False to ternarize them too)")

    epochs: int = 3
    lr: float = 0.01
    weight_decay: float = 1e-4
    c: float = knob(0.7, Real(0.0, 10.0))      # Delta = c * E|W|; 0.7 as derived in the paper
    keep_ends: bool = knob(False, Flag())

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=BITS)

    def supports(self, model):
        # never the network unchanged: with the ends float, something must be left between them
        return bool(chosen_layers(model, keep_ends=self.keep_ends))

    def compress(self, model, data=None):
        chosen = set(chosen_layers(model, keep_ends=self.keep_ends))
        quantize_weights(model, lambda name, m: TWNWeight(self.c) if name in chosen else None)
        if self.epochs:
            self.fit(model, data, augment=data.shape[0] == 3)   # crops and flips on CIFAR
        return fold(model.eval())


@dataclass
class TTQ(TrainingMethod):
    """Trained Ternary Quantization: threshold t * max|W| and learned scales W_p, W_n per layer
    (their own parameters, no weight decay, as the authors decay only W), shadow gradients
    scaled by W_p / 1 / W_n; first and last layers float; folded to {-W_n, 0, +W_p}. With
    ``epochs=0`` the scales stay at their initial values (the mean |W| of each sign)."""
    id = "ternary.ttq"
    reference = ("Zhu, Han, Mao, Dally 2017, Trained Ternary Quantization (ICLR, arXiv "
                 "1612.01064)")
    sliders = {"t": (0.0, 0.5, 0.01), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("fewer_nonzeros", "fewer_bytes", "different_outputs")
    requires = "at least three Conv2d / Linear layers (the first and last stay float)"

    epochs: int = 3
    lr: float = 1e-3                           # Adam's (see compress)
    weight_decay: float = 2e-4                 # the authors' L2 on the shadow weights
    t: float = knob(0.05, Real(0.0, 0.99))     # threshold as a share of max|W|

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=BITS)

    def supports(self, model):
        # the first and last layer stay float: something must be left between them
        return bool(chosen_layers(model, keep_ends=True))

    def compress(self, model, data=None):
        chosen = set(chosen_layers(model, keep_ends=True))
        quantize_weights(model, lambda name, m: TTQWeight(m.weight.detach(), self.t)
                         if name in chosen else None)
        if self.epochs:
            scales = [p for n, p in model.named_parameters() if n.endswith((".w_p", ".w_n"))]
            others = [p for n, p in model.named_parameters() if not n.endswith((".w_p", ".w_n"))]
            # Adam: dL/dW_p sums the gradients of every position of the layer (eq. 6), from
            # hundreds to 400,000 of them; plain SGD at a rate that suits the shadow weights
            # (0.05) threw LeNet-5's scales across zero within an epoch, Adam's per-parameter
            # step does not.
            optimizer = torch.optim.Adam(
                [{"params": others}, {"params": scales, "weight_decay": 0.0}], lr=self.lr,
                weight_decay=self.weight_decay)
            self.fit(model, data, optimizer=optimizer, augment=data.shape[0] == 3)
        return fold(model.eval())


METHODS = (TWN, TTQ)
