"""Several binary tensors per weight: ABC-Net's binary bases and network sketching.

Both approximate a float weight by a short sum of scaled sign tensors, W ~ sum_m a_m B_m with
B_m in {-1, +1}, and fit the scales by least squares; they differ in how the B_m are chosen.

- ``ABCNet`` (Lin, Zhao, Pan 2017, sec. 3.1): M bases from shifted thresholds of the whole
  layer, B_m = sign(W - mean(W) + u_m std(W)), the shifts u_m spread evenly over [-1, 1]
  (u = 0 when M = 1), and the M scales of the layer by least squares (``torch.linalg.lstsq``).
  The bases are thresholds of the same tensor, so they are nested and the folded layer has at
  most M + 1 distinct values (fewer than the 2^M of M arbitrary bases). Fine-tuning
  (``epochs > 0``) recomputes bases and scales from the float shadow weight on every forward
  pass and crosses the signs with the straight-through estimator (paper eq. 3); mean, std and
  the least-squares scales are held constant in the backward pass (our simplification).
- ``Sketch`` (Guo, Yao, Zhao, Chen 2017, "Network Sketching", Algorithms 1 and 2): per output
  filter, coarse to fine. Direct sketching: B_1 = sign(W), a_1 = mean|W|, then B_j = sign of
  the residual R_{j-1} = W - sum_{k<j} a_k B_k and a_j = mean|R_{j-1}|. Sketching with
  refinement: the same greedy choice of B_j, but after each added tensor all the scales of the
  filter are re-fitted jointly by least squares, and the next residual is taken from them. No
  training: the paper sketches a pre-trained network.

First and last layers: both keep them float by default (``quantize_ends=False``), as the
binary-weight networks these papers compare with do; ``quantize_ends=True`` binarizes them
too. Biases and BatchNorm stay float.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import Choice, Flag, Int, Method, Tags, TrainingMethod, knob
from ..quantize.core import fold, quantize_weights
from .core import chosen_layers, sign, sign_ste

# ------------------------------------------------------------------ ABC-Net on tensors


def abc_shifts(m: int) -> torch.Tensor:
    """ABC-Net's shifts u_i = -1 + 2 (i - 1) / (M - 1), i = 1..M (0 for a single base)."""
    return torch.zeros(1, dtype=torch.float64) if m == 1 else torch.linspace(-1, 1, m,
                                                                             dtype=torch.float64)


def abc_bases(weight: torch.Tensor, m: int) -> torch.Tensor:
    """The M sign tensors sign(W - mean W + u_i std W), stacked on a new last dimension."""
    w = weight.detach()
    centred = w - w.mean()
    std = w.std() if w.numel() > 1 else w.new_zeros(())
    shifts = abc_shifts(m).to(w.dtype)
    return sign(centred.unsqueeze(-1) + shifts * std)


def least_squares_scales(weight: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """argmin_a ||vec(W) - B a||^2 with B the bases as columns (``torch.linalg.lstsq``; the
    default gelsy driver takes rank-deficient B, e.g. two equal bases). Computed in float64."""
    b = bases.reshape(-1, bases.shape[-1]).to(torch.float64)
    w = weight.detach().reshape(-1, 1).to(torch.float64)
    return torch.linalg.lstsq(b, w).solution[:, 0].to(weight.dtype)


def abc_approximation(weight: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor,
                                                              torch.Tensor]:
    """(sum_i a_i B_i, the scales a, the bases B) of ABC-Net with ``m`` bases."""
    bases = abc_bases(weight, m)
    scales = least_squares_scales(weight, bases)
    return (bases * scales).sum(-1), scales, bases


class ABCWeight(nn.Module):
    """Parametrization: the layer computes with sum_i a_i B_i of its float shadow weight; the
    signs pass the gradient straight through, each scaled by its a_i (paper eq. 3)."""

    def __init__(self, m: int):
        super().__init__()
        self.m = m

    def forward(self, w):
        with torch.no_grad():
            mean, std = w.mean(), w.std()
            scales = least_squares_scales(w, abc_bases(w, self.m))
        shifted = (w - mean).unsqueeze(-1) + abc_shifts(self.m).to(w.dtype) * std
        return (sign_ste(shifted) * scales).sum(-1)


# ------------------------------------------------------------------ sketching on tensors


def sketch_filters(weight: torch.Tensor, tensors: int, refined: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network sketching of every output filter: (approximation, scales (out x j), bases
    (out x n x j)). Direct: a_j = mean |R_{j-1}| per filter (the least-squares scale of
    sign(R_{j-1}) alone). Refined: all scales re-fitted jointly after each tensor."""
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    residual, bases, scales = w.clone(), [], None
    for _ in range(tensors):
        bases.append(sign(residual))
        stack = torch.stack(bases, -1)                      # out x n x j
        if refined:
            scales = torch.linalg.lstsq(stack, w.unsqueeze(-1)).solution[..., 0]
        else:
            new = residual.abs().mean(1, keepdim=True)
            scales = new if scales is None else torch.cat([scales, new], 1)
        residual = w - (stack * scales.unsqueeze(1)).sum(-1)
    approx = (w - residual).reshape(weight.shape).to(weight.dtype)
    return approx, scales.to(weight.dtype), torch.stack(bases, -1).to(weight.dtype)


def relative_error(weight: torch.Tensor, approx: torch.Tensor) -> float:
    """||W - approx|| / ||W||."""
    return ((weight - approx).norm() / weight.norm()).item()


# ------------------------------------------------------------------ methods


REQUIRES = ("a Conv2d or Linear layer it may binarize (quantize_ends=False keeps the first and "
            "last float: set quantize_ends=True to binarize them too)")


@dataclass
class ABCNet(TrainingMethod):
    """ABC-Net's multiple binary weight bases: each layer's weight becomes sum_i a_i B_i with M
    shifted-threshold sign tensors and least-squares scales; ``epochs=0`` is post-training,
    ``epochs > 0`` fine-tunes the float shadow weights with the STE through the bases. Only the
    weights are binarized (ABC-Net's multiple binary activations are not done here). First and
    last layers float unless ``quantize_ends``. Returns the folded model: at most M + 1
    distinct values per layer."""
    id = "binary.abc"
    reference = ("Lin, Zhao, Pan 2017, Towards Accurate Binary Convolutional Neural Network "
                 "(ABC-Net)")
    sliders = {"M": (1, 5, 1), "epochs": (0, 5, 1)}
    smoke = {"M": 3, "epochs": 0}
    effects = ("fewer_bytes", "different_outputs")
    requires = REQUIRES

    M: int = knob(3, Int(1, 5))
    quantize_ends: bool = knob(False, Flag())
    epochs: int = 0
    lr: float = 0.005
    weight_decay: float = 0.0

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.M))

    def supports(self, model):
        # never the network unchanged: with the ends float, something must be left between them
        return bool(chosen_layers(model, keep_ends=not self.quantize_ends))

    def compress(self, model, data=None):
        chosen = set(chosen_layers(model, keep_ends=not self.quantize_ends))
        quantize_weights(model, lambda name, m: ABCWeight(self.M) if name in chosen else None)
        if self.epochs:
            self.fit(model, data)
        return fold(model.eval())


@dataclass
class Sketch(Method):
    """Network sketching: every output filter of a pre-trained layer approximated by
    ``tensors`` scaled binary tensors, coarse to fine, ``mode="direct"`` (greedy residual
    signs and scales) or ``"refined"`` (scales re-fitted by least squares after each tensor).
    No data, no training. First and last layers float unless ``quantize_ends``."""
    id = "binary.sketch"
    reference = ("Guo, Yao, Zhao, Chen 2017, Network Sketching: Exploiting Binary Structure "
                 "in Deep CNNs")
    sliders = {"tensors": (1, 6, 1)}
    smoke = {"tensors": 2}
    effects = ("fewer_bytes", "different_outputs")
    requires = REQUIRES

    tensors: int = knob(3, Int(1, 8))
    mode: str = knob("refined", Choice(("direct", "refined")))
    quantize_ends: bool = knob(False, Flag())

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.tensors))

    def supports(self, model):
        return bool(chosen_layers(model, keep_ends=not self.quantize_ends))

    def compress(self, model, data=None):
        chosen = set(chosen_layers(model, keep_ends=not self.quantize_ends))
        with torch.no_grad():
            for name, module in model.named_modules():
                if name in chosen:
                    approx = sketch_filters(module.weight, self.tensors,
                                            self.mode == "refined")[0]
                    module.weight.copy_(approx)
        return model


METHODS = (ABCNet, Sketch)
