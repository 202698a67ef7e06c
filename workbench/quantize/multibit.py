"""One network, several bit-widths: weights switchable at run time, the lower widths
distilled from the highest (the "multiple bit modes trained jointly with distillation" of
seed 002; in the spirit of Any-Precision DNNs, Yu et al. 2021, and switchable-precision
networks, Guerra et al. 2020).

Every Conv2d / Linear layer keeps one float shadow weight and a ``SwitchableWeight``
parametrization that quantizes it with DoReFa's tanh scheme (``lowbit.dorefa_weights``, times
a constant per-layer scale) at the model's current width. ``set_bits(model, k)`` switches
every layer at once; the width is a buffer of each parametrization (``bits``), so it is in the
state dict and survives copies and ``load_state_dict``; ``run_bits(model)`` reads it. The
weights then take at most 2^k distinct values per layer.

Training (``train.fit`` + the ``Distill`` hook): each batch runs the network at the highest
width with the labels (cross entropy), then at each lower width with the KL divergence between
its softened outputs and the highest width's (detached, temperature T, times T^2, Hinton et al.
2015). One optimizer step updates the shared shadow weights with the sum.

``apply`` returns the network NOT folded: its whole point is the run-time switch. The codec
stores the weights at the current width (one file per width, a plain network); activations
stay float and first / last layers are quantized like the others (our choices).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..distill.losses import kd_loss
from ..method import Int, Real, Seq, Tags, TrainingMethod, knob
from ..train import Hook, evaluate
from .core import quantizable_layers, quantize_weights
from .lowbit import dorefa_weights


class SwitchableWeight(nn.Module):
    """Parametrization: DoReFa k-bit weights times the layer's constant scale (its initial
    max |w|, as lowbit.DoReFaWeight); ``bits`` is a buffer (the state dict, copies and
    ``load_state_dict`` keep it), changed in place by set_bits. At 1 bit the values are
    +-scale (the same two levels as 2q - 1 at k = 1), so the scale stays constant across
    widths."""

    def __init__(self, bits: int, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("bits", torch.tensor(int(bits)))
        self.register_buffer("scale", weight.detach().abs().max().float().clone())

    def forward(self, w):
        bits = int(self.bits)
        if bits == 1:
            return torch.where(w >= 0, 1.0, -1.0).to(w.dtype).detach() * self.scale \
                + (w - w.detach())
        return dorefa_weights(w, bits) * self.scale.to(w.dtype)


def switches(model: nn.Module) -> list[SwitchableWeight]:
    """The SwitchableWeight parametrizations of ``model``."""
    return [p for _, m in quantizable_layers(model) if parametrize.is_parametrized(m, "weight")
            for p in m.parametrizations.weight if isinstance(p, SwitchableWeight)]


def set_bits(model: nn.Module, bits: int) -> nn.Module:
    """Run every layer of a switchable network at ``bits`` (in place); returns the model."""
    for p in switches(model):
        p.bits.fill_(int(bits))
    return model


def run_bits(model: nn.Module) -> int | None:
    """The width a switchable network runs at (None: it has no switchable layer)."""
    widths = {int(p.bits) for p in switches(model)}
    if len(widths) > 1:
        raise ValueError(f"the layers run at different widths {sorted(widths)}; "
                         "set_bits(model, bits) sets one for all")
    return widths.pop() if widths else None


@torch.no_grad()
def distinct_values(model: nn.Module) -> dict[str, int]:
    """Layer name -> number of distinct values its (current) weight takes."""
    return {name: int(m.weight.unique().numel()) for name, m in quantizable_layers(model)}


def accuracy_per_width(model: nn.Module, data, widths) -> dict[int, float]:
    """Test accuracy at each width; the model is switched back to its width after."""
    back = run_bits(model)
    scores = {b: evaluate(set_bits(model, b), data) for b in widths}
    set_bits(model, back)
    return scores


class Distill(Hook):
    """Adds, for each lower width, the distillation loss of its outputs on the same batch."""

    def __init__(self, widths: tuple[int, ...], temperature: float):
        self.top, self.lower = max(widths), sorted(set(widths) - {max(widths)}, reverse=True)
        self.temperature = temperature

    def loss(self, model, x, y, logits, loss):
        for bits in self.lower:
            loss = loss + kd_loss(set_bits(model, bits)(x), logits, self.temperature)
        set_bits(model, self.top)           # fit's next forward runs the teacher width
        return loss


@dataclass
class MultiBit(TrainingMethod):
    """Weights switchable between ``widths`` bits, trained jointly (highest with labels, lower
    ones distilled); returned at ``run_bits`` (``set_bits`` switches, ``run_bits()`` reads).

    Supports networks without BatchNorm: one set of BN statistics cannot serve every width
    (switchable-precision networks keep one per width; not done here)."""
    id = "quant.multi_bit"
    reference = ("seed 002 (Ntakouris 2020): networks with several bit modes trained jointly "
                 "by distillation; cf. Yu et al. 2021, Any-Precision Deep Neural Networks")
    requires = "Conv2d or Linear layers and no BatchNorm (one set of statistics per width)"
    sliders = {"run_bits": (1, 8, 1), "epochs": (0, 10, 1), "temperature": (0.5, 10.0, 0.5)}
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")

    widths: tuple = knob((8, 4, 2), Seq(Int(1, 8), 1, 8))     # distinct
    run_bits: int = knob(4, Int(1, 8))    # the width the returned model runs at (any 1..8)
    temperature: float = knob(1.0, Real(0.05, 100.0))
    epochs: int = 3
    lr: float = 0.001               # 0.01 lets one shadow weight outgrow the others (DoReFa's
                                    # max normalization then empties most levels)
    weight_decay: float = 1e-4

    def validate(self):
        if len(set(self.widths)) != len(self.widths):
            raise ValueError(f"MultiBit.widths={self.widths!r}: allowed is a tuple of distinct "
                             "integers from 1 to 8, e.g. (8, 4, 2)")

    def supports(self, model: nn.Module) -> bool:
        return super().supports(model) and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.run_bits))

    def compress(self, model, data=None):
        quantize_weights(model, lambda name, m: SwitchableWeight(max(self.widths), m.weight))
        if self.epochs:
            self.fit(model, data, hooks=[Distill(self.widths, self.temperature)])
        return set_bits(model.eval(), self.run_bits)


METHODS = (MultiBit,)
