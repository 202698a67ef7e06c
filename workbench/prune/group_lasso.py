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

from dataclasses import dataclass

import torch
from torch import nn

from ..method import Method, clone_model
from ..train import Hook, Recipe, fit
from .channels import finetune, require_data
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
class GroupLasso(Method):
    """Train with a group-lasso penalty on filters and channels, then remove the zeroed
    groups physically (Wen et al. 2016)."""
    id = "prune.group_lasso"
    reference = ("Wen, Wu, Wang, Chen, Li 2016, Learning Structured Sparsity in Deep Neural "
                 "Networks; Lebedev, Lempitsky 2016, Fast ConvNets Using Group-wise Brain "
                 "Damage")
    sliders = {"lam": (0.0, 0.05, 0.001), "threshold": (0.0, 0.1, 0.001),
               "epochs": (1, 10, 1), "finetune_epochs": (0, 5, 1)}
    needs_data = True
    smoke = {"epochs": 1, "finetune_epochs": 0}

    lam: float = 0.01               # lambda of the penalty
    groups: str = "both"            # "both" | "filters" | "channels": which groups are penalized
    epochs: int = 3                 # of training with the penalty
    lr: float = 0.01
    # A group with a smaller L2 norm is removed. On MNIST the zeroed groups end near 1e-9 and
    # the live ones above 1e-2, so anything in between removes the same channels.
    threshold: float = 0.01
    finetune_epochs: int = 1        # without the penalty, after the removal
    seed: int = 0

    def validate(self):
        self._check_range("lam", 0.0, 10.0)
        self._check_choice("groups", tuple(KINDS))
        self._check_whole("epochs", 0, 1000)
        self._check_range("lr", 1e-9, 10.0)
        self._check_range("threshold", 0.0, 1e3)
        self._check_whole("finetune_epochs", 0, 1000)
        self._check_whole("seed", 0, 2**31)

    def settings(self):
        params = self.params()
        if not (self.epochs or self.finetune_epochs):
            params.pop("lr")        # nothing trains
        return params

    def train(self, model: nn.Module, data) -> nn.Module:
        """``model`` trained in place with the penalty (returned for chaining)."""
        if self.epochs:
            fit(model, data, Recipe(epochs=int(self.epochs), lr=self.lr, schedule="cosine",
                                    augment=data.name == "cifar10", seed=self.seed),
                hooks=[GroupLassoHook(self.lam, KINDS[self.groups])])
        return model.eval()

    def apply(self, model, data=None):
        require_data(self, data)
        trained = self.train(clone_model(model), data)
        with torch.no_grad():
            norms = group_norms(trained, KINDS[self.groups])
        keep = {name: kept_channels(n, self.threshold) for name, n in norms.items()}
        pruned = shrink(trained, keep)
        return finetune(pruned, data, self.finetune_epochs, self.lr, self.seed)


METHODS = (GroupLasso,)
