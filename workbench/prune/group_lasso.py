"""Structured sparsity learning (Wen et al. 2016; Lebedev & Lempitsky 2016): train with a
group-lasso penalty, then remove the groups it has driven to zero.

The penalty is lambda * sum_g ||W_g||_2 over two kinds of group per prunable channel (the
channel groups of ``surgery.channel_groups``, so ResNets only lose the inner channels of their
blocks):

- the *filter* group: everything that makes the channel, i.e. the producer's weight row, its
  bias, and its BatchNorm scale and shift. A BatchNorm renormalizes a shrinking filter back
  to unit variance, so only with gamma and beta in the group does a small norm mean a silent
  channel (Wen et al. trained nets without BN in their filter-wise experiments);
- the *channel* group: the consumer's input columns that read the channel (its "shape"
  along the input-channel axis).

The L2 norm (not squared) is what makes whole groups reach zero together: its gradient
lambda * W_g / ||W_g|| has the same length lambda for every group, large or small, so weak
groups are pulled to zero while strong ones barely move. Plain SGD leaves them hovering at a
small norm, hence the ``threshold`` below which a group counts as removed; removing a channel
whose filter group or channel group is below it changes the outputs by about that much.

Shape groups inside a filter (Wen et al.'s "filter shapes") cannot be removed by
``surgery.shrink``: they are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import Choice, Int, Real, TrainingMethod, knob
from ..train import Hook
from .structured import (finetune, finetune_recipe, has_channel_groups, natural_images,
                         settings_without_training)
from .surgery import ChannelGroup, channel_groups, shrink


def filter_group(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """(C, k): row c holds every parameter that makes channel c (weights, bias, BN)."""
    producer = model.get_submodule(group.name)
    parts = [producer.weight.flatten(1)]
    if producer.bias is not None:
        parts.append(producer.bias[:, None])
    if group.norm:
        norm = model.get_submodule(group.norm)
        parts += [norm.weight[:, None], norm.bias[:, None]]
    return torch.cat(parts, 1)


def channel_group(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """(C, k): row c holds the consumer's weights that read channel c."""
    weight = model.get_submodule(group.consumer).weight
    width = group.width(model)
    if weight.dim() == 2:    # Linear: `spatial` consecutive inputs per channel after Flatten
        return weight.view(weight.shape[0], width, group.spatial).transpose(0, 1).flatten(1)
    return weight.transpose(0, 1).flatten(1)


def group_norms(model: nn.Module, kinds: tuple[str, ...] = ("filters", "channels")
                ) -> dict[str, dict[str, torch.Tensor]]:
    """{producer name: {"filters": (C,), "channels": (C,)}}: the L2 norm of every group."""
    make = {"filters": filter_group, "channels": channel_group}
    return {g.name: {k: torch.linalg.vector_norm(make[k](model, g), dim=1) for k in kinds}
            for g in channel_groups(model)}


def group_lasso_penalty(model: nn.Module, kinds: tuple[str, ...] = ("filters", "channels")
                        ) -> torch.Tensor:
    """sum_g ||W_g||_2 over the groups of ``kinds`` (differentiable; times lambda by the
    caller)."""
    return sum(n.sum() for per_kind in group_norms(model, kinds).values()
               for n in per_kind.values())


def kept_channels(norms: dict[str, torch.Tensor], threshold: float) -> torch.Tensor:
    """Channels whose groups all have a norm >= threshold (at least the strongest one)."""
    weakest = torch.stack(list(norms.values())).min(0).values
    keep = torch.nonzero(weakest >= threshold).flatten()
    return keep if len(keep) else weakest.argmax().view(1)


class GroupLassoHook(Hook):
    """Adds lambda * sum_g ||W_g||_2 to the training loss."""

    def __init__(self, lam: float, kinds: tuple[str, ...]):
        self.lam, self.kinds = lam, kinds

    def loss(self, model, x, y, logits, loss):
        return loss + self.lam * group_lasso_penalty(model, self.kinds)


KINDS = {"both": ("filters", "channels"), "filters": ("filters",), "channels": ("channels",)}


@dataclass
class GroupLasso(TrainingMethod):
    """Train with a group-lasso penalty on filters and channels for ``epochs``, remove the
    zeroed groups physically, then fine-tune without the penalty for ``finetune_epochs``
    (Wen et al. 2016)."""
    id = "prune.group_lasso"
    reference = ("Wen, Wu, Wang, Chen, Li 2016, Learning Structured Sparsity in Deep Neural "
                 "Networks; Lebedev, Lempitsky 2016, Fast ConvNets Using Group-wise Brain "
                 "Damage")
    sliders = {"lam": (0.0, 0.05, 0.001), "threshold": (0.0, 0.1, 0.001),
               "epochs": (1, 10, 1), "finetune_epochs": (0, 5, 1)}
    # A smoke run trains too briefly to zero a group: its threshold lies among the group
    # norms of a freshly initialized zoo net (about 0.1 to 0.85), so that channels go.
    smoke = {"epochs": 1, "finetune_epochs": 0, "threshold": 0.6}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = "channel groups (a model's channel_groups())"

    lam: float = knob(0.01, Real(0.0, 10.0))       # lambda of the penalty
    # which groups are penalized
    groups: str = knob("both", Choice(tuple(KINDS)))
    epochs: int = 3                 # of training with the penalty
    # A group with a smaller L2 norm is removed. On MNIST the zeroed groups end near 1e-9 and
    # the live ones above 1e-2, so anything in between removes the same channels.
    threshold: float = knob(0.01, Real(0.0, 1e3))
    finetune_epochs: int = knob(1, Int(0, 1000))   # without the penalty, after the removal
    weight_decay: float = 5e-4

    def tags(self):
        return replace(super().tags(), needs_data=self.epochs + self.finetune_epochs > 0)

    def supports(self, model):
        return has_channel_groups(model)

    def settings(self):
        return settings_without_training(self, self.epochs + self.finetune_epochs > 0)

    def train(self, model: nn.Module, data) -> nn.Module:
        """``model`` trained in place with the penalty (returned for chaining)."""
        if self.epochs:
            self.fit(model, data, hooks=[GroupLassoHook(self.lam, KINDS[self.groups])],
                     schedule="cosine", augment=natural_images(data))
        return model.eval()

    def compress(self, model, data=None):
        trained = self.train(model, data)
        with torch.no_grad():
            norms = group_norms(trained, KINDS[self.groups])
        keep = {name: kept_channels(n, self.threshold) for name, n in norms.items()}
        pruned = shrink(trained, keep)
        if not self.finetune_epochs:
            return pruned
        return finetune(self, pruned, data,
                        finetune_recipe(self, data, epochs=self.finetune_epochs))


METHODS = (GroupLasso,)
