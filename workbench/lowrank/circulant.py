"""Circulant projections (Cheng et al. 2015; the circulant structure Wang et al. 2017 reuse for
feature maps): a Linear layer's weight replaced by a circulant matrix times random sign flips.

A circulant matrix C(r) (N x N) is fixed by its first column r: C[i, j] = r[(i - j) mod N],
so C(r) x is the circular convolution of r and x, computed with the FFT:

    C(r) D x = irfft( rfft(r) * rfft(D x) )

D is a fixed diagonal of random signs (+-1), drawn once, as in the paper: without it every
output would see the input through the same shifted filter. N parameters instead of N^2, and
O(N log N) operations instead of N^2.

A layer of n inputs and m outputs with m != n uses N = max(m, n): the input is padded with
zeros to N and the first m outputs are kept (Cheng et al.'s choice for k < d; the paper pads
the input when k > d). So the layer stores N values and a bias. The block-circulant variant
(CirCNN: a grid of smaller circulant blocks, which suits a layer much wider than it is tall)
is not here.

Initialization: ``init="project"`` starts from the circulant matrix nearest to the dense
weights (Frobenius norm, on the m x n entries the layer uses): r[k] is the mean of W[i, j] d[j]
over the wrapped diagonal (i - j) mod N = k; then the network is fine-tuned. The paper trains
circulant networks from scratch (``init="scratch"``: r drawn like nn.Linear's weights).

Counting (``mac_counts``), real multiplications per image, with the convention
(stated, nominal) that an FFT of real input of length N (rfft, or its inverse irfft) costs
N log2 N real multiply-adds: half a complex FFT of length N, whose (N/2) log2 N butterflies
each take one complex multiplication, i.e. 4 real ones. Mixed-radix lengths (N = 784 = 2^4 7^2)
cost somewhat more in practice; the count keeps the same formula. Per image: rfft of the input,
the product with rfft(r) (N/2 + 1 complex products, 4 real multiplications each), irfft; and
rfft(r), computed once per call, shared by the images of the call. The sign flips are sign
changes, not multiplications, and are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..method import (LAYER_NAMES, Choice, TrainingMethod, check_layer_names, knob, layers_of)
from ..models import register_module, replace_module
from ..train import seeded
from .hashing import xxh32_pair

# ------------------------------------------------------------------ functions on tensors


def random_signs(n: int, seed: int) -> torch.Tensor:
    """n signs +-1 from the lowest bit of XXH32(k, 0; seed): the same on every platform."""
    k = torch.arange(n, dtype=torch.int64)
    return 1.0 - 2.0 * (xxh32_pair(k, torch.zeros_like(k), seed) & 1).float()


def circulant_matrix(r: torch.Tensor) -> torch.Tensor:
    """C(r): C[i, j] = r[(i - j) mod N] (first column r, as scipy.linalg.circulant)."""
    n = r.shape[0]
    i = torch.arange(n)
    return r[(i[:, None] - i[None, :]) % n]


def circulant_apply(x: torch.Tensor, r: torch.Tensor, signs: torch.Tensor,
                    out_features: int) -> torch.Tensor:
    """The first ``out_features`` entries of C(r) D [x, 0...] for every row of ``x`` (..., n),
    computed with the FFT (N = len(r) >= n)."""
    n = r.shape[0]
    x = F.pad(x * signs[:x.shape[-1]], (0, n - x.shape[-1]))
    y = torch.fft.irfft(torch.fft.rfft(x) * torch.fft.rfft(r), n=n)
    return y[..., :out_features]


def project_to_circulant(weight: torch.Tensor, signs: torch.Tensor, n: int) -> torch.Tensor:
    """r minimizing || (C(r) D)[:m, :k] - weight ||_F for weight (m x k), N = n >= m, k: the
    mean of weight[i, j] * d[j] over each wrapped diagonal (i - j) mod N."""
    m, k = weight.shape
    i, j = torch.meshgrid(torch.arange(m), torch.arange(k), indexing="ij")
    diagonal = ((i - j) % n).flatten()
    total = torch.zeros(n, dtype=weight.dtype).index_add_(0, diagonal,
                                                         (weight * signs[:k]).flatten())
    count = torch.bincount(diagonal, minlength=n).to(weight.dtype)
    return total / count.clamp(min=1)


def fft_mults(n: int) -> float:
    """Real multiplications counted for an rfft or irfft of length n: n log2 n (docstring)."""
    return n * math.log2(n) if n > 1 else 0.0


def circulant_mults(n: int, batch: int = 1) -> float:
    """Real multiplications per image of a circulant layer of size n at ``batch`` images a
    call: rfft(x), the spectral product, irfft(y), and rfft(r) / batch."""
    return 2 * fft_mults(n) + 4 * (n // 2 + 1) + fft_mults(n) / batch


# ------------------------------------------------------------------ the module


@register_module
class CirculantLinear(nn.Module):
    """y = (C(r) D [x, 0])[:out_features] + bias, with the FFT. State: ``r`` (N values) and
    ``bias``; the signs D come from ``seed`` (config), a non-persistent buffer."""

    def __init__(self, in_features: int, out_features: int, seed: int = 0, bias: bool = True):
        super().__init__()
        self.config = {"in_features": in_features, "out_features": out_features,
                       "seed": seed, "bias": bias}
        self.in_features, self.out_features = in_features, out_features
        self.size = max(in_features, out_features)
        self.r = nn.Parameter(torch.zeros(self.size))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("signs", random_signs(self.size, seed), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, seed: int, init: str = "project"
                    ) -> CirculantLinear:
        layer = cls(linear.in_features, linear.out_features, seed, linear.bias is not None)
        with torch.no_grad():
            if init == "project":
                layer.r.copy_(project_to_circulant(linear.weight.detach(), layer.signs,
                                                   layer.size))
                if linear.bias is not None:
                    layer.bias.copy_(linear.bias.detach())
            else:
                bound = linear.in_features ** -0.5
                nn.init.uniform_(layer.r, -bound, bound)
                if linear.bias is not None:
                    nn.init.uniform_(layer.bias, -bound, bound)
        return layer

    def dense_weight(self) -> torch.Tensor:
        """The m x n matrix the layer applies: (C(r) D)[:m, :n] (for tests and lessons)."""
        full = circulant_matrix(self.r) * self.signs[None, :]
        return full[:self.out_features, :self.in_features]

    def forward(self, x):
        y = circulant_apply(x, self.r, self.signs, self.out_features)
        return y if self.bias is None else y + self.bias

    def mac_counts(self, inputs, output) -> dict:
        """Counted real multiplications per image (module docstring), for every row the layer
        transforms; params: N + bias."""
        uses = output[0].numel() // self.out_features
        mults = round(circulant_mults(self.size, output.shape[0]) * uses)
        params = [t for t in (self.r, self.bias) if t is not None]
        return {"params": sum(t.numel() for t in params),
                "nonzeros": sum(int(t.count_nonzero()) for t in params),
                "macs": mults, "effective_macs": mults}


def cheaper_as_circulant(linear: nn.Linear) -> bool:
    """Whether the circulant layer counts fewer multiplications (batch 1) than the dense."""
    n = max(linear.in_features, linear.out_features)
    return circulant_mults(n) < linear.in_features * linear.out_features


# ------------------------------------------------------------------ method


@dataclass
class Circulant(TrainingMethod):
    """Each chosen Linear layer becomes a CirculantLinear (N = max(in, out) parameters, FFT),
    started from the nearest circulant matrix (``init="project"``) or at random
    (``"scratch"``, the paper), then the network is trained (``epochs``). ``layers=None``: every
    Linear layer that the circulant makes cheaper in counted multiplications (not a 100 -> 10
    classifier, whose FFTs cost more than its 1,000 MACs). Layer k gets sign seed seed + k."""
    id = "approx.circulant"
    reference = ("Cheng, Yu, Feris, Kumar, Choudhary, Chang 2015, An exploration of parameter "
                 "redundancy in deep networks with circulant projections; Wang, Xu, You, Tao, "
                 "Xu 2017, Beyond Filters: Compact Feature Map for Portable Deep Model")
    requires = "a Linear layer that a circulant matrix computes with fewer multiplications"
    sliders = {"epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes", "different_outputs")

    init: str = knob("project", Choice(("project", "scratch")))
    layers: tuple[str, ...] | None = knob(None, LAYER_NAMES)
    epochs: int = 3
    lr: float = 0.01
    weight_decay: float = 0.0

    def validate(self):
        if self.init == "scratch" and self.epochs == 0:
            raise ValueError(f"{type(self).__name__}.epochs=0 with init='scratch': a random "
                             "circulant layer needs training")

    def chosen(self, model: nn.Module) -> list[tuple[str, nn.Linear]]:
        linears = layers_of(model, (nn.Linear,))
        if self.layers is None:
            return [(n, m) for n, m in linears if cheaper_as_circulant(m)]
        return [(n, m) for n, m in linears if n in self.layers]

    def supports(self, model):
        return bool(self.chosen(model)) if self.layers is None else \
            any(isinstance(m, nn.Linear) for m in model.modules())

    def check_model(self, model):
        check_layer_names(self, "layers", model, kinds=(nn.Linear,))

    def settings(self) -> dict:
        out = {"init": self.init, "epochs": self.epochs}
        if self.epochs:
            out.update(lr=self.lr, seed=self.seed, **self.teacher_settings())
        if self.layers is not None:
            out["layers"] = list(self.layers)
        return out

    def compress(self, model, data=None):
        with seeded(self.seed):
            for k, (name, linear) in enumerate(self.chosen(model)):
                replace_module(model, name, CirculantLinear.from_linear(
                    linear, self.seed + k, self.init))
        if self.epochs:
            self.fit(model, data)
        return model


METHODS = (Circulant,)
