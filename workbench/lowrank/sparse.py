"""Sparse decomposition of convolutions (Liu et al. 2015, Sparse Convolutional Neural
Networks): a change of basis of the input channels, then a sparse kxk convolution.

A kernel K (out x in x k x k) acts on the input channels linearly, so for any invertible
matrix P (in x in) the convolution equals a 1x1 convolution by P followed by the kxk
convolution with ``K' = K x_in P^-1`` (K applied to the transformed channels). Liu et al.
choose the basis so that the kernel's energy concentrates in few entries and then train K'
to be very sparse, which a sparse kernel multiplies cheaply; the 1x1 convolution stays dense
and costs in x in per position, little beside in x out x k x k.

The basis here is the one that concentrates energy best along the input mode: the left
singular vectors U of K unfolded as an in x (out k k) matrix, P = U^T (orthonormal, so
P^-1 = P^T and ``K' = K x_in P``); row r of K' then holds the r-th singular value's share of
the energy. ``rank`` < in keeps only the leading basis channels (a low-rank input mode, lossy
before any pruning). Then, as in the paper, the decomposed network is trained with an L1
penalty on the kernels (``penalty_epochs``, strength ``l1``), the kernels are pruned by
magnitude to ``sparsity`` (torch.nn.utils.prune masks, per layer or global) and fine-tuned
with the masks (``epochs``); P is trained too.

Adapted: the paper decomposes further (each transformed channel convolved with a few basis
kernels of its own, then a sparse matrix combines them); here the sparse part is the kxk
kernel on the transformed channels itself. The paper's sparse CPU kernel is not redone: the
MACs counted skip the zeros (``effective_macs``), the time is that of dense convolutions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils import prune

from ..method import (LAYER_NAMES, Choice, Int, Optional, Real, Tags, TrainingMethod,
                      check_layer_names, chosen_layers, knob, plain_conv)
from ..models import register_module, replace_module
from ..prune.magnitude import magnitude_mask
from ..train import Hook, seeded

# ------------------------------------------------------------------ functions on tensors


def input_basis(weight: torch.Tensor, rank: int | None = None) -> torch.Tensor:
    """P (rank x in), orthonormal rows: the leading left singular vectors of ``weight``
    (out, in, kh, kw) unfolded along its input channels, as rows. Signs are fixed (largest
    entry of each row positive) so the basis is deterministic."""
    unfolded = weight.detach().double().transpose(0, 1).reshape(weight.shape[1], -1)
    u = torch.linalg.svd(unfolded, full_matrices=False)[0]
    basis = u[:, :rank].T
    signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    return basis * signs


def to_basis(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """K' = K x_in P: the kernel acting on the transformed channels, (out, rank, kh, kw)."""
    return torch.einsum("ocij,rc->orij", weight, basis.to(weight.dtype)).contiguous()


def from_basis(kernel: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The kernel on the original channels that ``basis`` then ``kernel`` compute:
    K[o, c] = sum_r K'[o, r] P[r, c]."""
    return torch.einsum("orij,rc->ocij", kernel, basis.to(kernel.dtype)).contiguous()


# ------------------------------------------------------------------ the layer

@register_module
class SparseBasisConv2d(nn.Module):
    """A 1x1 convolution ``basis`` (in -> rank, the channel transform P) followed by the
    kxk convolution ``conv`` (rank -> out) with the (sparse) kernels."""

    def __init__(self, in_channels: int, out_channels: int, rank: int, kernel_size, stride,
                 padding, dilation, bias: bool):
        super().__init__()
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "rank": rank,
                       "kernel_size": list(kernel_size), "stride": list(stride),
                       "padding": list(padding), "dilation": list(dilation), "bias": bias}
        self.basis = nn.Conv2d(in_channels, rank, 1, bias=False)
        self.conv = nn.Conv2d(rank, out_channels, tuple(kernel_size), tuple(stride),
                              tuple(padding), tuple(dilation), bias=bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int | None = None) -> SparseBasisConv2d:
        """The same convolution in the basis of ``input_basis(conv.weight, rank)``."""
        basis = input_basis(conv.weight, rank)
        layer = cls(conv.in_channels, conv.out_channels, basis.shape[0], conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, conv.bias is not None)
        layer.to(conv.weight.dtype)
        with torch.no_grad():
            layer.basis.weight.copy_(basis[:, :, None, None])
            layer.conv.weight.copy_(to_basis(conv.weight.detach().double(), basis))
            if conv.bias is not None:
                layer.conv.bias.copy_(conv.bias)
        return layer.train(conv.training)

    def forward(self, x):
        return self.conv(self.basis(x))


class KernelL1(Hook):
    """Adds ``strength`` x sum |K'| over the sparse kernels to the loss (Liu et al.'s
    sparsity-inducing penalty)."""

    def __init__(self, layers: list[SparseBasisConv2d], strength: float):
        self.layers, self.strength = layers, strength

    def loss(self, model, x, y, logits, loss):
        return loss + self.strength * sum(m.conv.weight.abs().sum() for m in self.layers)


def kernel_masks(layers: dict[str, SparseBasisConv2d], sparsity: float, scope: str
                 ) -> dict[str, torch.Tensor]:
    """Magnitude masks of the kernels K' at ``sparsity``, per layer or with one global rank."""
    weights = {n: m.conv.weight.detach() for n, m in layers.items()}
    if scope == "layer":
        return {n: magnitude_mask(w, sparsity) for n, w in weights.items()}
    mask = magnitude_mask(torch.cat([w.flatten() for w in weights.values()]), sparsity)
    parts = torch.split(mask, [w.numel() for w in weights.values()])
    return {n: p.view_as(weights[n]) for n, p in zip(weights, parts)}


def kernel_sparsity(model: nn.Module) -> float:
    """Share of zeros in the kxk kernels of the SparseBasisConv2d layers (masks applied)."""
    kernels = [m.conv.weight for m in model.modules() if isinstance(m, SparseBasisConv2d)]
    total = sum(k.numel() for k in kernels)
    return 1.0 - sum(int(k.count_nonzero()) for k in kernels) / total if total else 0.0


# ------------------------------------------------------------------ the method

@dataclass
class SparseDecomp(TrainingMethod):
    """Sparse decomposition (Liu et al. 2015): every chosen convolution becomes a 1x1
    channel transform (the input-mode singular basis, ``rank`` channels, None: all) and a
    kxk convolution on the transformed channels; trained with an L1 penalty on those kernels
    (``penalty_epochs``), pruned by magnitude to ``sparsity`` (``scope`` "layer" or
    "global"), then fine-tuned with the masks (``epochs``). Without any epochs it needs no
    data: the basis change and the pruning alone."""
    id = "lowrank.sparse_decomp"
    reference = ("Liu, Wang, Foroosh, Tappen, Pensky 2015, Sparse Convolutional Neural "
                 "Networks")
    requires = "a Conv2d (groups 1, zero padding)"
    sliders = {"sparsity": (0.0, 0.99, 0.01)}
    smoke = {"penalty_epochs": 0, "epochs": 0}
    effects = ("fewer_nonzeros", "fewer_macs", "fewer_bytes", "different_outputs")

    sparsity: float = knob(0.9, Real(0.0, 0.999))   # 1.0 would zero every kernel
    rank: int | None = knob(None, Optional(Int(1, 1 << 16)))   # None: every input channel
    scope: str = knob("layer", Choice(("layer", "global")))
    l1: float = knob(1e-5, Real(0.0, 1.0))
    penalty_epochs: int = knob(1, Int(0, 1000))
    layers: tuple[str, ...] | None = knob(None, LAYER_NAMES)  # None: every conv
    epochs: int = 2
    lr: float = 0.01

    def tags(self) -> Tags:
        return replace(super().tags(), needs_data=self.epochs + self.penalty_epochs > 0)

    def eligible(self, model: nn.Module) -> list[str]:
        return chosen_layers(model, plain_conv, self.layers)

    def supports(self, model):
        return any(plain_conv(m) for m in model.modules())

    def check_model(self, model):
        if self.layers is not None:
            check_layer_names(self, "layers", model, kinds=(nn.Conv2d,))

    def decompose(self, model: nn.Module) -> dict[str, SparseBasisConv2d]:
        """Replace the chosen convolutions (in place); their new layers by name."""
        layers = {}
        for name in self.eligible(model):
            conv = model.get_submodule(name)
            rank = None if self.rank is None else min(self.rank, conv.in_channels)
            layers[name] = SparseBasisConv2d.from_conv(conv, rank)
            replace_module(model, name, layers[name])
        return layers

    def compress(self, model, data=None):
        with seeded(self.seed):     # the new layers draw initial weights, then overwritten
            layers = self.decompose(model)
        if self.penalty_epochs:
            self.fit(model, data, hooks=[KernelL1(list(layers.values()), self.l1)],
                     epochs=self.penalty_epochs, schedule="cosine")
        for name, mask in kernel_masks(layers, self.sparsity, self.scope).items():
            prune.custom_from_mask(layers[name].conv, "weight", mask)
        if self.epochs:
            self.fit(model, data, schedule="cosine")
        return model


METHODS = (SparseDecomp,)
