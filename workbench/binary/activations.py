"""Binary weights *and* activations: BNN, XNOR-Net / BWN, HORQ.

- ``BNN`` (Hubara et al. 2016): every weight is binary (a float shadow weight clipped to
  [-1, 1]) and every ReLU module becomes a sign with the hard-tanh straight-through gradient.
  BNN puts a BatchNorm before each sign: where the ReLU follows a BatchNorm (VGG-small) it is
  simply replaced; where it follows a plain layer (the LeNets) it becomes ``NormSign``, a new
  BatchNorm + sign. The weights are ``mean|W| * sign(W)`` per output channel (BNN's are plain
  +-1: before a BatchNorm the scale changes nothing, and it lets the last layer, which has no
  BatchNorm after it here, keep logits of a float layer's size). As in the paper, the first
  layer's input stays real (the image), the last layer's output stays real (the logits), and the
  weights of both are binary too unless ``float_ends``.
- ``XNOR`` (Rastegari et al. 2016): ``mode="bwn"`` binarizes the weights, ``alpha * sign(W)``
  with alpha = mean|W| per output filter, inputs real. ``mode="xnor"`` also binarizes the input of
  each middle layer: ``XnorLayer`` computes K (the mean of |I| over channels, averaged over each
  kxk window), convolves sign(I) with alpha * sign(W), and multiplies by K; the ReLU before such
  a layer is removed (``PassThrough``: the block becomes BatchNorm -> sign -> conv, the paper's
  order; sign(relu(x)) would be +1 everywhere). First and last layers stay float, as the paper.
- ``HORQ`` (Li et al. 2017): ``HorqLayer`` binarizes each receptive field (each column of the
  unfolded input, the paper's reshaping) in ``order`` residual steps, R_0 = X, H_i = sign(R_{i-1}),
  beta_i = mean|R_{i-1}|, R_i = R_{i-1} - beta_i H_i, and computes sum_i beta_i (H_i . W_b), each
  term a +-1 x +-1 product. Order 1 is XNOR's input binarization. Ends float, ReLUs as XNOR.

Networks whose binarized layers would still see only non-negative inputs (ReLU calls that are
not modules, e.g. inside ResNet-20's blocks; LeNet-5 has no activation after its convolutions)
are not supported by the methods that binarize activations: ``supports`` checks it with one
forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..hooks import hooked, probe
from ..method import Choice, Flag, Int, Tags, TrainingMethod, clone_model, knob
from ..models import register_module, replace_module
from ..quantize.core import fold, quantizable_layers, quantize_weights
from .activations_tensors import (  # noqa: F401
    horq_product,
    output_size,
    pair,
    receptive_fields,
    residual_binarize,
    xnor_scale,
)
from .core import (
    GRADIENTS,
    BinaryWeight,
    ClipShadow,
    PassThrough,
    SignActivation,
    end_layers,
)

# ------------------------------------------------------------------ modules


@register_module
class NormSign(nn.Module):
    """BatchNorm, then sign: BNN's activation where the layer before has no BatchNorm."""

    def __init__(self, features: int, dims: int = 1, mode: str = "htanh",
                 stochastic: bool = False):
        super().__init__()
        self.config = {"features": features, "dims": dims, "mode": mode, "stochastic": stochastic}
        self.norm = (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features)
        self.sign = SignActivation(mode, stochastic)

    def forward(self, x):
        return self.sign(self.norm(x))


class _BinaryInputLayer(nn.Module):
    """A Conv2d / Linear (``self.layer``, no bias) with binary weights, and its bias kept apart
    so that it is added after the input scale. Every argument of the convolution is kept
    (kernel, stride, padding, dilation as pairs, groups: grouped ones are computed per group);
    padding other than explicit zeros is refused (K and the fields assume zero padding)."""

    def __init__(self, kind: str, in_features: int, out_features: int, kernel_size=1,
                 stride=1, padding=0, bias: bool = True, dilation=1, groups: int = 1,
                 **extra):
        super().__init__()
        kernel_size, stride, padding, dilation = map(lambda v: list(pair(v)),
                                                     (kernel_size, stride, padding, dilation))
        self.config = {"kind": kind, "in_features": in_features, "out_features": out_features,
                       "kernel_size": kernel_size, "stride": stride, "padding": padding,
                       "bias": bias, "dilation": dilation, "groups": groups, **extra}
        self.layer = nn.Linear(in_features, out_features, bias=False) if kind == "linear" else \
            nn.Conv2d(in_features, out_features, kernel_size, stride, padding, dilation, groups,
                      bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_layer(cls, layer: nn.Module, **extra):
        # the new layer's random initialization is overwritten at once: keep it from drawing
        # on the caller's random stream
        with torch.random.fork_rng(devices=[]):
            return cls._copy_of(layer, **extra)

    @classmethod
    def _copy_of(cls, layer: nn.Module, **extra):
        if isinstance(layer, nn.Linear):
            new = cls("linear", layer.in_features, layer.out_features, bias=layer.bias is not None,
                      **extra)
        else:
            if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
                raise ValueError(f"{cls.__name__}: padding={layer.padding!r}, padding_mode="
                                 f"{layer.padding_mode!r}; only explicit zero padding")
            new = cls("conv", layer.in_channels, layer.out_channels, layer.kernel_size,
                      layer.stride, layer.padding, layer.bias is not None, layer.dilation,
                      layer.groups, **extra)
        if new.layer.weight.shape != layer.weight.shape:    # never broadcast one into the other
            raise ValueError(f"{cls.__name__}: weight {tuple(layer.weight.shape)} does not fit "
                             f"{tuple(new.layer.weight.shape)}")
        with torch.no_grad():
            new.layer.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def _add_bias(self, y):
        if self.bias is None:
            return y
        return y + (self.bias if y.dim() == 2 else self.bias.view(1, -1, 1, 1))

    def _conv_args(self) -> dict:
        c = self.config
        return {k: c.get(k, 1) for k in ("kernel_size", "stride", "padding", "dilation",
                                          "groups")}

    def mac_counts(self, inputs, output) -> dict:
        """Per image, the float layer's figures: each weight once per output position (the
        same MACs the float network reports for this layer; see ``measure``)."""
        w = self.layer.weight
        positions = output[0].numel() // self.config["out_features"]
        return {"params": w.numel(), "nonzeros": int(w.count_nonzero()),
                "macs": w.numel() * positions, "effective_macs": int(w.count_nonzero()) * positions}


@register_module
class XnorLayer(_BinaryInputLayer):
    """XNOR-Net: y = K * (sign(I) (*) alpha sign(W)) + b. The inner layer's input is exactly
    +-1 and its weight (after folding) {-alpha, +alpha} per filter. In a grouped convolution K
    is that of each group's input channels."""

    def forward(self, x):
        args = self._conv_args()
        k = xnor_scale(x, **args)
        y = self.layer(GRADIENTS["htanh"](x))
        if y.dim() == 4:
            n, c, h, w = y.shape
            y = (y.view(n, args["groups"], c // args["groups"], h, w) * k.unsqueeze(2)).view(
                n, c, h, w)
        else:
            y = y * k
        return self._add_bias(y)

    def ops(self, inputs, output) -> dict:
        """Per image: each MAC of the layer once, +-1 x +-1. K, alpha and the products by them
        are scales, not counted (``measure``)."""
        return {"binary_ops": self.mac_counts(inputs, output)["macs"], "float_macs": 0,
                "add_ops": 0}


@register_module
class HorqLayer(_BinaryInputLayer):
    """HORQ: each receptive field x (a column of the unfolded input; per group in a grouped
    convolution) ~ sum_i beta_i H_i, and y = sum_i beta_i (H_i . alpha sign(W)) + b: ``order``
    +-1 products per output. Computed on the unfolded input, so it reports its own operation
    counts (``mac_counts``, ``ops``)."""

    def __init__(self, *args, order: int = 2, **kwargs):
        super().__init__(*args, order=order, **kwargs)
        self.order = order

    def forward(self, x):
        if x.dim() == 2:
            y = horq_product(x[:, None, None, :], None, self.layer.weight, self.order)
            return self._add_bias(y[:, 0])
        args = self._conv_args()
        fields, valid = receptive_fields(x, **args)
        y = horq_product(fields, valid, self.layer.weight, self.order)
        side = [output_size(n, *a) for n, *a in zip(x.shape[2:], args["kernel_size"],
                                                     args["stride"], args["padding"],
                                                     args["dilation"])]
        return self._add_bias(y.transpose(1, 2).reshape(x.shape[0], -1, *side))

    def ops(self, inputs, output) -> dict:
        """Per image: each MAC of the layer ``order`` times, +-1 x +-1 (``terms`` = order).
        The betas, the residual updates and the sum of the beta-scaled terms are scale work,
        not counted (``measure``)."""
        return {"binary_ops": self.order * self.mac_counts(inputs, output)["macs"],
                "float_macs": 0, "add_ops": 0, "terms": self.order}


# ------------------------------------------------------------------ building the networks


def _after_batchnorm(model: nn.Module, path: str) -> bool:
    parent, _, child = path.rpartition(".")
    container = model.get_submodule(parent) if parent else model
    if not (isinstance(container, nn.Sequential) and child.isdigit() and int(child) > 0):
        return False
    return isinstance(container[int(child) - 1], (nn.BatchNorm1d, nn.BatchNorm2d))


def relus_to_signs(model: nn.Module, mode: str = "htanh", stochastic: bool = False) -> list[str]:
    """BNN: every nn.ReLU becomes a sign, with a BatchNorm before it where there is none."""
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    shapes = {}
    probe(model, model.input_shape, {n: lambda m, i, o, n_: shapes.__setitem__(n_, i[0].shape)
                                     for n in relus})
    for name in relus:
        if _after_batchnorm(model, name):
            replace_module(model, name, SignActivation(mode, stochastic))
        else:
            shape = shapes[name]
            replace_module(model, name, NormSign(shape[1], 1 if len(shape) == 2 else 2, mode,
                                                 stochastic))
    return relus


def binarize_inputs(model: nn.Module, cls, **extra) -> list[str]:
    """Every middle layer becomes ``cls`` (XnorLayer / HorqLayer); the ReLU modules whose
    next layer binarizes its input become PassThrough. The names of the new layers."""
    layers = quantizable_layers(model)
    ends = end_layers(model)
    order = [n for n, m in model.named_modules() if isinstance(m, (nn.ReLU, nn.Conv2d, nn.Linear))]
    for i, name in enumerate(order):
        following = next((n for n in order[i + 1:] if n in dict(layers)), None)
        if isinstance(model.get_submodule(name), nn.ReLU) and following not in ends | {None}:
            replace_module(model, name, PassThrough())
    middle = [n for n, _ in layers if n not in ends]
    for name in middle:
        replace_module(model, name, cls.from_layer(model.get_submodule(name), **extra))
    quantize_weights(model, lambda n, m: BinaryWeight("xnor"),
                     layers={f"{n}.layer" for n in middle})
    return middle


@torch.no_grad()
def inputs_are_binary(model: nn.Module, names: list[str], seed: int = 0) -> dict[str, bool]:
    """For each named module: whether its input on a random batch is all +-1 (or, for a layer
    that binarizes its own input, takes both signs)."""
    seen = {}

    def check(module, inputs, name):
        x = inputs[0]
        own = isinstance(module, _BinaryInputLayer)
        seen[name] = bool((x < 0).any() and (x >= 0).any()) if own else \
            bool(((x == 1) | (x == -1)).all())

    g = torch.Generator().manual_seed(seed)
    with hooked(model, {n: check for n in names}, pre=True):
        model(torch.randn(2, *model.input_shape, generator=g))
    return seen


# ------------------------------------------------------------------ methods


@dataclass
class _BinaryActivations(TrainingMethod):
    """Shared training: Adam (as BNN and XNOR-Net), one-cycle schedule, shadow weights clipped
    to [-1, 1] after each step; the result is folded."""
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")
    requires = "Conv2d or Linear layers whose binarized inputs can take both signs"

    epochs: int = 3
    lr: float = 0.003

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=1.0)

    def convert(self, model: nn.Module) -> list[str]:
        """Binarize ``model`` in place; names of the layers whose inputs must be binary."""
        raise NotImplementedError

    def supports(self, model):
        if not super().supports(model) or not hasattr(model, "input_shape"):
            return False
        copy = clone_model(model)
        try:
            names = self.convert(copy)
        except (ValueError, KeyError):
            return False
        return bool(names) and all(inputs_are_binary(copy, names).values())

    def compress(self, model, data=None):
        self.convert(model)
        if self.epochs:
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
            self.fit(model, data, hooks=[ClipShadow()], optimizer=optimizer)
        return fold(model.eval())


@dataclass
class BNN(_BinaryActivations):
    """Binarized Neural Networks: binary weights (alpha * sign, alpha = mean|W| per channel)
    and sign activations with the hard-tanh STE in place of every ReLU module (a BatchNorm put
    before the sign where the layer has none); ``stochastic`` draws signs with probability
    hard_sigmoid while training (weights and activations), deterministic at test. First layer's
    input and the logits stay real; the first and last weights are binary unless
    ``float_ends``."""
    id = "binary.bnn"
    reference = ("Hubara, Courbariaux, Soudry, El-Yaniv, Bengio 2016, Binarized Neural "
                 "Networks")
    sliders = {"epochs": (0, 10, 1)}

    stochastic: bool = knob(False, Flag())
    float_ends: bool = knob(False, Flag())

    def convert(self, model):
        skip = end_layers(model) if self.float_ends else set()
        quantize_weights(model, lambda n, m: None if n in skip
                         else BinaryWeight("xnor", stochastic=self.stochastic))
        if not relus_to_signs(model, "htanh", self.stochastic):
            raise ValueError("no ReLU module to turn into a sign")
        return [n for n, _ in quantizable_layers(model)][1:]


@dataclass
class XNOR(_BinaryActivations):
    """XNOR-Net (``mode="xnor"``: binary weights and inputs, scales alpha and K) or BWN
    (``mode="bwn"``: binary weights alpha * sign(W), real inputs, ReLUs kept). First and last
    layers float, as the paper."""
    id = "binary.xnor"
    reference = ("Rastegari, Ordonez, Redmon, Farhadi 2016, XNOR-Net: ImageNet Classification "
                 "Using Binary Convolutional Neural Networks")
    sliders = {"epochs": (0, 10, 1)}

    mode: str = knob("xnor", Choice(("xnor", "bwn")))

    def convert(self, model):
        if self.mode == "xnor":
            return binarize_inputs(model, XnorLayer)
        ends = end_layers(model)
        quantize_weights(model, lambda n, m: None if n in ends else BinaryWeight("xnor"))
        return []

    def supports(self, model):
        if self.mode == "bwn":
            return TrainingMethod.supports(self, model) and len(quantizable_layers(model)) > 2
        return super().supports(model)


@dataclass
class HORQ(_BinaryActivations):
    """High-order residual quantization of each middle layer's input (``order`` binary
    residual terms per receptive field) with binary weights alpha * sign(W). First and last
    layers float; ReLUs before binarized layers removed, as XNOR-Net."""
    id = "binary.horq"
    reference = ("Li, Ni, Zhang, Yang, Gao 2017, Performance Guaranteed Network Acceleration "
                 "via High-Order Residual Quantization")
    sliders = {"order": (1, 4, 1), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1, "batch_size": 32}

    order: int = knob(2, Int(1, 4))

    def convert(self, model):
        return binarize_inputs(model, HorqLayer, order=self.order)


METHODS = (BNN, XNOR, HORQ)
