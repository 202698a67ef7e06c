"""Network surgery: remove neurons / channels and get a physically smaller network.

A *channel group* (``workbench.models.groups.ChannelGroup``) is one prunable set of channels:
the outputs of a producing layer (Conv2d or Linear), its BatchNorm if any, and the inputs of
the consuming layer. Removing channel ``c`` deletes row ``c`` of the producer, entry ``c`` of
the norm, and the inputs of the consumer that read channel ``c`` (``spatial`` of them when a
Flatten sits in between). Each architecture declares its groups (``model.channel_groups()``):
a new network supports channel pruning by declaring them.

Residual networks: the channels a block adds to its shortcut must match the shortcut, so only
the channels *inside* each basic block (conv1 -> conv2) are prunable, as in Li et al. 2016.

``shrink(model, keep)`` builds a new network of the same class from a smaller config and copies
the kept weights, so the result is a plain network the codec can store and rebuild.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import models
from ..codec import plain_state_dict
from ..hooks import layer_io
from ..models.groups import ChannelGroup
from ..train import seeded

__all__ = ["ChannelGroup", "channel_groups", "layer_io", "rebuild", "shrink"]


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The prunable channel groups of ``model`` in forward order (what its class declares in
    ``channel_groups()``; none if it declares nothing)."""
    declared = getattr(model, "channel_groups", None)
    return list(declared()) if callable(declared) else []


def rebuild(model: nn.Module, config: dict, state: dict[str, torch.Tensor]) -> nn.Module:
    """A new network of ``model``'s class made from ``config``, holding ``state``, in the
    input's train/eval mode, with the input's attachments. Every parameter and buffer comes
    from ``state``; the constructor's random initialization runs on its own random stream, so
    the caller's stays untouched."""
    with seeded(0):
        smaller = type(model)(**config)
    smaller.load_state_dict(state)
    for name, child in model.named_children():   # what travels with the net: its encoding ...
        if isinstance(child, models.Attachment):
            models.attach(smaller, name, child.info)
    return smaller.train(model.training)


def _take(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    return tensor.index_select(dim, index).clone()


def shrink(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A new, smaller network keeping, for each group named in ``keep``, those channels.

    ``keep`` maps a group's producer name to the indices of the channels that stay. Masks and
    parametrizations are folded in first; the input model is untouched.
    """
    groups = {g.name: g for g in channel_groups(model)}
    unknown = set(keep) - set(groups)
    if unknown:
        raise ValueError(f"unknown channel groups {sorted(unknown)}; known: {sorted(groups)}")
    state = plain_state_dict(model)
    config = copy.deepcopy(model.config)
    for name, index in keep.items():
        group = groups[name]
        index = torch.as_tensor(index, dtype=torch.long).sort().values
        if len(index) == 0 or index.unique().numel() != len(index) \
                or index.max() >= group.width(model):
            raise ValueError(f"{name}: keep indices must be distinct, in 0..{group.width(model) - 1}, "
                             "and at least one")
        for key in (f"{name}.weight", f"{name}.bias"):
            if key in state:
                state[key] = _take(state[key], 0, index)
        if group.norm:
            for key in ("weight", "bias", "running_mean", "running_var"):
                state[f"{group.norm}.{key}"] = _take(state[f"{group.norm}.{key}"], 0, index)
        columns = (index[:, None] * group.spatial + torch.arange(group.spatial)).flatten()
        state[f"{group.consumer}.weight"] = _take(state[f"{group.consumer}.weight"], 1, columns)
        key, slot = group.slot
        if slot is None:
            config[key] = len(index)
        else:
            config[key][slot] = len(index)
    return rebuild(model, config, state)
