"""Checks of what a method really did, used by the contract test (the idea of scikit-learn's
``utils.estimator_checks``, kept in the library so a student can run them on their own method).

``missing_effects(method, before, after, x)`` compares a network with the one a method made
from it and returns the declared effects (``method.effects``) that did not happen: a method
whose ``compress`` returns its input unchanged misses every one of them.
"""
from __future__ import annotations

import torch
from torch import nn

from . import codec, models
from .measure import count_params, layer_table
from .method import EFFECTS, Method


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.train(was_training)


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    return sum(r["effective_macs"] for r in layer_table(model, tuple(x.shape[1:])))


def _encoding(model: nn.Module):
    return models.attached(model, "codec_options")


def effect_holds(effect: str, before: nn.Module, after: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``after`` shows ``effect`` (a key of ``method.EFFECTS``) relative to ``before``."""
    if effect == "fewer_nonzeros":
        return count_params(after)[1] < count_params(before)[1]
    if effect == "smaller_module":
        return count_params(after)[0] < count_params(before)[0]
    if effect == "fewer_bytes":
        return len(codec.encode(after)) < len(codec.encode(before))
    if effect == "fewer_macs":
        return _macs(after, x) < _macs(before, x)
    if effect == "different_outputs":
        return not torch.equal(_outputs(after, x), _outputs(before, x))
    if effect == "same_outputs":
        return torch.equal(_outputs(after, x), _outputs(before, x))
    if effect == "encoding":
        return _encoding(after) is not None and _encoding(after) != _encoding(before)
    raise ValueError(f"unknown effect {effect!r}; allowed: {', '.join(EFFECTS)}")


def missing_effects(method: Method, before: nn.Module, after: nn.Module,
                    x: torch.Tensor) -> list[str]:
    """The effects ``method`` declares that ``after`` does not show (empty: all hold)."""
    return [e for e in method.effects if not effect_holds(e, before, after, x)]
