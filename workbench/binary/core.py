"""What every binary and ternary method of section C shares: the sign function and its
straight-through gradients, the least-squares scale of a sign tensor, the binary-weight parametrization and the hook that
clips its shadow weights, a sign activation module the codec can rebuild and the module that
stands where a ReLU was removed, and the choice of the layers a method binarizes.

A binary layer is an ordinary ``nn.Linear`` / ``nn.Conv2d`` whose ``weight`` is computed from a
float "shadow" weight by a parametrization (``quantize.core.quantize_weights``), as in the
quantizers of section B; ``quantize.core.fold`` leaves the plain +-alpha tensor after training,
which the codec stores as packed bits plus scales. A binary *activation* is a ``SignActivation``
module put where the network's ReLU was.

Convention: sign(0) = +1, so every binary value is -1 or +1 (torch.sign would give 0).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import register_module, replace_module
from ..quantize.core import quantizable_layers
from ..train import Hook


def exact_forward(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` forward, exactly; the gradient of ``surrogate`` backward. Written as
    ``value + (s - s.detach())`` (an exact zero added), not ``s + (value - s).detach()``,
    whose float rounding can leave a "binary" value a hair off +-1."""
    return value.detach() + (surrogate - surrogate.detach())


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (no zeros, unlike torch.sign)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; identity gradient backward (BinaryConnect's weights: the shadow weight
    is clipped to [-1, 1] by the optimizer step instead)."""
    return exact_forward(sign(x), x)


def sign_htanh(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; the gradient of hard-tanh backward, 1 where |x| <= 1 and 0 outside
    (Hubara et al. 2016: the straight-through estimator that cancels large inputs)."""
    clipped = torch.clamp(x, -1.0, 1.0)
    return exact_forward(sign(x), clipped)


class _ApproxSign(torch.autograd.Function):
    # One node in the graph: sign forward, the polynomial's derivative backward. Written with
    # autograd on the polynomial itself, the forward built and kept a dozen full-size tensors
    # per activation, and Bi-Real's training ran several times slower than the float network's.
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (2 - 2 * x.abs()).clamp_(min=0)


def sign_approx(x: torch.Tensor) -> torch.Tensor:
    """sign(x) forward; Bi-Real Net's ApproxSign gradient backward: 2 - 2|x| for |x| < 1,
    0 outside (the derivative of the piecewise quadratic -1 | 2x + x^2 | 2x - x^2 | 1 that hugs
    the sign function)."""
    return _ApproxSign.apply(x)


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """clip((x + 1) / 2, 0, 1): the probability of +1 in a stochastic sign."""
    return torch.clamp((x + 1) / 2, 0.0, 1.0)


def sign_stochastic(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """+1 with probability hard_sigmoid(x) = clip((x + 1) / 2, 0, 1), else -1 (Courbariaux
    et al. 2015); hard-tanh gradient backward."""
    p = hard_sigmoid(x.detach())
    draw = torch.where(torch.rand(x.shape, generator=generator, dtype=x.dtype) < p, 1.0, -1.0)
    clipped = torch.clamp(x, -1.0, 1.0)
    return exact_forward(draw.to(x.dtype), clipped)


GRADIENTS = {"ste": sign_ste, "htanh": sign_htanh, "approx": sign_approx}


def scale_dims(weight: torch.Tensor, per_channel: bool) -> list[int]:
    """The dimensions a scale is taken over: all of them, or all but the output channel."""
    return list(range(1, weight.dim())) if per_channel else list(range(weight.dim()))


def ls_scale(weight: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """The least-squares scale of sign(W): argmin_a ||W - a sign(W)||^2 = mean |W| (over each
    output channel, or the whole layer), shaped to broadcast against ``weight``."""
    return weight.abs().mean(dim=scale_dims(weight, per_channel), keepdim=True)


def binarize(weight: torch.Tensor, per_channel: bool = True) -> torch.Tensor:
    """alpha * sign(W) with the least-squares alpha (no gradient trick: a plain tensor)."""
    return ls_scale(weight, per_channel) * sign(weight)


WEIGHT_GRADIENTS = ("ste", "htanh", "magnitude", "xnor")


def binary_weight(weight: torch.Tensor, gradient: str = "ste", per_channel: bool = True,
                  stochastic: bool = False) -> torch.Tensor:
    """``a * sign(W)`` forward, exactly (``a`` = mean|W| per output channel or layer, or a
    random sign with probability hard_sigmoid(W) when ``stochastic``); backward, for the
    gradient g of the binary weight:

    - ``"ste"``: g (identity, the scale held constant);
    - ``"htanh"``: g * 1{|W| <= 1} (BNN's straight-through estimator);
    - ``"magnitude"``: a * g * 1{|W| <= 1} (Bi-Real's magnitude-aware gradient, a constant);
    - ``"xnor"``: the gradient of a(W) * sign(W) with the identity through the sign and the
      scale's own derivative, XNOR-Net's dC/dW = g (1/n + a d sign/dW) summed as autograd does.
    """
    if gradient not in WEIGHT_GRADIENTS:
        raise ValueError(f"binary_weight gradient={gradient!r}; allowed: "
                         f"{', '.join(WEIGHT_GRADIENTS)}")
    scale = ls_scale(weight if gradient == "xnor" else weight.detach(), per_channel)
    if stochastic:
        b = sign_stochastic(weight)
    else:
        b = sign_htanh(weight) if gradient in ("htanh", "magnitude") else sign_ste(weight)
    if gradient in ("magnitude", "xnor"):
        return scale * b
    # the value a * b exactly (b - b.detach() is an exact zero), b's gradient unscaled
    return scale * b.detach() + (b - b.detach())


class BinaryWeight(nn.Module):
    """Parametrization (``quantize.core.quantize_weights``): the layer computes with
    ``binary_weight`` of its float shadow weight; ``stochastic`` draws random signs in
    training mode only. Not a saved module: ``fold`` leaves the plain +-a tensor."""

    def __init__(self, gradient: str = "ste", stochastic: bool = False,
                 per_channel: bool = True):
        super().__init__()
        if gradient not in WEIGHT_GRADIENTS:
            raise ValueError(f"BinaryWeight gradient={gradient!r}; allowed: "
                             f"{', '.join(WEIGHT_GRADIENTS)}")
        self.gradient, self.stochastic, self.per_channel = gradient, stochastic, per_channel

    def forward(self, w):
        return binary_weight(w, self.gradient, self.per_channel,
                             self.stochastic and self.training)

    def extra_repr(self) -> str:
        return f"gradient={self.gradient!r}, stochastic={self.stochastic}"


def shadow_weights(model: nn.Module) -> list[tuple[nn.Module, nn.Parameter]]:
    """(parametrization, float shadow weight) of every parametrized Conv2d / Linear weight."""
    out = []
    for _, layer in quantizable_layers(model):
        if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
            entry = layer.parametrizations.weight
            out.append((entry[0], entry.original))
    return out


class ClipShadow(Hook):
    """After every optimizer step, clip shadow weights to [-1, 1] (BinaryConnect, BNN: beyond
    it a shadow weight no longer changes its binary value, it would only grow). ``weights``:
    the tensors to clip; None, every parametrized layer's shadow weight at each step."""

    def __init__(self, weights=None):
        self.weights = None if weights is None else list(weights)

    @torch.no_grad()
    def after_step(self, model):
        weights = self.weights if self.weights is not None else \
            [w for _, w in shadow_weights(model)]
        for w in weights:
            w.clamp_(-1.0, 1.0)


@register_module
class SignActivation(nn.Module):
    """A binary activation: sign(x) forward, with the gradient ``mode`` ("htanh": BNN's
    straight-through estimator, "approx": Bi-Real's ApproxSign, "ste": identity) and, when
    ``stochastic`` and training, a random sign with probability hard_sigmoid(x)."""

    def __init__(self, mode: str = "htanh", stochastic: bool = False):
        super().__init__()
        if mode not in GRADIENTS:
            raise ValueError(f"SignActivation mode={mode!r}; allowed: {', '.join(GRADIENTS)}")
        self.config = {"mode": mode, "stochastic": stochastic}
        self.mode, self.stochastic = mode, stochastic

    def forward(self, x):
        if self.stochastic and self.training:
            return sign_stochastic(x)
        return GRADIENTS[self.mode](x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, stochastic={self.stochastic}"


@register_module
class PassThrough(nn.Module):
    """Where a ReLU was removed (a sign follows, so sign(ReLU(x)) would be +1 everywhere): the
    input, unchanged. A registered module, so a file rebuilds the network without the ReLU."""

    def __init__(self):
        super().__init__()
        self.config = {}

    def forward(self, x):
        return x




def replace_relus(model: nn.Module, make) -> list[str]:
    """Replace every ``nn.ReLU`` module by ``make()`` (in place); their names."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for name in names:
        replace_module(model, name, make())
    return names


def end_layers(model: nn.Module) -> set[str]:
    """Names of the first and last Conv2d / Linear layers (most binary papers keep them float);
    empty for a network without any."""
    names = [n for n, _ in quantizable_layers(model)]
    return {names[0], names[-1]} if names else set()


def chosen_layers(model: nn.Module, keep_ends: bool) -> list[str]:
    """Names of the Conv2d / Linear layers a method binarizes: all, or all but the first and
    last when ``keep_ends``. A method's ``supports`` is False when this is empty, so that it
    never returns the network unchanged."""
    skip = end_layers(model) if keep_ends else set()
    return [n for n, _ in quantizable_layers(model) if n not in skip]
