"""Fine-grained pruning with retraining: iterative prune + retrain (Han et al. 2015) and
sparsity by L1 regularization.

``Iterative`` alternates two steps for ``rounds`` rounds: prune each layer by magnitude a
further step toward its target sparsity, then retrain the survivors with the masks frozen
(``torch.nn.utils.prune`` keeps ``weight = weight_orig * weight_mask``, so pruned weights stay
zero through ``train.fit``). Han et al. retrain with L2 weight decay (better than L1 once the
network is retrained), a lower learning rate, and a dropout rate lowered with the layer's
connections, ``C_r = C_o * sqrt(N_r / N_o)``.

``L1Reg`` trains with ``lambda * sum |w|`` added to the loss, which drives unneeded weights
toward zero, then removes the small ones by magnitude and optionally fine-tunes with the masks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils import prune

from ..method import (Choice, Flag, Int, Mapping, Name, Optional, Real, TrainingMethod,
                      check_layer_names, derived_seed, knob)
from ..train import Hook
from .magnitude import Magnitude, magnitude_mask, prunable_layers


# ------------------------------------------------------------------ functions on tensors

def density_schedule(sparsity: float, rounds: int) -> list[float]:
    """Sparsity to reach after each round: every round removes the same share of survivors.

    The kept fraction after round k is ``(1 - sparsity) ** (k / rounds)``, so early rounds,
    with many redundant weights, remove more of them than late ones.
    """
    return [1 - (1 - sparsity) ** (k / rounds) for k in range(1, rounds + 1)]


def retrain_dropout(p_original: float, kept_fraction: float) -> float:
    """Han et al. eq. 2: ``C_r = C_o * sqrt(N_r / N_o)``; a sparser layer needs less dropout."""
    return p_original * math.sqrt(kept_fraction)


def l1_penalty(weights: list[torch.Tensor], strength: float) -> torch.Tensor:
    """``strength * sum |w|``; its (sub)gradient is ``strength * sign(w)``."""
    return strength * sum(w.abs().sum() for w in weights)


def set_mask(module: nn.Module, mask: torch.Tensor) -> None:
    """Attach ``mask`` (torch.nn.utils.prune) or narrow the existing one: pruned stays pruned."""
    if hasattr(module, "weight_mask"):
        module.weight_mask.mul_(mask)
    else:
        prune.custom_from_mask(module, "weight", mask)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (``weight_orig * weight_mask`` when pruned)."""
    if hasattr(module, "weight_mask"):
        return (module.weight_orig * module.weight_mask).detach()
    return module.weight.detach()


def dropout_owners(model: nn.Module) -> list[tuple[nn.Dropout, str]]:
    """Each Dropout with the prunable layer in front of it, whose connections it regularizes."""
    owners, last = [], None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            last = name
        elif isinstance(module, nn.Dropout) and last is not None:
            owners.append((module, last))
    return owners


# ------------------------------------------------------------------ iterative pruning

@dataclass
class Iterative(TrainingMethod):
    """Prune by magnitude, retrain with frozen masks, repeat (Han et al. 2015).

    Targets per layer: ``sparsity`` for the hidden layers, ``output_sparsity`` for the last
    (classifier) layer, which Han et al. prune less, and ``layer_sparsity`` {name: sparsity}
    overriding both. With ``by="quality"`` a layer's target is instead the share of its weights
    below ``quality`` x its standard deviation (Han et al.'s threshold rule), taken on the input.
    ``epochs`` is the retraining after each pruning step. The defaults are the recipe that
    reaches 12x on LeNet-300-100 (see bench pruning).
    """
    id = "prune.iterative"
    reference = "Han, Pool, Tran, Dally 2015, Learning both Weights and Connections"
    sliders = {"sparsity": (0.0, 0.99, 0.01), "output_sparsity": (0.0, 0.99, 0.01),
               "quality": (0.0, 3.0, 0.05), "rounds": (1, 10, 1), "epochs": (1, 10, 1),
               "lr": (0.001, 0.1, 0.001)}
    smoke = {"rounds": 1, "epochs": 1}
    effects = ("fewer_nonzeros", "fewer_bytes")

    sparsity: float = knob(0.92, Real(0.0, 1.0))
    output_sparsity: float = knob(0.74, Real(0.0, 1.0))
    layer_sparsity: dict = knob({}, Mapping(Real(0.0, 1.0)))
    quality: float = knob(1.5, Real(0.0))
    by: str = knob("sparsity", Choice(("sparsity", "quality")))
    rounds: int = knob(3, Int(1, 50))     # each round retrains for `epochs`: 50 x 1000 at most
    epochs: int = 5
    lr: float = 0.1
    weight_decay: float = 1e-4      # L2, as Han et al. retrain
    augment: bool = knob(False, Flag())   # retrain on shifted (CIFAR: also flipped) images
    retrain_layer: str | None = knob(None, Optional(Name()))  # train only this layer

    def check_model(self, model):
        check_layer_names(self, "layer_sparsity", model)
        if self.retrain_layer is not None:
            check_layer_names(self, "retrain_layer", model)

    def settings(self) -> dict:
        shown = dict(super().settings())
        shown.pop("quality" if self.by == "sparsity" else "sparsity")
        if self.by == "quality":
            shown.pop("output_sparsity")
        return shown

    def targets(self, model: nn.Module) -> dict[str, float]:
        """Layer name -> final sparsity, for the layers of ``model``."""
        layers = prunable_layers(model)
        check_layer_names(self, "layer_sparsity", model)
        targets = {}
        for i, (name, module) in enumerate(layers):
            if self.by == "quality":
                w = effective_weight(module)
                targets[name] = (w.abs() < self.quality * w.std()).float().mean().item()
            else:
                targets[name] = self.output_sparsity if i == len(layers) - 1 else self.sparsity
        return {**targets, **self.layer_sparsity}

    def prune_step(self, model: nn.Module, sparsities: dict[str, float]) -> None:
        """Magnitude-prune each layer to its sparsity (of all its weights) for this round."""
        for name, module in prunable_layers(model):
            set_mask(module, magnitude_mask(effective_weight(module), sparsities[name]))

    def compress(self, pruned: nn.Module, data=None) -> nn.Module:
        layers = dict(prunable_layers(pruned))
        schedules = {n: density_schedule(s, self.rounds) for n, s in self.targets(pruned).items()}
        dropouts = [(d, owner, d.p, nonzero_share(layers[owner])) for d, owner
                    in dropout_owners(pruned)]
        frozen = self._freeze_others(pruned)
        for r in range(self.rounds):
            self.prune_step(pruned, {n: s[r] for n, s in schedules.items()})
            for d, owner, p0, kept0 in dropouts:   # C_r = C_o sqrt(N_r / N_o), vs the input
                d.p = retrain_dropout(p0, nonzero_share(layers[owner]) / kept0)
            # Cosine-annealed from ``lr``: Han et al. retrain at 1/10 to 1/100 of the
            # original rate, but with a few epochs per round, starting at the zoo's own peak
            # rate and annealing recovered more on LeNet-300-100.
            self.fit(pruned, data, schedule="cosine", seed=derived_seed(self.seed, r),
                     augment=self.augment)
        for p in frozen:
            p.requires_grad_(True)
        return pruned

    def _freeze_others(self, model: nn.Module) -> list[nn.Parameter]:
        """With ``retrain_layer``: every parameter outside that layer stops training."""
        if self.retrain_layer is None:
            return []
        keep = {id(p) for p in model.get_submodule(self.retrain_layer).parameters()}
        frozen = [p for p in model.parameters() if id(p) not in keep and p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        return frozen


def nonzero_share(module: nn.Module) -> float:
    """Share of a layer's connections still present (nonzero effective weights)."""
    w = effective_weight(module)
    return max(int(w.count_nonzero()), 1) / w.numel()


# ------------------------------------------------------------------ L1 regularization

class L1Penalty(Hook):
    """Adds ``strength * sum |w|`` over the Conv2d / Linear weights to the training loss."""

    def __init__(self, strength: float):
        self.strength = strength

    def loss(self, model, x, y, logits, loss):
        return loss + l1_penalty([m.weight for _, m in prunable_layers(model)], self.strength)


@dataclass
class L1Reg(TrainingMethod):
    """Train with an L1 penalty, then zero the small weights and fine-tune (seed 000).

    ``by="sparsity"`` removes that share of the weights (of each layer with ``scope="layer"``,
    of all together with ``scope="global"``); ``by="threshold"`` removes the weights with |w|
    below ``threshold``. The penalty has left the unneeded ones near zero in every layer, so
    one global threshold lets each layer keep what it needs. ``epochs`` trains with the
    penalty (no L2, which would shrink every weight rather than select); ``finetune_epochs``
    retrains with the masks frozen and L2 ``weight_decay``.
    """
    id = "prune.l1_reg"
    reference = ("L1 (lasso) weight penalty then thresholding; Han et al. 2015 compare it with "
                 "L2 for pruning (Learning both Weights and Connections)")
    sliders = {"strength": (0.0, 1e-3, 1e-5), "sparsity": (0.0, 0.99, 0.01),
               "threshold": (0.0, 0.05, 0.001), "epochs": (1, 10, 1)}
    smoke = {"epochs": 1, "finetune_epochs": 1}
    effects = ("fewer_nonzeros", "fewer_bytes")

    strength: float = knob(1e-4, Real(0.0, 1.0))   # lambda (per batch, on the mean loss)
    epochs: int = 4
    lr: float = 0.05
    weight_decay: float = 1e-4
    sparsity: float = knob(0.92, Real(0.0, 1.0))
    threshold: float = knob(0.005, Real(0.0))
    by: str = knob("sparsity", Choice(("sparsity", "threshold")))
    scope: str = knob("global", Choice(("layer", "global")))  # global: one threshold for all
    finetune_epochs: int = knob(3, Int(0, 1000))   # retraining with masks frozen (0: none)

    def tags(self):
        return replace(super().tags(), needs_data=self.epochs + self.finetune_epochs > 0)

    def settings(self) -> dict:
        shown = dict(super().settings())
        shown.pop("threshold" if self.by == "sparsity" else "sparsity")
        return shown

    def compress(self, out: nn.Module, data=None) -> nn.Module:
        if self.epochs:       # no L2 while the L1 penalty works: it would not select
            self.fit(out, data, hooks=[L1Penalty(self.strength)], weight_decay=0.0,
                     schedule="cosine")
        masks = Magnitude(sparsity=self.sparsity, threshold=self.threshold, by=self.by,
                          scope=self.scope).masks(out)
        for name, module in prunable_layers(out):
            set_mask(module, masks[name])
        if self.finetune_epochs:
            self.fit(out, data, epochs=self.finetune_epochs, schedule="cosine",
                     seed=self.seed + 1)
        return out


# The methods this module registers in workbench.METHODS.
METHODS = (Iterative, L1Reg)
