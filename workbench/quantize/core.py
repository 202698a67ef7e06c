"""What every quantizer of section B shares: the straight-through estimator, the layers that
are quantized, and a parametrization that keeps a layer's quantized weight in its compact form.

A quantized layer is an ordinary ``nn.Linear`` / ``nn.Conv2d`` whose ``weight`` is computed by
a ``torch.nn.utils.parametrize`` parametrization. During training the parametrization holds
the float "shadow" weight and quantizes it on every forward pass (gradients pass straight
through the rounding); once trained, ``codec.encode`` folds it into the plain quantized tensor
and stores that in the smallest format (packed indices + codebook, int8 + scale, powers of two).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..prune.magnitude import prunable_layers

quantizable_layers = prunable_layers      # the Conv2d and Linear layers: weights, not biases


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward, identity backward: the straight-through estimator (Bengio et al.
    2013). Rounding has zero gradient almost everywhere; the STE pretends it is the identity so
    the float shadow weight underneath keeps learning."""
    return x + (x.round() - x).detach()


def quantize_weights(model: nn.Module, make: callable, layers=None) -> nn.Module:
    """Register ``make(name, module)`` (an ``nn.Module`` parametrization, or None to skip) on
    the weight of every quantizable layer of ``model`` (or of ``layers``), in place."""
    for name, module in quantizable_layers(model):
        if layers is not None and name not in layers:
            continue
        parametrization = make(name, module)
        if parametrization is not None:
            parametrize.register_parametrization(module, "weight", parametrization)
    return model


def fold(model: nn.Module) -> nn.Module:
    """Replace every weight parametrization by the plain tensor it computes (in place)."""
    for _, module in quantizable_layers(model):
        if parametrize.is_parametrized(module, "weight"):
            # A deep copy shares the generated ParametrizedX class with its original, and
            # remove_parametrizations deletes the property from that class: give this module
            # its own class first, so folding a copy leaves the original intact.
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


class SharedWeights(nn.Module):
    """Weight sharing as a parametrization: the layer's weight is ``codebook[indices]``.

    ``right_inverse`` turns the layer's float weight into the codebook, so the trainable
    tensor (``parametrizations.weight.original``) *is* the codebook of ``k`` values. Autograd
    then gives each centroid the sum of the gradients of the weights that share it, which is
    exactly Deep Compression's centroid update (Han et al. 2016, eq. 3).
    """

    def __init__(self, indices: torch.Tensor, codebook: torch.Tensor):
        super().__init__()
        self.register_buffer("indices", indices.to(torch.int64))
        self._initial_codebook = codebook.detach().clone()

    def forward(self, codebook: torch.Tensor) -> torch.Tensor:
        return codebook[self.indices]

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        # Called once, by register_parametrization: the codebook becomes the stored tensor.
        return self._initial_codebook.to(weight.dtype)
