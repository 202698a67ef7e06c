"""What the channel-pruning methods share: where a group's activations are read, how many
channels stay, and the short fine-tune after a removal.

Activations are read after the ReLU, where zeros and activity mean something: the ``nn.ReLU``
module that follows a producer (or its BatchNorm) in a Sequential, or, inside a residual
``BasicBlock``, ``bn1`` followed by the block's functional ReLU. Where no ReLU follows (Caffe's
LeNet-5 has none after its convolutions) a group has no ReLU site.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import layer_io
from ..method import TEACHER_KNOBS, TrainingMethod
from ..models.cifar import BasicBlock
from ..models.groups import ChannelGroup
from ..train import fit
from .surgery import channel_groups


def natural_images(data) -> bool:
    """Whether random crops and flips keep the labels of ``data``: colour images of objects
    (CIFAR-10) yes, grey digits (MNIST: a flipped 2 is no 2) no."""
    return data.shape[0] == 3


def finetune(method: TrainingMethod, model: nn.Module, data, recipe) -> nn.Module:
    """Retrain the pruned network in place with ``recipe`` (returned: a new layout object).

    On colour images (CIFAR) channels_last is 1.5-2x faster for these convs on CPU (as
    zoo.train does); the network comes back contiguous, in eval mode.
    """
    if recipe.epochs == 0:
        return model
    if natural_images(data):
        model = model.to(memory_format=torch.channels_last)
    fit(model, data, recipe, hooks=method.training_hooks())
    return model.to(memory_format=torch.contiguous_format).eval()


def finetune_recipe(method: TrainingMethod, data, seed: int | None = None, **changes):
    """The methods' fine-tune: cosine decay from ``lr``, crops and flips on natural images."""
    return method.recipe(schedule="cosine", augment=natural_images(data),
                         seed=method.seed if seed is None else seed, **changes)


TRAINING_KNOBS = ("lr", "batch_size", "weight_decay")


def settings_without_training(method: TrainingMethod, trains: bool) -> dict:
    """The settings, without the knobs of a training that does not run (``trains`` False)."""
    params = {k: v for k, v in method.params().items() if k not in TEACHER_KNOBS}
    if not trains:
        for key in TRAINING_KNOBS:
            params.pop(key, None)
        return params
    return {**params, **method.teacher_settings()}


def keep_count(width: int, fraction: float, multiple: int = 1) -> int:
    """Channels that stay when ``fraction`` of ``width`` go: at least one; with ``multiple``
    > 1 the nearest multiple of it (fast kernels like widths divisible by 8)."""
    keep = width - round(fraction * width)
    if multiple > 1:
        keep = max(multiple, multiple * round(keep / multiple))
    return min(width, max(1, keep))


def keep_highest(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Sorted indices of the ``keep`` highest scores (ties: the lower index stays)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:keep].sort().values


def relu_site(model: nn.Module, group: ChannelGroup) -> tuple[str, bool] | None:
    """Where the post-ReLU activation of ``group`` is read: (module name, whether to apply the
    ReLU ourselves), or None when its channels pass through no ReLU (LeNet-5's convs)."""
    last = group.norm or group.name
    parent, _, index = last.rpartition(".")
    container = model.get_submodule(parent)
    if isinstance(container, nn.Sequential) and index.isdigit() \
            and int(index) + 1 < len(container) and isinstance(container[int(index) + 1], nn.ReLU):
        return f"{parent}.{int(index) + 1}", False
    if isinstance(container, BasicBlock) and index == "bn1":   # F.relu(bn1(conv1(x)))
        return last, True
    return None


def activations(model: nn.Module, data, group: ChannelGroup, images: int,
                seed: int) -> torch.Tensor:
    """Activations (N, C, ...) of ``group`` on a seeded subset of ``data``: after the ReLU,
    or the raw producer/norm output where there is none. One layer at a time, since keeping
    every layer's feature maps of a CIFAR net at once would take gigabytes."""
    site = relu_site(model, group)
    name, relu = site or (group.norm or group.name, False)
    out = layer_io(model, data, [name], images=images, seed=seed)[name]["output"]
    return F.relu(out) if relu else out


def per_channel_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over images and positions (every dim but the channel dim 1)."""
    return values.float().mean(dim=[d for d in range(values.dim()) if d != 1])


def has_channel_groups(model: nn.Module) -> bool:
    return bool(channel_groups(model))


def conv_groups(model: nn.Module) -> list[ChannelGroup]:
    """Groups produced by a convolution (in a ResNet: the inner conv1 of each block)."""
    return [g for g in channel_groups(model) if isinstance(model.get_submodule(g.name),
                                                           nn.Conv2d)]
