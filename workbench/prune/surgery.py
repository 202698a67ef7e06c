"""Network surgery: remove neurons / channels and get a physically smaller network.

A *channel group* is one prunable set of channels: the outputs of a producing layer (Conv2d or
Linear), its BatchNorm if any, and the inputs of the consuming layer. Removing channel ``c``
deletes row ``c`` of the producer, entry ``c`` of the norm, and the inputs of the consumer
that read channel ``c`` (``spatial`` of them when a Flatten sits in between).

Residual networks: the channels a block adds to its shortcut must match the shortcut, so only
the channels *inside* each basic block (conv1 -> conv2) are prunable, as in Li et al. 2016.

``shrink(model, keep)`` builds a new network of the same architecture from a smaller config and
copies the kept weights, so the result is a plain zoo network the codec can store and rebuild.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import models
from ..codec import plain_state_dict


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


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The prunable channel groups of a zoo network, in forward order."""
    arch = models.name_of(model)
    if arch == "lenet300":
        n = len(model.config["hidden"])
        return [ChannelGroup(f"net.{2 * i + 1}", None, f"net.{2 * i + 3}", 1, ("hidden", i))
                for i in range(n)]
    if arch == "lenet5":
        return [ChannelGroup("features.0", None, "features.2", 1, ("channels", 0)),
                ChannelGroup("features.2", None, "classifier.1", 16, ("channels", 1)),
                ChannelGroup("classifier.1", None, "classifier.4", 1, ("hidden", None))]
    if arch == "vgg_small":
        convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
        groups = []
        for k, i in enumerate(convs):
            last = k == len(convs) - 1
            consumer = "classifier.1" if last else f"features.{convs[k + 1]}"
            groups.append(ChannelGroup(f"features.{i}", f"features.{i + 1}", consumer,
                                       16 if last else 1, ("channels", k)))
        return groups
    if arch == "resnet20":
        groups, k = [], 0
        for s, stage in enumerate(model.stages):
            for b in range(len(stage)):
                prefix = f"stages.{s}.{b}"
                groups.append(ChannelGroup(f"{prefix}.conv1", f"{prefix}.bn1",
                                           f"{prefix}.conv2", 1, ("inner", k)))
                k += 1
        return groups
    raise ValueError(f"no channel groups known for {arch}")


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
    smaller = models.build(models.name_of(model), **config)
    smaller.load_state_dict(state)
    return smaller.train(model.training)


@torch.no_grad()
def layer_io(model: nn.Module, data, names: list[str], images: int = 1024,
             batch_size: int = 256, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """Inputs and outputs of the named layers on ``images`` examples of ``data`` (eval mode).

    Returns ``{name: {"input": tensor, "output": tensor}}``, concatenated over batches. The
    examples are a stratified subset drawn with ``seed``, so methods that sample feature maps
    are deterministic.
    """
    sample = data.subset(min(images, len(data)), seed=seed)
    records = {n: {"input": [], "output": []} for n in names}
    handles = []
    for n in names:
        def hook(module, inputs, output, n=n):
            records[n]["input"].append(inputs[0].detach())
            records[n]["output"].append(output.detach())
        handles.append(model.get_submodule(n).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for x, _ in sample.loader(batch_size):
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: {k: torch.cat(v) for k, v in r.items()} for n, r in records.items()}
