"""Local binary convolution (Juefei-Xu, Boddeti, Savvides 2017, LBCNN).

Each kxk convolution (c_in -> c_out) becomes an LBC layer::

    x -> conv with m fixed sparse anchor filters in {-1, 0, +1} -> ReLU -> learnable 1x1 conv -> c_out

The anchor filters are drawn once from a seed and never trained (a buffer, not a parameter,
so the file keeps them and the optimizer never sees them); only the 1x1 weights learn. A
standard layer learns ``c_in k^2 c_out`` weights, the LBC layer ``m c_out``: with ``m = c_in``
(``width=1``) that is k^2 fewer, 9x for 3x3 and 169x for 13x13, the paper's 9x-169x.

``sparsity`` is the share of zeros in the anchors (the house convention, as in pruning); the
paper's and its code's "sparsity level" is the share of *nonzeros*, 1 - ours. Exactly
``round((1 - sparsity) n)`` of the n anchor weights are nonzero, each +1 or -1 with even odds
(the authors' code draws positions with replacement, so a few less). Default 0.5, in the
middle of the levels the paper compares.

The 1x1 weights start from the least-squares fit of the original convolution's output on one
training batch (``init="lstsq"``): the paper shows an LBC layer approximates a standard one,
the fit finds that approximation before fine-tuning; ``init="random"`` starts as the paper
trains, from scratch. The first convolution and the linear layers stay float (the paper's
networks keep a standard first convolution and float fully connected layers).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import hooked
from ..method import Choice, Int, Real, Tags, TrainingMethod, knob
from ..models import register_module, replace_module
from ..quantize.core import quantizable_layers
from ..train import seeded

# ------------------------------------------------------------------ functions on tensors

def anchor_filters(m: int, c_in: int, kernel: tuple[int, int], sparsity: float,
                   seed: int) -> torch.Tensor:
    """m x c_in x kh x kw filters in {-1, 0, +1}: exactly round((1 - sparsity) n) nonzeros
    at random positions, each +-1 with probability 1/2, from ``seed`` alone."""
    n = m * c_in * kernel[0] * kernel[1]
    g = torch.Generator().manual_seed(seed)
    nonzero = round((1 - sparsity) * n)
    where = torch.randperm(n, generator=g)[:nonzero]
    signs = torch.randint(0, 2, (nonzero,), generator=g).float() * 2 - 1
    flat = torch.zeros(n)
    flat[where] = signs
    return flat.view(m, c_in, *kernel)


def fit_mix(features: torch.Tensor, target: torch.Tensor, rows: int = 8192,
            seed: int = 0) -> torch.Tensor:
    """The 1x1 weights V (c_out x m) minimizing ||V features - target||^2 over the pixels of
    the batch (a random ``rows`` of them): (N, m, H, W), (N, c_out, H, W) -> (c_out, m, 1, 1)."""
    f = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
    t = target.permute(0, 2, 3, 1).reshape(-1, target.shape[1]).double()
    if len(f) > rows:
        pick = torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))[:rows]
        f, t = f[pick], t[pick]
    # a small ridge keeps the solve stable when some anchors never fire (ReLU output 0)
    gram = f.T @ f + 1e-6 * f.pow(2).sum() / len(f) * torch.eye(f.shape[1], dtype=f.dtype)
    v = torch.linalg.solve(gram, f.T @ t).T
    return v.float()[:, :, None, None]


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(learnable, fixed) numbers of weights of ``model``: its parameters, and the anchor
    filters of its LBC layers (buffers: not trained)."""
    learnable = sum(p.numel() for p in model.parameters())
    fixed = sum(m.anchors.numel() for m in model.modules() if isinstance(m, LocalBinaryConv))
    return learnable, fixed


# ------------------------------------------------------------------ the layer

@register_module
class LocalBinaryConv(nn.Module):
    """Fixed sparse binary anchors (c_in -> ``anchors`` channels, kxk), ReLU, learnable 1x1
    convolution to ``c_out`` (with a bias if the replaced convolution had one)."""

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0,
                 anchors: int | None = None, sparsity: float = 0.5, seed: int = 0,
                 bias: bool = False):
        super().__init__()
        pair = lambda v: list(v) if isinstance(v, (list, tuple)) else [v, v]
        kernel, stride, padding = pair(kernel_size), pair(stride), pair(padding)
        anchors = anchors or c_in
        self.config = {"c_in": c_in, "c_out": c_out, "kernel_size": kernel, "stride": stride,
                       "padding": padding, "anchors": anchors, "sparsity": sparsity,
                       "seed": seed, "bias": bias}
        self.stride, self.padding = tuple(stride), tuple(padding)
        self.register_buffer("anchors", anchor_filters(anchors, c_in, tuple(kernel), sparsity,
                                                       seed))
        self.mix = nn.Conv2d(anchors, c_out, 1, bias=bias)

    def responses(self, x):
        """The activated anchor responses, ReLU(anchors * x)."""
        return F.relu(F.conv2d(x, self.anchors, None, self.stride, self.padding))

    def forward(self, x):
        return self.mix(self.responses(x))

    def mac_counts(self, inputs, output) -> dict:
        """Per image: ``macs`` the dense MACs of the anchor convolution and the 1x1 (what the
        same shapes cost in float), ``effective_macs`` the anchors at their nonzero taps plus
        the 1x1; params are the learnable ones."""
        pixels = output[0, 0].numel()
        mix = self.mix.weight
        return {"params": sum(p.numel() for p in self.parameters()),
                "nonzeros": sum(int(p.count_nonzero()) for p in self.parameters()),
                "macs": (self.anchors.numel() + mix.numel()) * pixels,
                "effective_macs": (int(self.anchors.count_nonzero())
                                   + int(mix.count_nonzero())) * pixels}

    def ops(self, inputs, output) -> dict:
        """Per image: each nonzero anchor tap is an addition or a subtraction (a {-1, +1}
        weight), its zeros are skipped; the 1x1 mix is float MACs (``measure``)."""
        pixels = output[0, 0].numel()
        return {"add_ops": int(self.anchors.count_nonzero()) * pixels,
                "float_macs": self.mix.weight.numel() * pixels, "binary_ops": 0}


# ------------------------------------------------------------------ the method

@dataclass
class LocalBinary(TrainingMethod):
    """Every kxk convolution (k > 1) but the first becomes a local binary convolution:
    ``width * c_in`` fixed sparse {-1, 0, +1} anchor filters, ReLU, a learnable 1x1
    convolution. Float: the first convolution, the linear layers, BatchNorms and the 1x1
    weights. Then fine-tuned (the anchors stay as drawn)."""
    id = "binary.lbc"
    reference = ("Juefei-Xu, Boddeti, Savvides 2017, Local Binary Convolutional Neural "
                 "Networks")
    requires = "a kxk convolution (k > 1) after the first"
    sliders = {"sparsity": (0.0, 0.95, 0.05), "width": (0.25, 4.0, 0.25), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("smaller_module", "different_outputs")

    sparsity: float = knob(0.5, Real(0.0, 0.99))     # share of zeros in the anchors
    width: float = knob(1.0, Real(0.0625, 16.0))     # anchors per input channel (m / c_in)
    init: str = knob("lstsq", Choice(("lstsq", "random")))
    anchor_seed: int = knob(0, Int(0, 2**31 - 1))
    epochs: int = 3
    lr: float = 0.01
    weight_decay: float = 5e-4

    def tags(self) -> Tags:
        return replace(super().tags(), needs_data=self.epochs > 0 or self.init == "lstsq")

    def target_layers(self, model: nn.Module) -> list[str]:
        layers = quantizable_layers(model)
        return [n for n, m in layers[1:] if isinstance(m, nn.Conv2d)
                and max(m.kernel_size) > 1 and m.groups == 1]

    def supports(self, model):
        return bool(self.target_layers(model))

    def compress(self, model, data=None):
        names = self.target_layers(model)
        inputs = self._layer_inputs(model, names, data) if self.init == "lstsq" else {}
        with seeded(self.seed):     # the 1x1 initialization draws from torch's generator
            for i, name in enumerate(names):
                conv = model.get_submodule(name)
                lbc = LocalBinaryConv(conv.in_channels, conv.out_channels, conv.kernel_size,
                                      conv.stride, conv.padding,
                                      max(1, round(self.width * conv.in_channels)),
                                      self.sparsity, self.anchor_seed + i, conv.bias is not None)
                if name in inputs:
                    self._fit(lbc, conv, inputs[name])
                replace_module(model, name, lbc)
        if self.epochs:
            self.fit(model, data)
        return model

    def _layer_inputs(self, model, names, data) -> dict[str, torch.Tensor]:
        """Each target convolution's input on one training batch (the float network)."""
        x = next(iter(data.loader(min(self.batch_size, 256), shuffle=True, seed=self.seed)))[0]
        seen = {}
        keep = {n: lambda m, args, name: seen.__setitem__(name, args[0]) for n in names}
        with hooked(model, keep, pre=True), torch.no_grad():
            model(x)
        return seen

    @torch.no_grad()
    def _fit(self, lbc: LocalBinaryConv, conv: nn.Conv2d, x: torch.Tensor) -> None:
        target = F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
        lbc.mix.weight.copy_(fit_mix(lbc.responses(x), target, seed=self.seed))
        if conv.bias is not None:
            lbc.mix.bias.copy_(conv.bias)


METHODS = (LocalBinary,)
