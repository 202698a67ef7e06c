"""The method contract shared by every catalogue id.

A method is a dataclass of its hyperparameters (all knobs in the constructor, no logic there,
as in scikit-learn estimators). ``apply(model, data=None)`` returns a new compressed network
and never touches its input (the ``inplace=False`` habit of torch.ao), so a notebook slider can
apply a method to the same base model again and again. Invalid hyperparameters raise a
ValueError in ``__post_init__`` that names the field, the value and what is allowed.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import nn


@dataclass
class Method:
    id: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    # field -> (low, high, step): the ranges a notebook slider may set
    sliders: ClassVar[dict[str, tuple[float, float, float]]] = {}
    needs_data: ClassVar[bool] = False     # apply() needs the training set (it trains/samples)
    # The zoo architectures the method applies to (e.g. Winograd needs 3x3 convolutions).
    archs: ClassVar[tuple[str, ...]] = ("lenet300", "lenet5", "vgg_small", "resnet20")
    # Hyperparameters that make apply() take about a second on a few hundred images: used by
    # the contract test and by smoke runs of the notebooks. Never the defaults of a lesson.
    smoke: ClassVar[dict] = {}

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check the hyperparameters; subclasses raise ValueError via the helpers below."""

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        raise NotImplementedError

    def params(self) -> dict:
        """Every hyperparameter (what the constructor takes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def settings(self) -> dict:
        """The hyperparameters in effect, for tables (a method hides knobs it ignores)."""
        return self.params()

    # -- helpers for validate()
    def _check_range(self, name: str, low: float, high: float) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value <= high:
            raise ValueError(f"{type(self).__name__}.{name}={value!r}: "
                             f"allowed is a number from {low} to {high}")

    def _check_int(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{type(self).__name__}.{name}={value!r}: "
                             f"allowed is an integer from {low} to {high}")

    def _check_whole(self, name: str, low: int, high: float) -> None:
        """A count that a float slider may send as 16.0: whole numbers only, 2.5 refused."""
        self._check_range(name, low, high)
        value = getattr(self, name)
        if value != int(value):
            raise ValueError(f"{type(self).__name__}.{name}={value!r}: allowed is a whole "
                             f"number from {low} to {high}")

    def _check_choice(self, name: str, allowed: tuple) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise ValueError(f"{type(self).__name__}.{name}={value!r}: "
                             f"allowed is one of {', '.join(map(repr, allowed))}")


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that also works on pruned or parametrized networks.

    After a forward pass with autograd on, torch.nn.utils.prune leaves the masked weight as a
    computed (non-leaf) tensor, which ``copy.deepcopy`` refuses. It is only a cache, recomputed
    before every forward, so the copy gets a detached clone of it and the input is untouched.
    """
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
