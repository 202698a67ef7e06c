"""One-shot magnitude pruning (Han et al. 2015, "Learning both weights and connections").

Weights whose magnitude is below a threshold are set to zero. The threshold is given one of
three ways: as the fraction of weights to remove (``sparsity``), as an absolute value
(``threshold``), or as ``quality`` times the standard deviation of the layer's weights, the
rule Han et al. state. Scope ``layer`` prunes each layer by its own threshold; ``global`` uses
one threshold for all layers together, so sensitive small layers keep more weights.

The masks are attached with ``torch.nn.utils.prune`` (``weight_orig`` and ``weight_mask`` in
the state dict), so they can be inspected, retrained with, or removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ..method import (Choice, Method, Name, Optional, Real, Seq, check_layer_names,
                      knob)


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Conv2d and Linear layers, whose weights (not biases) are pruned."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def magnitude_mask(weights: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask (1 keep, 0 drop) removing the ``round(sparsity * n)`` smallest |w|.

    Ties are broken as torch.nn.utils.prune.l1_unstructured breaks them (torch.topk), so the
    masks are identical to PyTorch's for the same amount.
    """
    n_drop = round(sparsity * weights.numel())
    mask = torch.ones_like(weights)
    if n_drop:
        drop = torch.topk(weights.abs().flatten(), n_drop, largest=False).indices
        mask.view(-1)[drop] = 0
    return mask


def threshold_mask(weights: torch.Tensor, threshold: float) -> torch.Tensor:
    """Mask keeping the weights with |w| >= threshold."""
    return (weights.abs() >= threshold).to(weights.dtype)


@dataclass
class Magnitude(Method):
    """Zero the smallest weights (Han et al. 2015)."""
    id = "prune.magnitude"
    reference = "Han, Pool, Tran, Dally 2015, Learning both Weights and Connections"
    sliders = {"sparsity": (0.0, 0.99, 0.01), "quality": (0.0, 3.0, 0.05),
               "threshold": (0.0, 0.3, 0.005)}
    effects = ("fewer_nonzeros", "fewer_bytes")

    # 0.8: where one-shot pruning (no retraining) is compared with OBD and OBS (the lowest
    # sparsity of bench pruning_secondorder), and still a point a reader would pick
    sparsity: float = knob(0.8, Real(0.0, 1.0))
    threshold: float = knob(0.05, Real(0.0))
    quality: float = knob(1.0, Real(0.0))
    by: str = knob("sparsity", Choice(("sparsity", "threshold", "quality")))  # which knob rules
    scope: str = knob("layer", Choice(("layer", "global")))
    layers: tuple[str, ...] | None = knob(None, Optional(Seq(Name(), 1)))  # None: every layer

    def check_model(self, model):
        if self.layers is not None:
            check_layer_names(self, "layers", model)

    def settings(self) -> dict:
        chosen = {"layers": list(self.layers)} if self.layers is not None else {}
        return {self.by: getattr(self, self.by), "scope": self.scope, **chosen}

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Layer name -> mask, computed from the (effective) weights of ``model``."""
        layers = prunable_layers(model)
        if self.layers is not None:
            check_layer_names(self, "layers", model)
            layers = [(n, m) for n, m in layers if n in self.layers]
        weights = {name: m.weight.detach() for name, m in layers}
        if self.by == "sparsity" and self.scope == "layer":
            return {n: magnitude_mask(w, self.sparsity) for n, w in weights.items()}
        if self.by == "sparsity":
            # One threshold for all layers: rank all magnitudes together, as
            # prune.global_unstructured does, then split the mask back per layer.
            flat = torch.cat([w.flatten() for w in weights.values()])
            mask = magnitude_mask(flat, self.sparsity)
            sizes = [w.numel() for w in weights.values()]
            return {n: part.view_as(weights[n])
                    for n, part in zip(weights, torch.split(mask, sizes))}
        if self.by == "threshold":
            return {n: threshold_mask(w, self.threshold) for n, w in weights.items()}
        if self.scope == "layer":   # quality x std of each layer (Han et al.)
            return {n: threshold_mask(w, self.quality * w.std().item()) for n, w in weights.items()}
        pooled_std = torch.cat([w.flatten() for w in weights.values()]).std().item()
        return {n: threshold_mask(w, self.quality * pooled_std) for n, w in weights.items()}

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        masks = self.masks(model)
        for name, module in prunable_layers(model):
            if name in masks:
                # An already pruned layer gets its mask combined with the old (PruningContainer).
                prune.custom_from_mask(module, "weight", masks[name])
        return model


def layer_sensitivity(model: nn.Module, data, sparsities=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99),
                      ) -> list[dict]:
    """Accuracy when one layer alone is pruned to each sparsity (Han et al. 2015, Fig. 6).

    The scan behind per-layer sparsity choices: layers whose accuracy holds up can be pruned
    harder. One row per (layer, sparsity).
    """
    from ..train import evaluate
    rows = []
    for name, layer in prunable_layers(model):
        for s in sparsities:
            pruned = Magnitude(sparsity=s, layers=(name,)).apply(model)
            rows.append({"layer": name, "weights": layer.weight.numel(), "sparsity": s,
                         "accuracy": round(evaluate(pruned, data), 4)})
    return rows


METHODS = (Magnitude,)
