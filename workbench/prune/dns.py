"""Dynamic Network Surgery (Guo, Yao, Chen 2016): masks updated during training, with splicing.

Each layer keeps its dense weights ``W`` and a mask ``T``; the network computes with
``W * T``. During training the mask is revised from the magnitudes, with hysteresis:

- ``|w| <= a``: pruned (``T = 0``);
- ``|w| >  b``: spliced back (``T = 1``);
- in between: ``T`` keeps its previous value, so weights near the threshold do not flicker.

The gradient of the loss with respect to ``W * T`` is applied to *all* of ``W`` (a
straight-through update, as the authors' Caffe layers do), so a pruned weight keeps learning
and comes back when it grows past ``b``: a wrong cut can be undone.

Thresholds (chosen as in the authors' reference implementation, which the paper leaves
open): from the layer's nonzero input weights, ``mu`` = mean |w| and ``sigma`` = standard
deviation of |w|; ``t = max(mu + c_rate * sigma, 0)``, ``a = (1 - margin) t``,
``b = (1 + margin) t`` with margin 0.1, computed once before training. The masks are revised
at step ``s`` with probability ``(1 + gamma s) ** -power`` (the paper's sigma(iter); the
reference uses gamma = 1e-4, power = 1), and only during the first ``surgery_share`` of the
steps (the reference's iter_stop); the rest of training fine-tunes with the masks fixed.
Unlike the reference, biases are never pruned (as in every method of this workbench; the
compression ratios count weights), and they stay out of the threshold statistics.

The result carries ordinary ``torch.nn.utils.prune`` masks (``weight_orig`` keeps the dense W).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from ..method import (Flag, Int, Mapping, Real, TrainingMethod, check_layer_names, clone_model,
                      knob)
from ..train import Hook
from .magnitude import prunable_layers


# ------------------------------------------------------------------ functions on tensors

def surgery_thresholds(weights: torch.Tensor, c_rate: float,
                       margin: float = 0.1) -> tuple[float, float]:
    """(a, b): prune at |w| <= a, splice at |w| > b, around ``mean|w| + c_rate std|w|``."""
    magnitudes = weights[weights != 0].abs().double()
    if magnitudes.numel() == 0:
        return 0.0, 0.0
    centre = magnitudes.mean() + c_rate * magnitudes.std(unbiased=False)
    t = max(centre.item(), 0.0)
    return (1 - margin) * t, (1 + margin) * t


def update_mask(weights: torch.Tensor, mask: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """The revised mask: 0 where |w| <= a, 1 where |w| > b, the old mask in between."""
    magnitude = weights.abs()
    return torch.where(magnitude <= a, torch.zeros_like(mask),
                       torch.where(magnitude > b, torch.ones_like(mask), mask))


def surgery_probability(step: int, gamma: float, power: float) -> float:
    """Chance that the masks are revised at ``step``: ``(1 + gamma step) ** -power``."""
    return (1 + gamma * step) ** -power


class _MaskThrough(torch.autograd.Function):
    """Forward ``W * T``; backward hands the gradient for ``W * T`` to all of ``W``."""

    @staticmethod
    def forward(ctx, weights, mask):
        return weights * mask

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class SurgeryMask(nn.Module):
    """Parametrization ``weight = W * T`` with the straight-through update; T is a buffer."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weights):
        return _MaskThrough.apply(weights, self.mask)


# ------------------------------------------------------------------ the training hook

class SurgeryHook(Hook):
    """Revises each layer's mask after an optimizer step, with a decaying probability.

    ``layers`` maps a name to (module with a SurgeryMask, a, b). Counts the mask changes
    (``pruned``, ``spliced``) and keeps one row per epoch in ``history``.
    """

    def __init__(self, layers: dict, gamma: float, power: float, stop_step: int, seed: int):
        self.layers, self.gamma, self.power, self.stop_step = layers, gamma, power, stop_step
        self.generator = torch.Generator().manual_seed(seed)
        self.step, self.pruned, self.spliced, self.history = 0, 0, 0, []

    def revise(self, module: nn.Module, a: float, b: float) -> None:
        mask = module.parametrizations.weight[0].mask
        new = update_mask(module.parametrizations.weight.original.detach(), mask, a, b)
        self.pruned += int(((mask == 1) & (new == 0)).sum())
        self.spliced += int(((mask == 0) & (new == 1)).sum())
        mask.copy_(new)

    def revise_all(self) -> None:
        for module, a, b in self.layers.values():
            self.revise(module, a, b)

    def after_step(self, model):
        self.step += 1
        if self.step >= self.stop_step:
            return
        chance = surgery_probability(self.step, self.gamma, self.power)
        for module, a, b in self.layers.values():   # one draw per layer, as the reference
            if torch.rand((), generator=self.generator).item() < chance:
                self.revise(module, a, b)

    def after_epoch(self, model, epoch):
        kept = {n: m.parametrizations.weight[0].mask.mean().item()
                for n, (m, _, _) in self.layers.items()}
        self.history.append({"epoch": epoch + 1, "step": self.step, "pruned": self.pruned,
                             "spliced": self.spliced, "kept": kept})


# ------------------------------------------------------------------ the method

@dataclass
class DNS(TrainingMethod):
    """Dynamic network surgery: prune and splice during training (Guo et al. 2016).

    ``c_rate`` sets the threshold of the hidden layers, ``output_c_rate`` that of the last
    (classifier) layer, ``layer_c_rate`` {name: c} overrides both: the larger, the sparser.
    The defaults prune LeNet-300-100 (43x at 1.95 % error; the paper: 56x at 1.99 %).
    """
    id = "prune.dns"
    reference = "Guo, Yao, Chen 2016, Dynamic Network Surgery for Efficient DNNs"
    sliders = {"c_rate": (-1.0, 5.0, 0.1), "output_c_rate": (-1.0, 5.0, 0.1),
               "margin": (0.0, 0.5, 0.01),
               "epochs": (1, 20, 1), "lr": (0.001, 0.1, 0.001)}
    smoke = {"epochs": 1}
    effects = ("fewer_nonzeros", "fewer_bytes")

    c_rate: float = knob(4.0, Real(-10.0, 10.0))
    output_c_rate: float = knob(3.0, Real(-10.0, 10.0))   # the last layer, pruned less
    layer_c_rate: dict = knob({}, Mapping(Real(-10.0, 10.0)))
    margin: float = knob(0.1, Real(0.0, 0.99))    # a = (1 - margin) t, b = (1 + margin) t
    gamma: float = knob(1e-4, Real(0.0, 1.0))     # revision chance (1 + gamma step) ** -power
    power: float = knob(1.0, Real(0.0, 10.0))
    # Training: the surgery happens during it, so at least one epoch.
    epochs: int = knob(8, Int(1, 1000))
    # masks revised during this share of the steps, then fixed
    surgery_share: float = knob(0.75, Real(0.0, 1.0))
    lr: float = 0.02
    weight_decay: float = 5e-4      # also pulls the masked weights back toward zero
    augment: bool = knob(False, Flag())   # train on shifted (CIFAR: also flipped) images

    def check_model(self, model):
        check_layer_names(self, "layer_c_rate", model)

    def c_rates(self, model: nn.Module) -> dict[str, float]:
        names = [n for n, _ in prunable_layers(model)]
        self.check_model(model)
        rates = {n: self.c_rate for n in names[:-1]} | {names[-1]: self.output_c_rate}
        return rates | self.layer_c_rate

    def run(self, model: nn.Module, data) -> tuple[nn.Module, SurgeryHook]:
        """What ``apply`` returns, and the hook with its statistics (mask changes per epoch).
        ``model`` is untouched."""
        self.check_model(model)
        if data is None:
            raise ValueError(f"{self.id} needs data: pass the training set as run(model, data)")
        out = clone_model(model)
        hook = self.surgery(out, data)
        return out.eval(), hook

    def compress(self, model, data=None):
        self.surgery(model, data)
        return model

    def surgery(self, out: nn.Module, data) -> SurgeryHook:
        """Train ``out`` in place with the surgery; its masks end as torch.nn.utils.prune's."""
        rates = self.c_rates(out)
        layers = {}
        for name, module in prunable_layers(out):
            if hasattr(module, "weight_mask"):    # already pruned: start from its zeros
                prune.remove(module, "weight")
            w = module.weight.detach()
            a, b = surgery_thresholds(w, rates[name], self.margin)
            parametrize.register_parametrization(module, "weight",
                                                 SurgeryMask(torch.ones_like(w)))
            layers[name] = (module, a, b)
        stop = round(self.surgery_share * self.epochs * data.batches(self.batch_size))
        hook = SurgeryHook(layers, self.gamma, self.power, stop, self.seed)
        if self.surgery_share:
            hook.revise_all()          # step 0: chance 1, the first cut from the input
        self.fit(out, data, hooks=[hook], schedule="cosine", augment=self.augment)
        for module, _, _ in layers.values():       # hand over to torch.nn.utils.prune
            mask = module.parametrizations.weight[0].mask.clone()
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            prune.custom_from_mask(module, "weight", mask)
        return hook


# The methods this module registers in workbench.METHODS.
METHODS = (DNS,)
