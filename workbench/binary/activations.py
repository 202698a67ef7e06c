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
import torch.nn.functional as F
from torch import nn

from ..hooks import hooked, probe
from ..method import Choice, Flag, Int, Tags, TrainingMethod, clone_model, knob
from ..models import register_module, replace_module
from ..quantize.core import fold, quantizable_layers, quantize_weights
from ..train import Hook
from .core import GRADIENTS, SignActivation, end_layers, ls_scale, sign_ste, sign_stochastic

# ------------------------------------------------------------------ functions on tensors


def xnor_scale(x: torch.Tensor, kernel_size=None, stride=1, padding=0) -> torch.Tensor:
    """XNOR-Net's K: A = mean over channels of |x|, then A convolved with a kxk box of 1/k^2
    (zero padding, as the layer's own) for a convolution; per example mean |x| for a vector."""
    if x.dim() == 2:
        return x.abs().mean(1, keepdim=True)
    a = x.abs().mean(1, keepdim=True)
    return F.avg_pool2d(a, kernel_size, stride, padding, count_include_pad=True)


def residual_binarize(x: torch.Tensor, order: int, valid: torch.Tensor | None = None):
    """HORQ along the last dimension: [(beta_i, H_i)] with H_i = sign(R_{i-1}) (0 where
    ``valid`` is 0: padding), beta_i = mean|R_{i-1}| over the whole vector, R_i = R_{i-1} -
    beta_i H_i. The sign's gradient is hard-tanh's; beta's is exact."""
    terms, residual = [], x
    for _ in range(order):
        h = GRADIENTS["htanh"](residual)
        if valid is not None:
            h = h * valid
        beta = residual.abs().mean(-1, keepdim=True)
        terms.append((beta, h))
        residual = residual - beta * h
    return terms


def weight_binarizer(stochastic: bool = False):
    """alpha * sign(W), alpha = mean|W| per output channel; identity gradient through the sign
    (the shadow weight is clipped to [-1, 1] instead); a random sign when training if
    ``stochastic``."""
    def binarize(w, training):
        s = sign_stochastic(w) if stochastic and training else sign_ste(w)
        return ls_scale(w) * s
    return binarize


class BinaryWeight(nn.Module):
    """Parametrization: the layer computes with alpha * sign(shadow)."""

    def __init__(self, stochastic: bool = False):
        super().__init__()
        self.binarize = weight_binarizer(stochastic)

    def forward(self, w):
        return self.binarize(w, self.training)


class ClipShadow(Hook):
    """After each step, clip every binarized layer's shadow weight to [-1, 1] (BinaryConnect,
    BNN): beyond it the sign never changes and the weight would grow for nothing."""

    def after_step(self, model):
        for _, m in quantizable_layers(model):
            if hasattr(m, "parametrizations"):
                m.parametrizations.weight.original.clamp_(-1.0, 1.0)


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


@register_module
class PassThrough(nn.Module):
    """Where a ReLU stood before a layer that binarizes its input: the sign is the
    nonlinearity now."""

    def __init__(self):
        super().__init__()
        self.config = {}

    def forward(self, x):
        return x


class _BinaryInputLayer(nn.Module):
    """A Conv2d / Linear (``self.layer``, no bias) with binary weights, and its bias kept apart
    so that it is added after the input scale."""

    def __init__(self, kind: str, in_features: int, out_features: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, bias: bool = True, **extra):
        super().__init__()
        self.config = {"kind": kind, "in_features": in_features, "out_features": out_features,
                       "kernel_size": kernel_size, "stride": stride, "padding": padding,
                       "bias": bias, **extra}
        self.layer = nn.Linear(in_features, out_features, bias=False) if kind == "linear" else \
            nn.Conv2d(in_features, out_features, kernel_size, stride, padding, bias=False)
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
            new = cls("conv", layer.in_channels, layer.out_channels, layer.kernel_size[0],
                      layer.stride[0], layer.padding[0], layer.bias is not None, **extra)
        with torch.no_grad():
            new.layer.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def _add_bias(self, y):
        if self.bias is None:
            return y
        return y + (self.bias if y.dim() == 2 else self.bias.view(1, -1, 1, 1))

    def _positions(self, output) -> int:
        return output[0].numel() // self.config["out_features"]


@register_module
class XnorLayer(_BinaryInputLayer):
    """XNOR-Net: y = K * (sign(I) (*) alpha sign(W)) + b. The inner layer's input is exactly
    +-1 and its weight (after folding) {-alpha, +alpha} per filter."""

    def forward(self, x):
        c = self.config
        k = xnor_scale(x, c["kernel_size"], c["stride"], c["padding"])
        return self._add_bias(self.layer(GRADIENTS["htanh"](x)) * k)

    def ops(self, inputs, output) -> dict:
        """Per image: the inner layer's +-1 MACs as binary ops; float multiplies for K * y and
        the box filter of K; additions for the channel mean of |I|."""
        w = self.layer.weight
        positions = self._positions(output)
        c = self.config
        x = inputs[0][0]
        window = c["kernel_size"] ** 2 if c["kind"] == "conv" else x.numel()
        return {"binary_ops": w.numel() * positions,
                "float_macs": output[0].numel() + positions * window,
                "add_ops": x.numel()}


@register_module
class HorqLayer(_BinaryInputLayer):
    """HORQ: each receptive field x (a column of the unfolded input) ~ sum_i beta_i H_i, and
    y = sum_i beta_i (H_i . alpha sign(W)) + b: ``order`` +-1 products per output. Computed on
    the unfolded input, so it reports its own operation counts (``mac_counts``, ``ops``)."""

    def __init__(self, *args, order: int = 2, **kwargs):
        super().__init__(*args, order=order, **kwargs)
        self.order = order

    def patches(self, x):
        """The receptive fields (N, positions, c*k*k) and the mask of real (non-padding)
        entries; a vector is one field."""
        if x.dim() == 2:
            return x.unsqueeze(1), None
        c = self.config
        cols = F.unfold(x, c["kernel_size"], padding=c["padding"], stride=c["stride"])
        valid = F.unfold(torch.ones_like(x[:1, :1]).expand(1, x.shape[1], *x.shape[2:]),
                         c["kernel_size"], padding=c["padding"], stride=c["stride"])
        return cols.transpose(1, 2), valid.transpose(1, 2)

    def forward(self, x):
        cols, valid = self.patches(x)
        w = self.layer.weight.reshape(self.config["out_features"], -1)
        y = sum(beta * (h @ w.t()) for beta, h in residual_binarize(cols, self.order, valid))
        if x.dim() == 2:
            return self._add_bias(y.squeeze(1))
        c = self.config
        side = [(n + 2 * c["padding"] - c["kernel_size"]) // c["stride"] + 1 for n in x.shape[2:]]
        return self._add_bias(y.transpose(1, 2).reshape(x.shape[0], -1, *side))

    def mac_counts(self, inputs, output) -> dict:
        """``order`` binary MACs per weight and output position (for measure.layer_table)."""
        w = self.layer.weight
        macs = self.order * w.numel() * self._positions(output)
        return {"params": w.numel(), "nonzeros": int(w.count_nonzero()), "macs": macs,
                "effective_macs": macs}

    def ops(self, inputs, output) -> dict:
        """Per image: order x the +-1 MACs; float multiplies beta_i * y and beta_i * H_i (the
        residual update); additions for each beta (a sum of |R|) and the sum over orders."""
        w = self.layer.weight
        positions, field = self._positions(output), w[0].numel()
        return {"binary_ops": self.order * w.numel() * positions,
                "float_macs": self.order * positions * (self.config["out_features"] + field),
                "add_ops": self.order * positions * field}


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
    quantize_weights(model, lambda n, m: BinaryWeight(),
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
        quantize_weights(model, lambda n, m: None if n in skip else BinaryWeight(self.stochastic))
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
        quantize_weights(model, lambda n, m: None if n in ends else BinaryWeight())
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
