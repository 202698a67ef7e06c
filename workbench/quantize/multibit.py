"""One network, several bit-widths: weights switchable at run time, the lower widths
distilled from the highest (the "multiple bit modes trained jointly with distillation" of
seed 002; in the spirit of Any-Precision DNNs, Yu et al. 2021, and switchable-precision
networks, Guerra et al. 2020).

Every Conv2d / Linear layer keeps one float shadow weight and a ``SwitchableWeight``
parametrization that quantizes it with DoReFa's tanh scheme (``lowbit.dorefa_weights``, times
a constant per-layer scale) at the model's current width. ``set_bits(model, k)`` switches
every layer at once and records it in ``model.run_bits``; the weights then take at most 2^k
distinct values per layer.

Training (``train.fit`` + the ``Distill`` hook): each batch runs the network at the highest
width with the labels (cross entropy), then at each lower width with the KL divergence between
its softened outputs and the highest width's (detached, temperature T, times T^2, Hinton et al.
2015). One optimizer step updates the shared shadow weights with the sum.

``apply`` returns the network NOT folded: its whole point is the run-time switch. The codec
stores it at its current ``run_bits`` (one file per width); activations stay float and
first / last layers are quantized like the others (our choices).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..method import Method, clone_model
from ..train import Hook, Recipe, evaluate, fit
from .core import quantizable_layers, quantize_weights
from .lowbit import DoReFaWeight, dorefa_weights


class SwitchableWeight(DoReFaWeight):
    """Parametrization: DoReFa k-bit weights times the layer's constant scale (its initial
    max |w|, see lowbit.DoReFaWeight); ``bits`` is changed in place by set_bits. At 1 bit the
    values are +-scale (the same two levels as 2q - 1 at k = 1), so the scale stays constant
    across widths."""

    def __init__(self, bits: int, weight: torch.Tensor):
        super().__init__(bits)
        self.scale.fill_(weight.detach().abs().max())

    def forward(self, w):
        if self.bits == 1:
            return torch.where(w >= 0, 1.0, -1.0).to(w.dtype).detach() * self.scale \
                + (w - w.detach())
        return dorefa_weights(w, self.bits) * self.scale.to(w.dtype)


def switches(model: nn.Module) -> list[SwitchableWeight]:
    """The SwitchableWeight parametrizations of ``model``."""
    return [p for _, m in quantizable_layers(model) if parametrize.is_parametrized(m, "weight")
            for p in m.parametrizations.weight if isinstance(p, SwitchableWeight)]


def set_bits(model: nn.Module, bits: int) -> nn.Module:
    """Run every layer of a switchable network at ``bits`` (in place); returns the model."""
    for p in switches(model):
        p.bits = bits
    model.run_bits = bits
    return model


@torch.no_grad()
def distinct_values(model: nn.Module) -> dict[str, int]:
    """Layer name -> number of distinct values its (current) weight takes."""
    return {name: int(m.weight.unique().numel()) for name, m in quantizable_layers(model)}


def accuracy_per_width(model: nn.Module, data, widths) -> dict[int, float]:
    """Test accuracy at each width; the model is switched back to its run_bits after."""
    back = model.run_bits
    scores = {b: evaluate(set_bits(model, b), data) for b in widths}
    set_bits(model, back)
    return scores


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float
                      ) -> torch.Tensor:
    """KL(teacher || student) of the softened outputs, times T^2 (teacher detached)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher.detach() / t, 1),
                    reduction="batchmean") * t * t


class Distill(Hook):
    """Adds, for each lower width, the distillation loss of its outputs on the same batch."""

    def __init__(self, widths: tuple[int, ...], temperature: float):
        self.top, self.lower = max(widths), sorted(set(widths) - {max(widths)}, reverse=True)
        self.temperature = temperature

    def loss(self, model, x, y, logits, loss):
        for bits in self.lower:
            loss = loss + distillation_loss(set_bits(model, bits)(x), logits, self.temperature)
        set_bits(model, self.top)           # fit's next forward runs the teacher width
        return loss


@dataclass
class MultiBit(Method):
    """Weights switchable between ``widths`` bits, trained jointly (highest with labels, lower
    ones distilled); returned at ``run_bits`` with ``model.run_bits`` and ``set_bits``."""
    id = "quant.multi_bit"
    reference = ("seed 002 (Ntakouris 2020): networks with several bit modes trained jointly "
                 "by distillation; cf. Yu et al. 2021, Any-Precision Deep Neural Networks")
    needs_data = True
    progress: ClassVar[bool] = True
    archs = ("lenet300", "lenet5")      # no per-width BatchNorm statistics (see reply/notes)
    sliders = {"run_bits": (1, 8, 1), "epochs": (0, 10, 1), "temperature": (0.5, 10.0, 0.5)}
    smoke = {"epochs": 1}

    widths: tuple = (8, 4, 2)
    run_bits: int = 4               # the width the returned model runs at (any 1..8 works)
    temperature: float = 1.0
    epochs: int = 3
    lr: float = 0.001               # 0.01 lets one shadow weight outgrow the others (DoReFa's
                                    # max normalization then empties most levels)
    batch_size: int = 128
    weight_decay: float = 1e-4
    seed: int = 0

    def validate(self):
        ok = isinstance(self.widths, tuple) and self.widths and all(
            isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 8 for b in self.widths)
        if not ok or len(set(self.widths)) != len(self.widths):
            raise ValueError(f"MultiBit.widths={self.widths!r}: allowed is a tuple of distinct "
                             "integers from 1 to 8, e.g. (8, 4, 2)")
        for name, low, high in (("run_bits", 1, 8), ("epochs", 0, 1000),
                                ("batch_size", 1, 1 << 16), ("seed", 0, 2**31 - 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"MultiBit.{name}={value!r}: allowed is an integer from "
                                 f"{low} to {high}")
        self._check_range("temperature", 0.05, 100.0)
        self._check_range("lr", 1e-8, 10.0)
        self._check_range("weight_decay", 0.0, 1.0)

    def bits_per_weight(self) -> float:
        return float(self.run_bits)

    def apply(self, model, data=None):
        if data is None:
            raise ValueError("MultiBit trains: pass the training set as data")
        out = clone_model(model)
        quantize_weights(out, lambda name, m: SwitchableWeight(max(self.widths), m.weight))
        set_bits(out, max(self.widths))
        recipe = Recipe(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                        weight_decay=self.weight_decay, seed=self.seed)
        fit(out, data, recipe, hooks=[Distill(self.widths, self.temperature)],
            progress=self.progress)
        return set_bits(out.eval(), self.run_bits)


METHODS = (MultiBit,)
