"""Channel groups: where a network's prunable widths live.

A *channel group* is one prunable set of channels: the outputs of a producing layer (Conv2d or
Linear), its BatchNorm if any, and the inputs of the consuming layer. Removing channel ``c``
deletes row ``c`` of the producer, entry ``c`` of the norm, and the inputs of the consumer
that read channel ``c`` (``spatial`` of them when a Flatten sits in between).

An architecture may declare its groups in a method ``channel_groups(self) ->
list[ChannelGroup]`` (in forward order), each naming the ``slot`` of its constructor config
that holds the width, so that ``prune.surgery.shrink`` can rebuild a smaller network of the
same class with ``type(model)(**config)``. Which channels are coupled is found without them,
by tracing (``prune.dependency``); on the zoo networks that declare groups the traced ones are
equal (tests/test_prune_dependency.py). The declarations remain for the config rebuild and
for the methods that read one producer, one norm and one consumer per group.

This module imports only torch, so that the architectures and the pruning code can both
import it.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ChannelGroup:
    name: str               # the producing layer, e.g. "features.0"
    norm: str | None        # its BatchNorm, e.g. "features.1"
    consumer: str           # the layer that reads these channels
    spatial: int            # consumer inputs per channel (H*W after a Flatten, else 1)
    slot: tuple[str, int | None]   # where the width lives in the config (None: a scalar)

    def width(self, model: nn.Module) -> int:
        layer = model.get_submodule(self.name)
        return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
