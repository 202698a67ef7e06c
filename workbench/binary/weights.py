"""Binary weights, float activations: the post-training sign, BinaryConnect, loss-aware
binarization (LAB).

- ``Sign`` (Gong et al. 2014, "binarization"): no training. Each weight becomes ``a sign(w)``
  with the least-squares ``a = mean|w|`` of its layer or output channel (``core.ls_scale``).
  Gong et al. compress the dense layers only, so ``scope="dense"`` (the default) leaves every
  convolution float; ``scope="all"`` binarizes those too. The scale is the BWN one: a sign
  without a scale would change every layer's output magnitude.
- ``BinaryConnect`` (Courbariaux et al. 2015): the layer computes with ``H b``, ``b`` = +-1
  drawn from a float shadow weight ``w`` in [-1, 1]: ``b = sign(w)`` (deterministic) or +1
  with probability ``hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)`` (stochastic, training only;
  the sign at test time). The gradient with respect to ``H b`` reaches ``w`` straight
  through the sign (times the constant H, which Adam's steps ignore), and ``w`` is clipped to
  [-1, 1] after every optimizer step.
- ``LossAware`` (Hou, Yao, Kwok 2017, Algorithm 1): per layer, ``w_b = alpha sign(w)`` with
  ``alpha = ||d * w||_1 / ||d||_1``, ``d = sqrt(v_hat) + eps`` from Adam's second moments of
  the previous step: the closed-form proximal Newton step of the loss's diagonal quadratic
  model. Adam updates ``w`` with the gradient at ``w_b``, then ``w`` is clipped to [-1, 1] (as
  in the authors' code). Before the first step ``d`` is constant and ``alpha = mean|w|``.

Both papers binarize every layer's weights (also the first and last) and keep biases and
BatchNorm float; so do we (``binarize_ends=False`` keeps the first and last layers float).
Their MLPs have BatchNorm after each layer, which absorbs the scale of the +-1 weights;
LeNet-300-100 has none, so BinaryConnect's weights are +-H with H the Glorot factor
``sqrt(1.5 / (fan_in + fan_out))`` of each layer, as the authors' code offers
(``H="Glorot"``): the layer's output then has the variance of a Glorot-initialized layer.
The shadow starts at ``clip(W / H, -1, 1)``, keeping the signs of the given network.
LAB needs no such constant: its ``alpha`` is the scale.

After training, ``quantize.core.fold`` leaves plain tensors: +-H (BinaryConnect), +-alpha
(LAB) per layer, +-a per layer or output channel (Sign).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import Choice, Flag, Method, Real, Tags, TrainingMethod, knob
from ..quantize.core import fold, quantizable_layers, quantize_weights
from .core import (
    ClipShadow,
    binarize,
    chosen_layers,
    shadow_weights,
    sign,
    sign_ste,
    sign_stochastic,
)

# ------------------------------------------------------------------ functions on tensors


def glorot_scale(weight: torch.Tensor) -> float:
    """BinaryConnect's H = sqrt(1.5 / (fan_in + fan_out)) (Glorot's uniform bound / 2);
    a convolution's fans count its kernel positions, as Lasagne's do."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(1.5 / (fan_in + fan_out))


def lab_scale(weight: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """LAB's alpha = ||d * w||_1 / ||d||_1, the minimizer over alpha of
    sum_i d_i (alpha sign(w_i) - w_i)^2 (Hou et al. 2017, Prop. 3.1); mean|w| for constant d."""
    return (d * weight).abs().sum() / d.sum()


def lab_binarize(weight: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The proximal step: argmin over w_b = alpha b (alpha > 0, b = +-1) of
    (w_b - w)^T diag(d) (w_b - w), i.e. alpha sign(w) with ``lab_scale``."""
    return lab_scale(weight, d) * sign(weight)


def adam_curvature(v: torch.Tensor, step: int, beta2: float, eps: float) -> torch.Tensor:
    """LAB's diagonal Hessian estimate d = sqrt(v / (1 - beta2^step)) + eps from Adam's
    second moment ``v`` after ``step`` steps."""
    return (v / (1 - beta2 ** step)).sqrt() + eps


# ------------------------------------------------------------------ parametrizations


class ConnectWeight(nn.Module):
    """Parametrization: the layer computes with ``scale * b``, b = +-1 from the shadow weight
    (BinaryConnect). ``right_inverse`` makes the shadow ``clip(W / scale, -1, 1)``."""

    def __init__(self, scale: float, stochastic: bool):
        super().__init__()
        self.stochastic = stochastic
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, w):
        # Both estimators pass the gradient unchanged inside [-1, 1], where the shadow lives.
        # exactly +-1 in value (core.exact_forward), so exactly +-H
        b = sign_stochastic(w) if self.stochastic and self.training else sign_ste(w)
        return self.scale.to(w.dtype) * b

    def right_inverse(self, weight):
        return torch.clamp(weight / self.scale.to(weight.dtype), -1.0, 1.0)


class LossAwareWeight(nn.Module):
    """Parametrization: ``alpha sign(w)`` with LAB's alpha from the curvature ``d`` (a buffer,
    updated after each optimizer step by ``LabCurvature``). The gradient with respect to the
    binary weight goes to ``w`` unchanged: Adam updates ``w`` with the gradient at ``w_b``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("d", torch.ones_like(weight))

    def forward(self, w):
        w_b = lab_binarize(w.detach(), self.d.to(w.dtype))
        # w_b's value exactly (w + (w_b - w) would round), with w's gradient
        return w_b + (w - w.detach())


# ------------------------------------------------------------------ training hooks


class LabCurvature(ClipShadow):
    """After every Adam step: clip the shadow weights, then set each layer's ``d`` from
    Adam's second moment of that weight (LAB, Algorithm 1)."""

    def __init__(self, pairs, optimizer: torch.optim.Adam, eps: float):
        super().__init__(w for _, w in pairs)
        self.pairs, self.optimizer, self.eps = list(pairs), optimizer, eps

    def after_step(self, model):
        super().after_step(model)
        beta2 = self.optimizer.param_groups[0]["betas"][1]
        for param, w in self.pairs:
            state = self.optimizer.state[w]
            param.d.copy_(adam_curvature(state["exp_avg_sq"], int(state["step"]), beta2,
                                         self.eps))


def adam_for(model: nn.Module, shadows, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam over every trainable parameter; weight decay only on the float ones (a decayed
    shadow weight would drift to 0 and flip its sign at random)."""
    ids = {id(w) for w in shadows}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    return torch.optim.Adam([{"params": list(shadows), "weight_decay": 0.0},
                             {"params": others, "weight_decay": weight_decay}], lr=lr)


# ------------------------------------------------------------------ methods


@dataclass
class Sign(Method):
    """Post-training binarization: every weight of the chosen layers becomes
    ``a sign(w)``, ``a`` the least-squares scale per output channel or per layer. No data, no
    training. ``scope="dense"`` (Gong et al.: the dense layers) keeps convolutions float;
    biases stay float."""
    id = "binary.sign"
    reference = ("Gong, Liu, Yang, Bourdev 2014, Compressing Deep Convolutional Networks using "
                 "Vector Quantization (binarization, sec. 3.1)")
    effects = ("fewer_bytes", "different_outputs")
    requires = ("a layer it may binarize (scope='dense' binarizes Linear layers only: set "
                "scope='all' to binarize convolutions too)")

    per_channel: bool = knob(True, Flag())
    scope: str = knob("dense", Choice(("dense", "all")))

    def tags(self) -> Tags:
        return Tags(bits_per_weight=1.0)

    def supports(self, model):
        kinds = nn.Linear if self.scope == "dense" else (nn.Linear, nn.Conv2d)
        return any(isinstance(m, kinds) for m in model.modules())

    @torch.no_grad()
    def compress(self, model, data=None):
        for _, layer in quantizable_layers(model):
            if self.scope == "all" or isinstance(layer, nn.Linear):
                layer.weight.copy_(binarize(layer.weight, self.per_channel))
        return model


@dataclass
class _BinaryTrained(TrainingMethod):
    """Shared knobs of the two trained binarizations (not registered): Adam, a cosine
    schedule, every layer binarized unless ``binarize_ends`` is False."""
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")
    sliders = {"epochs": (0, 30, 1), "lr": (1e-4, 0.05, 1e-4)}
    requires = ("a Conv2d or Linear layer it may binarize (binarize_ends=False keeps the first "
                "and last float: set binarize_ends=True to binarize them too)")

    epochs: int = 10
    lr: float = 0.005
    batch_size: int = 100
    weight_decay: float = 0.0
    binarize_ends: bool = knob(True, Flag())

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=1.0)

    def supports(self, model):
        # never the network unchanged: with the ends float, something must be left between them
        return bool(chosen_layers(model, keep_ends=not self.binarize_ends))

    def _train(self, model, data, hook_for) -> nn.Module:
        pairs = shadow_weights(model)
        if self.epochs and pairs:
            optimizer = adam_for(model, [w for _, w in pairs], self.lr, self.weight_decay)
            self.fit(model, data, hooks=[hook_for(pairs, optimizer)], optimizer=optimizer,
                     schedule="cosine")
        return fold(model.eval())


@dataclass
class BinaryConnect(_BinaryTrained):
    """BinaryConnect: +-H weights (H: the layer's Glorot factor) in the forward and backward
    passes, float shadow weights in [-1, 1] updated by Adam and clipped after each step;
    ``stochastic`` draws +1 with probability hard_sigmoid(w) while training. Returns the
    folded network (+-H per layer). Biases float; first/last layers binarized as in the
    paper unless ``binarize_ends`` is False."""
    id = "binary.connect"
    reference = ("Courbariaux, Bengio, David 2015, BinaryConnect: Training Deep Neural Networks "
                 "with binary weights during propagations")

    stochastic: bool = knob(False, Flag())

    def compress(self, model, data=None):
        chosen = set(chosen_layers(model, keep_ends=not self.binarize_ends))
        quantize_weights(model, lambda name, m: ConnectWeight(
            glorot_scale(m.weight), self.stochastic) if name in chosen else None)
        return self._train(model, data, lambda pairs, opt: ClipShadow(w for _, w in pairs))


@dataclass
class LossAware(_BinaryTrained):
    """LAB: per layer, alpha sign(w) with alpha = ||d w||_1 / ||d||_1 and d = sqrt(v_hat) +
    eps from Adam's second moments; Adam on the float weights with the gradient at the binary
    ones, clipped to [-1, 1]. Returns the folded network (+-alpha per layer). Biases float;
    first/last layers binarized as in the paper unless ``binarize_ends`` is False."""
    id = "binary.lab"
    reference = ("Hou, Yao, Kwok 2017, Loss-aware Binarization of Deep Networks (ICLR; "
                 "arXiv 1611.01600)")

    lr: float = 0.001      # w is in weight units here, not in [-1, 1] units as BinaryConnect's
    eps: float = knob(1e-8, Real(1e-12, 1.0))   # added to sqrt(v_hat) in d (authors' code: 1e-8)

    def compress(self, model, data=None):
        chosen = set(chosen_layers(model, keep_ends=not self.binarize_ends))
        quantize_weights(model, lambda name, m: LossAwareWeight(m.weight) if name in chosen
                         else None)
        return self._train(model, data,
                           lambda pairs, opt: LabCurvature(pairs, opt, self.eps))


METHODS = (Sign, BinaryConnect, LossAware)
