"""Second-order pruning: Optimal Brain Damage (LeCun et al. 1990) and Optimal Brain Surgeon
(Hassibi & Stork 1993), the latter layer-wise as in L-OBS (Dong et al. 2017) and OBC (Frantar
& Alistarh 2022).

Near a minimum the loss grows by about 1/2 dw^T H dw when the weights move by dw.

- OBD keeps only the diagonal of H: zeroing w_i costs s_i = 1/2 h_ii w_i^2 (the saliency), and
  the weights with the smallest saliency go. h_ii is estimated on training images, either as the
  diagonal of the Gauss-Newton matrix J^T (diag p - p p^T) J of the cross-entropy (``fisher``:
  the Fisher information, the expectation over labels drawn from the model's own softmax, here
  computed exactly over all classes) or by Hutchinson's estimator E[z * Hz] of the true
  Hessian with Rademacher probes z and Hessian-vector products. For a ReLU network the two have
  the same expectation: the logits are linear in any single weight, so the Hessian diagonal
  has no second-derivative term and equals the Gauss-Newton diagonal.
- OBS uses the full inverse Hessian: removing w_q costs w_q^2 / (2 [H^-1]_qq) and the best
  correction of the other weights is dw = -(w_q / [H^-1]_qq) H^-1[:, q]. Layer-wise, the loss is
  the squared error of the layer's outputs, whose Hessian 2 X^T X / n (X: the layer's sampled
  inputs, unfolded for a convolution) is the same for every output row; each row is pruned on
  its own, one weight (or a few) at a time, updating its H^-1 after each removal.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils import prune

from ..hooks import layer_io, probe
from ..method import Choice, Int, Method, Real, clone_model, knob
from .curvature import (dampened_inverse, ggn_diagonal, hutchinson_diagonal, layer_hessian,
                        obd_saliency, obs_prune, obs_saliency)
from .magnitude import magnitude_mask, prunable_layers

__all__ = ["OBD", "OBS", "dampened_inverse", "ggn_diagonal", "hutchinson_diagonal",
           "layer_hessian", "obd_saliency", "obs_prune", "obs_saliency"]


def _apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    for name, module in prunable_layers(model):
        prune.custom_from_mask(module, "weight", masks[name])


def _split(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sizes = [t.numel() for t in like.values()]
    return {n: part.view_as(like[n]) for n, part in zip(like, torch.split(flat, sizes))}


# ------------------------------------------------------------------ OBD: diagonal Hessian

@dataclass
class OBD(Method):
    """Prune the weights of smallest saliency 1/2 h_ii w^2 (LeCun et al. 1990)."""
    id = "prune.obd"
    reference = "LeCun, Denker, Solla 1990, Optimal Brain Damage"
    sliders = {"sparsity": (0.0, 0.99, 0.01), "samples": (1, 256, 1)}
    smoke = {"images": 8, "samples": 2}
    effects = ("fewer_nonzeros", "fewer_bytes")

    sparsity: float = knob(0.8, Real(0.0, 1.0))    # prune.magnitude's: compared at equal sparsity
    # "fisher" (exact Gauss-Newton diagonal) | "hutchinson"
    estimator: str = knob("fisher", Choice(("fisher", "hutchinson")))
    samples: int = knob(64, Int(1, 1024))   # Rademacher probes per batch (hutchinson)
    images: int = knob(1024, Int(1, 1_000_000))  # training images the Hessian is estimated on
    # "layer" | "global" (saliencies are losses: comparable across layers)
    scope: str = knob("layer", Choice(("layer", "global")))
    seed: int = knob(0, Int(0, 2 ** 63 - 1))

    def tags(self):
        return replace(super().tags(), needs_data=True)   # the Hessian is estimated on data

    def settings(self) -> dict:
        shown = self.params()
        if self.estimator == "fisher":
            del shown["samples"]
        return shown

    def hessian_diagonal(self, model: nn.Module, data) -> dict[str, torch.Tensor]:
        x, y = data.subset(min(self.images, len(data)), seed=self.seed).tensors()
        if self.estimator == "fisher":
            return ggn_diagonal(model, x)
        g = torch.Generator().manual_seed(self.seed)
        return hutchinson_diagonal(model, x, y, self.samples, g)

    def saliencies(self, model: nn.Module, data) -> dict[str, torch.Tensor]:
        h = self.hessian_diagonal(model, data)
        # The true diagonal is >= 0 for these networks (see the module notes); a negative
        # Hutchinson estimate is sampling noise, read as "no curvature measured".
        return {n: obd_saliency(m.weight.detach(), h[n].clamp(min=0))
                for n, m in prunable_layers(model)}

    def compress(self, model, data=None):
        s = self.saliencies(model, data)
        if self.scope == "layer":
            masks = {n: magnitude_mask(v, self.sparsity) for n, v in s.items()}
        else:
            flat = magnitude_mask(torch.cat([v.flatten() for v in s.values()]), self.sparsity)
            masks = _split(flat, s)
        _apply_masks(model, masks)
        return model


# ------------------------------------------------------------------ OBS: layer-wise inverse

@dataclass
class OBS(Method):
    """Layer-wise Optimal Brain Surgeon: prune by w^2 / [H^-1]_qq and correct the survivors."""
    id = "prune.obs"
    reference = ("Hassibi, Stork 1993, Second order derivatives for network pruning: Optimal "
                 "Brain Surgeon; layer-wise: Dong, Chen, Pan 2017 (L-OBS), Frantar, Alistarh "
                 "2022 (OBC)")
    sliders = {"sparsity": (0.0, 0.99, 0.01), "step": (0.01, 0.25, 0.01)}
    smoke = {"images": 32, "sparsity": 0.3, "step": 1.0}
    effects = ("fewer_nonzeros", "fewer_bytes")

    sparsity: float = knob(0.8, Real(0.0, 1.0))    # prune.magnitude's: compared at equal sparsity
    # share of a row's remaining weights removed per step, at least one weight. At least 1 %:
    # one at a time (classic OBS) takes minutes on a 784-input layer, and from 1 % a row
    # reaches 99 % sparsity in a few hundred steps.
    step: float = knob(0.05, Real(0.01, 1.0))
    images: int = knob(1024, Int(1, 1_000_000))  # training images whose layer inputs give H
    damp: float = knob(0.01, Real(0.0, 1e6))     # lambda = damp x mean diag(H)
    seed: int = knob(0, Int(0, 2 ** 63 - 1))

    def tags(self):
        return replace(super().tags(), needs_data=True)   # H comes from the layers' inputs

    def prune_layer(self, module: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
        """(corrected weight, mask); the corrected bias is written into the module."""
        weight = module.weight.detach()
        rows = weight.flatten(1)
        bias = module.bias is not None
        if bias:
            rows = torch.cat([rows, module.bias.detach()[:, None]], 1)
        try:
            h_inv = dampened_inverse(layer_hessian(module, inputs), self.damp)
        except ValueError as err:
            raise ValueError(f"OBS.damp={self.damp!r}: {err}; allowed is a damp that makes "
                             f"H + damp x mean diag(H) invertible, e.g. 0.01") from None
        n_prune = round(self.sparsity * weight[0].numel())   # the same number in every row
        new, mask = obs_prune(rows, h_inv, n_prune, self.step, protected=int(bias))
        if bias:
            module.bias.data.copy_(new[:, -1])
            new, mask = new[:, :-1], mask[:, :-1]
        return new.view_as(weight), mask.view_as(weight)

    def compress(self, model, data=None):
        reference = clone_model(model)
        layers = dict(prunable_layers(model))
        # The inputs of the unpruned network, as L-OBS: each layer is pruned on its own.
        for names in _batches_of_layers(reference, list(layers), self.images, data.shape):
            records = layer_io(reference, data, names, self.images, seed=self.seed)
            for name in names:
                module = layers[name]
                weight, mask = self.prune_layer(module, records.pop(name)["input"])
                target = module.weight_orig if hasattr(module, "weight_orig") else module.weight
                target.data.copy_(weight)
                prune.custom_from_mask(module, "weight", mask)
        return model


def _batches_of_layers(model: nn.Module, names: list[str], images: int,
                       input_shape: tuple[int, ...],
                       budget_bytes: int = 256 << 20) -> list[list[str]]:
    """Consecutive layers whose sampled inputs and outputs fit in ``budget_bytes`` together,
    so that one forward pass of the images serves several layers (a CIFAR conv's inputs for
    1024 images take over a hundred MB). Sizes from one pass of a zero image."""
    sizes = {}

    def size(module, inputs, output, name):
        sizes[name] = 4 * images * (inputs[0].numel() + output.numel())

    probe(model, input_shape, {name: size for name in names})
    batches, used = [[]], 0
    for name in names:
        if batches[-1] and used + sizes[name] > budget_bytes:
            batches.append([])
            used = 0
        batches[-1].append(name)
        used += sizes[name]
    return batches


# The methods this module registers in workbench.METHODS.
METHODS = (OBD, OBS)
