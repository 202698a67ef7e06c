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
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from ..method import Method, clone_model
from ..train import Hook, Recipe, fit
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
class Iterative(Method):
    """Prune by magnitude, retrain with frozen masks, repeat (Han et al. 2015).

    Targets per layer: ``sparsity`` for the hidden layers, ``output_sparsity`` for the last
    (classifier) layer, which Han et al. prune less, and ``layer_sparsity`` {name: sparsity}
    overriding both. With ``by="quality"`` a layer's target is instead the share of its weights
    below ``quality`` x its standard deviation (Han et al.'s threshold rule), taken on the input.
    The defaults are the recipe that reaches 12x on LeNet-300-100 (see bench pruning).
    """
    id = "prune.iterative"
    reference = "Han, Pool, Tran, Dally 2015, Learning both Weights and Connections"
    needs_data = True
    progress: ClassVar[bool] = True    # training bars; set False on an instance for quiet runs
    sliders = {"sparsity": (0.0, 0.99, 0.01), "output_sparsity": (0.0, 0.99, 0.01),
               "quality": (0.0, 3.0, 0.05), "rounds": (1, 10, 1), "epochs": (1, 10, 1),
               "lr": (0.001, 0.1, 0.001)}
    smoke = {"rounds": 1, "epochs": 1}

    sparsity: float = 0.92
    output_sparsity: float = 0.74
    layer_sparsity: dict = field(default_factory=dict)
    quality: float = 1.5
    by: str = "sparsity"            # "sparsity" | "quality"
    rounds: int = 3
    epochs: int = 5                 # retraining epochs after each pruning step
    lr: float = 0.1
    weight_decay: float = 1e-4      # L2, as Han et al. retrain
    batch_size: int = 128
    retrain_layer: str | None = None   # train only this layer, the others fixed
    seed: int = 0

    def validate(self):
        self._check_choice("by", ("sparsity", "quality"))
        self._check_range("sparsity", 0.0, 1.0)
        self._check_range("output_sparsity", 0.0, 1.0)
        self._check_range("quality", 0.0, float("inf"))
        for name, value in self.layer_sparsity.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= 1:
                raise ValueError(f"Iterative.layer_sparsity[{name!r}]={value!r}: "
                                 "allowed is a number from 0 to 1")
        self._check_int("rounds", 1, 1000)
        self._check_int("epochs", 0, 1000)
        self._check_int("batch_size", 1, 1 << 16)
        self._check_int("seed", 0, 2**31 - 1)
        self._check_range("lr", 1e-8, 10.0)
        self._check_range("weight_decay", 0.0, 1.0)
        if self.retrain_layer is not None and not isinstance(self.retrain_layer, str):
            raise ValueError(f"Iterative.retrain_layer={self.retrain_layer!r}: allowed is None "
                             "or the name of a Conv2d / Linear layer")

    def settings(self) -> dict:
        shown = dict(self.params())
        shown.pop("quality" if self.by == "sparsity" else "sparsity")
        if self.by == "quality":
            shown.pop("output_sparsity")
        return shown

    def targets(self, model: nn.Module) -> dict[str, float]:
        """Layer name -> final sparsity, for the layers of ``model``."""
        layers = prunable_layers(model)
        unknown = set(self.layer_sparsity) - {n for n, _ in layers}
        if unknown:
            raise ValueError(f"Iterative.layer_sparsity names {sorted(unknown)}, not layers of "
                             f"{type(model).__name__}; allowed: {[n for n, _ in layers]}")
        targets = {}
        for i, (name, module) in enumerate(layers):
            if self.by == "quality":
                w = effective_weight(module)
                targets[name] = (w.abs() < self.quality * w.std()).float().mean().item()
            else:
                targets[name] = self.output_sparsity if i == len(layers) - 1 else self.sparsity
        return {**targets, **self.layer_sparsity}

    def recipe(self, round_index: int) -> Recipe:
        """One round's retraining: cosine-annealed SGD from ``lr``, L2 weight decay.

        Han et al. retrain at 1/10 to 1/100 of the original rate; with a cosine schedule
        and only a few epochs per round, starting at the zoo's own peak rate recovered more
        on LeNet-300-100 (1.50 % vs 1.77 % error at lr 0.02, 12.4x).
        """
        return Recipe(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                      weight_decay=self.weight_decay, schedule="cosine",
                      seed=self.seed * 1000 + round_index)

    def prune_step(self, model: nn.Module, sparsities: dict[str, float]) -> None:
        """Magnitude-prune each layer to its sparsity (of all its weights) for this round."""
        for name, module in prunable_layers(model):
            set_mask(module, magnitude_mask(effective_weight(module), sparsities[name]))

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError("Iterative needs data: the training set to retrain on")
        pruned = clone_model(model)
        layers = dict(prunable_layers(pruned))
        if self.retrain_layer is not None and self.retrain_layer not in layers:
            raise ValueError(f"Iterative.retrain_layer={self.retrain_layer!r}: allowed is None "
                             f"or one of {list(layers)}")
        schedules = {n: density_schedule(s, self.rounds) for n, s in self.targets(pruned).items()}
        dropouts = [(d, owner, d.p, nonzero_share(layers[owner])) for d, owner
                    in dropout_owners(pruned)]
        frozen = self._freeze_others(pruned)
        for r in range(self.rounds):
            self.prune_step(pruned, {n: s[r] for n, s in schedules.items()})
            for d, owner, p0, kept0 in dropouts:   # C_r = C_o sqrt(N_r / N_o), vs the input
                d.p = retrain_dropout(p0, nonzero_share(layers[owner]) / kept0)
            fit(pruned, data, self.recipe(r), progress=self.progress)
        for p in frozen:
            p.requires_grad_(True)
        return pruned.eval()

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
class L1Reg(Method):
    """Train with an L1 penalty, then zero the small weights and fine-tune (seed 000).

    ``by="sparsity"`` removes that share of the weights (of each layer with ``scope="layer"``,
    of all together with ``scope="global"``); ``by="threshold"`` removes the weights with |w|
    below ``threshold``. The penalty has left the unneeded ones near zero in every layer, so
    one global threshold lets each layer keep what it needs.
    """
    id = "prune.l1_reg"
    reference = ("L1 (lasso) weight penalty then thresholding; Han et al. 2015 compare it with "
                 "L2 for pruning (Learning both Weights and Connections)")
    needs_data = True
    progress: ClassVar[bool] = True    # training bars; set False on an instance for quiet runs
    sliders = {"strength": (0.0, 1e-3, 1e-5), "sparsity": (0.0, 0.99, 0.01),
               "threshold": (0.0, 0.05, 0.001), "epochs": (1, 10, 1)}
    smoke = {"epochs": 1, "finetune_epochs": 1}

    strength: float = 1e-4          # lambda of the penalty (per batch, on the mean loss)
    epochs: int = 4
    lr: float = 0.05
    sparsity: float = 0.92
    threshold: float = 0.005
    by: str = "sparsity"            # "sparsity" | "threshold"
    scope: str = "global"           # "layer" | "global": one threshold for all layers
    finetune_epochs: int = 3        # retraining with masks frozen, L2 only (0: none)
    batch_size: int = 128
    seed: int = 0

    def validate(self):
        self._check_choice("by", ("sparsity", "threshold"))
        self._check_choice("scope", ("layer", "global"))
        self._check_range("strength", 0.0, 1.0)
        self._check_range("sparsity", 0.0, 1.0)
        self._check_range("threshold", 0.0, float("inf"))
        self._check_range("lr", 1e-8, 10.0)
        self._check_int("epochs", 0, 1000)
        self._check_int("finetune_epochs", 0, 1000)
        self._check_int("batch_size", 1, 1 << 16)
        self._check_int("seed", 0, 2**31 - 1)

    def settings(self) -> dict:
        shown = dict(self.params())
        shown.pop("threshold" if self.by == "sparsity" else "sparsity")
        return shown

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError("L1Reg needs data: the training set to train on")
        out = clone_model(model)
        # No L2 while the L1 penalty works: it would shrink every weight, not select.
        fit(out, data, Recipe(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                              weight_decay=0.0, schedule="cosine", seed=self.seed),
            hooks=[L1Penalty(self.strength)], progress=self.progress)
        masks = Magnitude(sparsity=self.sparsity, threshold=self.threshold, by=self.by,
                          scope=self.scope).masks(out)
        for name, module in prunable_layers(out):
            set_mask(module, masks[name])
        if self.finetune_epochs:
            fit(out, data, Recipe(epochs=self.finetune_epochs, lr=self.lr,
                                  batch_size=self.batch_size, weight_decay=1e-4,
                                  schedule="cosine", seed=self.seed + 1), progress=self.progress)
        return out.eval()


# The methods this module registers in workbench.METHODS.
METHODS = (Iterative, L1Reg)
