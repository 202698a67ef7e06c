"""Channel surgery on any traced network: resized layers the codec can rebuild, and
``shrink_traced``, which slices the kept channels out of every layer of a coupled group
(``dependency.analyze``) and checks the result.

A resized layer becomes a thin registered subclass of its kind (``SlimConv2d``,
``SlimLinear``, ``SlimBatchNorm2d``, ``SlimBatchNorm1d``) that keeps its constructor arguments
in ``self.config``: the network's own class and config stay as they were, and a file stores
the resized layers beside them (``models.register_module``), so any network whose root the
codec can rebuild can be pruned without a config slot per width. They are still a Conv2d (a
Linear, a BatchNorm) to ``isinstance``, so ``measure`` and every method see the same layers.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..codec import plain_state_dict
from ..models import register_module, replace_module
from .dependency import ChannelGraph, analyze
from .propagate import Chan, full


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


@register_module
class SlimConv2d(nn.Conv2d):
    """A Conv2d that channel pruning resized (constructor arguments in ``config``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__(in_channels, out_channels, _pair(kernel_size), _pair(stride),
                         _pair(padding), _pair(dilation), groups, bias, padding_mode)
        listed = lambda v: list(v) if isinstance(v, tuple) else v      # JSON keeps lists
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "kernel_size": listed(self.kernel_size), "stride": listed(self.stride),
                       "padding": listed(self.padding), "dilation": listed(self.dilation),
                       "groups": groups, "bias": bias, "padding_mode": padding_mode}


@register_module
class SlimLinear(nn.Linear):
    """A Linear that channel pruning resized (constructor arguments in ``config``)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__(in_features, out_features, bias)
        self.config = {"in_features": in_features, "out_features": out_features, "bias": bias}


class _SlimNorm:
    """The constructor both resized BatchNorms share: the BatchNorm's own (the next class in
    the MRO), then its arguments kept in ``config``."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.config = {"num_features": num_features, "eps": eps, "momentum": momentum,
                       "affine": affine, "track_running_stats": track_running_stats}


@register_module
class SlimBatchNorm2d(_SlimNorm, nn.BatchNorm2d):
    """A BatchNorm2d that channel pruning resized (constructor arguments in ``config``)."""


@register_module
class SlimBatchNorm1d(_SlimNorm, nn.BatchNorm1d):
    """A BatchNorm1d that channel pruning resized (constructor arguments in ``config``)."""


def resized(layer: nn.Module, tensors: dict[str, torch.Tensor], kept: dict) -> nn.Module:
    """A Slim copy of ``layer`` holding the kept rows ("out"), input columns ("in") or
    channels ("carry": a BatchNorm or depthwise conv) of its ``tensors``."""
    if isinstance(layer, nn.Conv2d):
        if "carry" in kept:                                  # depthwise: one filter per channel
            rows = cols = kept["carry"]
            new = SlimConv2d(len(rows), len(rows), layer.kernel_size, layer.stride,
                             layer.padding, layer.dilation, len(rows), layer.bias is not None,
                             layer.padding_mode)
            cols = None
        else:
            rows = kept.get("out", torch.arange(layer.out_channels))
            cols = kept.get("in", torch.arange(layer.in_channels))
            new = SlimConv2d(len(cols), len(rows), layer.kernel_size, layer.stride,
                             layer.padding, layer.dilation, 1, layer.bias is not None,
                             layer.padding_mode)
    elif isinstance(layer, nn.Linear):
        rows = kept.get("out", torch.arange(layer.out_features))
        cols = kept.get("in", torch.arange(layer.in_features))
        new = SlimLinear(len(cols), len(rows), layer.bias is not None)
    elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        rows, cols = kept["carry"], None
        kind = SlimBatchNorm2d if isinstance(layer, nn.BatchNorm2d) else SlimBatchNorm1d
        new = kind(len(rows), layer.eps, layer.momentum, layer.affine,
                   layer.track_running_stats)
    else:
        raise TypeError(f"{type(layer).__name__}: channel surgery resizes Conv2d, Linear and "
                         f"BatchNorm layers only")
    state = {}
    for key, value in tensors.items():
        if value.dim() == 0:                                 # num_batches_tracked
            state[key] = value.clone()
            continue
        value = value.index_select(0, rows)
        if key == "weight" and cols is not None:
            value = value.index_select(1, cols)
        state[key] = value.clone()
    new.load_state_dict(state)
    for name, param in new.named_parameters():
        param.requires_grad_(layer.get_parameter(name).requires_grad)
    return new.train(layer.training)


def kept_positions(graph: ChannelGraph, keep: dict[str, torch.Tensor]) -> dict:
    """(layer, role) -> bool mask of the positions that stay, for the layers that lose any."""
    masks = {}
    for name, index in keep.items():
        group = graph.group(name)
        gone = torch.ones(group.width, dtype=torch.bool)
        gone[index] = False
        for key, where in group.positions.items():
            drop = (where >= 0) & gone[where.clamp(min=0)]
            masks[key] = masks.get(key, torch.ones(len(where), dtype=torch.bool)) & ~drop
    return {k: m for k, m in masks.items() if not m.all()}


def shrink_traced(model: nn.Module, keep: dict[str, torch.Tensor],
                  graph: ChannelGraph | None = None) -> nn.Module:
    """A copy of ``model`` whose coupled groups keep only the classes in ``keep`` (group name
    -> sorted class indices, already checked), its resized layers replaced by Slim ones.
    Checked by ``check_shrunk``; ``model`` is untouched."""
    graph = graph or analyze(model)
    masks = kept_positions(graph, keep)
    state = plain_state_dict(model)
    smaller = copy.deepcopy(model)
    for layer in dict.fromkeys(name for name, _ in masks):
        kept = {role: torch.nonzero(m).flatten() for (name, role), m in masks.items()
                if name == layer}
        prefix = f"{layer}."
        tensors = {k[len(prefix):]: v for k, v in state.items()
                   if k.startswith(prefix) and "." not in k[len(prefix):]}
        replace_module(smaller, layer, resized(model.get_submodule(layer), tensors, kept))
    check_shrunk(graph, smaller, masks)
    return smaller


def check_shrunk(before: ChannelGraph, smaller: nn.Module, masks: dict) -> None:
    """ValueError unless every tensor of ``smaller`` holds exactly the kept channels of the
    same tensor of the original, in the original order (re-traced: ids mapped back through
    each producer's kept rows). Channels are compared one by one, not by class: channels of
    one class (united by an addition or a chunk) are removed together but are not
    interchangeable, so a pruned network that swapped two of them would be wrong."""
    try:
        after = analyze(smaller)
    except Exception as err:     # a view or split the surgery broke: say where it came from
        raise ValueError(f"the pruned {type(smaller).__name__} does not run: {err}") from err
    root = torch.tensor([before.uf.find(i) for i in range(len(before.uf.parent))])
    made = {origin: i for i, origin in enumerate(before.uf.origin)}
    rows = {p: torch.nonzero(masks.get((p, "out"), torch.ones(len(ids), dtype=torch.bool))
                             ).flatten() for p, ids in before.producers.items()}
    origins = [(o, int(rows[o][c]) if o in rows and c < len(rows[o]) else c)
               for o, c in after.uf.origin]
    if any(origin not in made for origin in origins):
        missing = next(origin for origin in origins if origin not in made)
        raise ValueError(f"channel surgery on {type(smaller).__name__} went wrong at node "
                         f"{missing[0]}: the pruned network makes channels the original does "
                         f"not (an operation dependency.py maps wrongly)")
    back = torch.tensor([made[origin] for origin in origins])   # after id -> original id
    removed = set()
    for (layer, role), mask in masks.items():
        if role == "out":
            removed |= set(root[before.producers[layer][~mask]].tolist())
    for name, was in before.node_ids.items():
        now = after.node_ids.get(name, "missing")
        if not _same(was, now, root, back, removed, before.shapes.get(name),
                     after.shapes.get(name)):
            raise ValueError(f"channel surgery on {type(smaller).__name__} went wrong at node "
                             f"{name}: its channels are not the kept channels of the original "
                             f"in their order (an operation dependency.py maps wrongly)")


def _same(was, now, root, back, removed, shape_was, shape_now) -> bool:
    # ``removed`` holds classes (roots); a channel is gone when its class is
    if was is None or now is None:
        return was is None and now is None
    if isinstance(was, Chan) != isinstance(now, Chan):
        return False
    if not isinstance(was, Chan):
        return len(was) == len(now) and all(
            _same(a, b, root, back, removed, None, None) for a, b in zip(was, now))
    if was.clean != now.clean:
        if shape_was is None or shape_now is None:
            return False
        was, now = Chan(full(was, shape_was), False), Chan(full(now, shape_now), False)
    before = was.ids.flatten()
    gone = torch.isin(root[before], torch.tensor(sorted(removed), dtype=torch.long))
    return torch.equal(before[~gone], back[now.ids.flatten()])
