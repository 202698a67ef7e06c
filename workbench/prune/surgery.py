"""Network surgery: remove neurons / channels and get a physically smaller network.

Which channels go together is found by tracing the network (``dependency.analyze``): a
*coupled group* is a set of producers (Conv2d, Linear) whose output channels must be removed
together (those added in a residual stage, moved by a concatenation or a shuffle), with every
layer that carries them (BatchNorm, depthwise convolution) or reads them (the next Conv2d or
Linear). ``traced_groups(model)`` lists the prunable ones; ``shrink(model, keep)`` removes
channels by group name.

Two ways to build the smaller network, the same channels either way:

- a network that declares its groups (``channel_groups()``, each with the config ``slot``
  holding its width: ``workbench.models.groups.ChannelGroup``) is rebuilt from a smaller
  config, ``type(model)(**config)``, when every group named in ``keep`` is one it declares.
  Its file then is the file of a smaller network of the same class. The declared groups equal
  the traced ones on the zoo networks that declare them (tests/test_prune_dependency.py), so
  the declarations could go; they stay for the methods that read one producer, one norm, one
  consumer (APoZ, Activity, Merge, the reconstruction methods, group lasso).
- any other network that can be traced: ``slim.shrink_traced`` slices every layer of the
  group and puts registered Slim layers in place of the resized ones, then re-traces the
  result to check that every tensor holds the kept channels of the original.

Residual networks with ResNet's option-A shortcut (zero-padded channels) keep the channels of
their stages: the padding's width is set in the code (see ``dependency``), so only the
channels inside each basic block (conv1 -> conv2) are prunable, as in Li et al. 2016.
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
from .dependency import ChannelGraph, CoupledGroup, analyze
from .slim import shrink_traced

__all__ = ["ChannelGroup", "CoupledGroup", "channel_groups", "layer_io", "rebuild", "shrink",
           "traced_groups"]


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


def traced_groups(model: nn.Module) -> list[CoupledGroup]:
    """The prunable coupled groups of ``model`` found by tracing it, in forward order; none
    for a network without a ``config`` dict, which no file could rebuild."""
    if not isinstance(getattr(model, "config", None), dict):
        return []
    return analyze(model).prunable()


def checked_index(name: str, index, width: int) -> torch.Tensor:
    index = torch.as_tensor(index, dtype=torch.long).sort().values
    if len(index) == 0 or index.unique().numel() != len(index) or index.max() >= width \
            or index.min() < 0:
        raise ValueError(f"{name}: keep indices must be distinct, in 0..{width - 1}, "
                         "and at least one")
    return index


def shrink(model: nn.Module, keep: dict[str, torch.Tensor],
           graph: ChannelGraph | None = None) -> nn.Module:
    """A new, smaller network keeping, for each group named in ``keep``, those channels.

    ``keep`` maps a group's name (its first producer) to the indices of the channels (the
    classes of a coupled group) that stay. Masks and parametrizations of resized layers are
    folded in; the input model is untouched. ``graph``: ``dependency.analyze(model)`` if the
    caller has it already, so that the network is not traced again.
    """
    declared = {g.name: g for g in channel_groups(model)}
    # the config describes the network only while none of its layers was resized already
    resized = any(type(m).__name__.startswith("Slim") for m in model.modules())
    if keep and set(keep) <= set(declared) and not resized:
        return _shrink_by_config(model, keep, declared)
    graph = graph if graph is not None else analyze(model)
    groups = {g.name: g for g in graph.groups}
    unknown = set(keep) - set(groups)
    if unknown:
        raise ValueError(f"unknown channel groups {sorted(unknown)}; known: "
                         f"{[g.name for g in graph.prunable()]}")
    for name in keep:
        if not groups[name].prunable:
            raise ValueError(f"channel group {name} is not prunable: {groups[name].reason}")
    keep = {name: checked_index(name, index, groups[name].width)
            for name, index in keep.items()}
    return shrink_traced(model, keep, graph)


def _shrink_by_config(model, keep, groups) -> nn.Module:
    state = plain_state_dict(model)
    config = copy.deepcopy(model.config)
    for name, index in keep.items():
        group = groups[name]
        index = checked_index(name, index, group.width(model))
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
