"""``arch.regularizers``: dropout, DropConnect and ReLU against PReLU, on one network, and what
they do to the activations a sparse-activation engine could skip.

- Dropout (Srivastava et al. 2014) zeroes each *input* of a fully connected layer with
  probability p while training, scaling the rest by 1/(1-p), so that the trained layer expects
  its full input at test time unchanged.
- DropConnect (Wan et al. 2013) zeroes each *weight* of a fully connected layer with
  probability p instead, a fresh mask per batch. Wan et al. average the layer's outputs over
  masks at test time with a Gaussian approximation; here the test-time layer is the mean
  network (the weights unmasked, the training masks scaled by 1/(1-p)), the usual simpler
  choice, said so rather than hidden.
- PReLU (He et al. 2015) replaces max(0, x) by a learned slope a for x < 0 (one slope per
  layer here, starting at the paper's 0.25). It gives up exact zeros: a ReLU network's
  activations are largely zero after training, and an engine that skips zero inputs (as
  EIE does) does fewer multiply-accumulates; a PReLU network's are not.

All three act while training only: the returned network has the input's architecture (with
PReLU modules in place of ReLU modules when ``activation="prelu"``), so every method and the
codec take it as they took the input. Dropout and DropConnect act on the ``nn.Linear`` layers,
as in both papers; a network without any has nothing for them to act on.

``activation_macs(model, data)`` measures, layer by layer, the share of zero inputs on real
images and the MACs left when zero inputs are skipped.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..hooks import hooked
from ..measure import input_shape_of, layer_table
from ..method import Choice, Real, TrainingMethod, knob
from ..models import register_module, replace_module


class DropConnectMask(nn.Module):
    """A parametrization: while training, each weight is kept with probability 1 - p and
    scaled by 1/(1-p) (a new mask on every forward pass); in eval mode the weight itself."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return weight
        keep = torch.rand_like(weight) >= self.p
        return weight * keep / (1 - self.p)


@contextmanager
def training_regularizers(model: nn.Module, dropout: float, dropconnect: float):
    """Within the block, ``model``'s Linear layers get dropout on their inputs and DropConnect
    on their weights (both only in train mode); both are gone afterwards."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    orders = [list(layer._parameters) for layer in linears]
    handles = []
    try:
        for layer in linears:
            if dropout > 0:
                handles.append(layer.register_forward_pre_hook(
                    lambda m, args: (F.dropout(args[0], dropout, m.training),)))
            if dropconnect > 0:
                parametrize.register_parametrization(layer, "weight",
                                                     DropConnectMask(dropconnect))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for layer, order in zip(linears, orders):
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
                # removal re-adds the weight last; keep the state_dict's order as it was
                layer._parameters = {k: layer._parameters[k] for k in order}


@register_module
class PReLUActivation(nn.PReLU):
    """``nn.PReLU`` that keeps its constructor arguments, so the codec can rebuild a network
    whose ReLUs it replaced (the network's own config still says ReLU)."""

    def __init__(self, num_parameters: int = 1, init: float = 0.25):
        super().__init__(num_parameters=num_parameters, init=init)
        self.config = {"num_parameters": num_parameters, "init": init}


def only_relu_modules(model: nn.Module) -> bool:
    """Whether every ReLU of ``model`` is an ``nn.ReLU`` module (none called as a function in
    ``forward``, which a module swap could not reach), read from its torch.fx graph."""
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return False
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:        # a forward torch.fx cannot trace: we cannot tell, so refuse
        return False
    relu_functions = {torch.relu, torch.relu_, F.relu, F.relu_}
    return not any(node.op == "call_function" and node.target in relu_functions
                   or node.op == "call_method" and node.target in ("relu", "relu_")
                   for node in graph.nodes)


def relus_to_prelus(model: nn.Module, init: float = 0.25) -> int:
    """Replace every ``nn.ReLU`` module by a one-slope PReLU; returns how many."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for name in names:
        replace_module(model, name, PReLUActivation(num_parameters=1, init=init))
    return len(names)


@torch.no_grad()
def activation_macs(model: nn.Module, data, images: int = 512, batch_size: int = 256) -> list[dict]:
    """Per Conv2d / Linear layer: its MACs per image, the share of its inputs that are exactly
    zero on ``images`` examples of ``data``, and the MACs left if zero inputs are skipped
    (``macs * (1 - zero_share)``: each input value takes part in the same number of MACs, but
    for padding borders, which this ignores)."""
    table = {row["layer"]: row for row in layer_table(model, input_shape_of(model, data))}
    zeros, counts = dict.fromkeys(table, 0), dict.fromkeys(table, 0)

    def count(module, args, name):
        zeros[name] += int((args[0] == 0).sum())
        counts[name] += args[0].numel()

    sample = data.subset(min(images, len(data)), seed=0)
    with hooked(model, {name: count for name in table}, pre=True):
        for start in range(0, len(sample), batch_size):
            model(sample.normalize(sample.images[start:start + batch_size]))
    rows = []
    for name, row in table.items():
        share = zeros[name] / counts[name] if counts[name] else 0.0
        rows.append({"layer": name, "macs": row["macs"], "zero_inputs": round(share, 4),
                     "macs_skipping_zeros": round(row["macs"] * (1 - share))})
    return rows


@dataclass
class Regularizers(TrainingMethod):
    """Retrain the network with dropout and/or DropConnect on its fully connected layers, with
    its ReLUs or PReLUs in their place (module docstring)."""
    id: ClassVar[str] = "arch.regularizers"
    reference: ClassVar[str] = ("Srivastava et al. 2014; Wan et al. 2013; He et al. 2015")
    sliders: ClassVar[dict] = {"dropout": (0.0, 0.8, 0.1), "dropconnect": (0.0, 0.8, 0.1)}
    smoke: ClassVar[dict] = {"epochs": 1, "dropout": 0.5, "activation": "prelu"}
    effects: ClassVar[tuple[str, ...]] = ("different_outputs",)
    requires: ClassVar[str] = ("Linear layers (and, for activation='prelu', ReLUs that are "
                               "all nn.ReLU modules)")

    dropout: float = knob(0.5, Real(0.0, 0.9))
    dropconnect: float = knob(0.0, Real(0.0, 0.9))
    activation: str = knob("relu", Choice(("relu", "prelu")))
    epochs: int = 2
    lr: float = 0.01

    def supports(self, model: nn.Module) -> bool:
        has = lambda kind: any(isinstance(m, kind) for m in model.modules())
        return has(nn.Linear) and (self.activation == "relu" or only_relu_modules(model))

    def validate(self) -> None:
        if self.epochs == 0:
            raise ValueError(f"{type(self).__name__}.epochs=0: allowed is at least 1 (the "
                             "regularizers act only while the network trains)")

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        if self.activation == "prelu":
            relus_to_prelus(model)
        with training_regularizers(model, self.dropout, self.dropconnect):
            self.fit(model, data)
        return model


METHODS = (Regularizers,)
