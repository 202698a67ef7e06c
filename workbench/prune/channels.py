"""Neuron and channel pruning that returns a physically smaller network: APoZ, low-activity
elimination, L1-norm filters here; data-free merging (``merge``) and layer removal
(``blocks``) in their own modules, importable from here too.

Every method decides which channels of each group stay and hands that to ``surgery.shrink``,
which builds real smaller layers (the consumer's inputs go too). L1Filter takes its groups
from tracing the network (``surgery.traced_groups``: residual stages, concatenations and
shuffles couple channels, so it prunes MobileNet v2 and ShuffleNet v2 too); APoZ and
Activity read the groups a network declares (``surgery.channel_groups``: one producer, its
norm, one consumer). ResNet-20's option-A shortcuts pad channels with zeros, so its stages
keep their width and only the inner channels of its blocks (conv1 -> conv2) are pruned, as
in Li et al. 2016.

Activations are read after the ReLU (``structured.relu_site``): the ``nn.ReLU`` module after a
producer or its BatchNorm, or a residual block's functional ReLU after ``bn1``. Caffe's LeNet-5
has no ReLU after its convolutions, so APoZ leaves them alone and Activity uses mean |a| there.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from ..method import Choice, Int, Mapping, Real, TrainingMethod, knob
from ..models.groups import ChannelGroup
from .blocks import (LayerRemoval, depth_of, greedy_block_removal, removable_blocks,
                     subset_cost, without_block)
from .dependency import ChannelGraph, analyze
from .merge import Merge, merge_neurons, merge_saliency, squared_distances
from .structured import (activations, finetune, finetune_recipe, has_channel_groups,
                         keep_count, keep_highest, per_channel_mean, relu_site,
                         settings_without_training)
from .surgery import CoupledGroup, channel_groups, layer_io, shrink, traced_groups

__all__ = ["APoZ", "Activity", "ChannelGroup", "L1Filter", "LayerRemoval", "Merge",
           "activations", "apoz", "apoz_keep", "channel_groups", "depth_of", "filter_l1",
           "finetune", "greedy_block_removal", "group_l1", "keep_count", "keep_highest",
           "layer_io", "merge_neurons", "merge_saliency", "per_channel_mean", "relu_site",
           "removable_blocks", "shrink", "squared_distances", "subset_cost", "without_block"]

# ------------------------------------------------------------------ APoZ


def apoz(acts: torch.Tensor) -> torch.Tensor:
    """Average Percentage of Zeros per channel: the fraction of exactly-zero activations over
    all images and positions (Hu et al. 2016, eq. 1)."""
    return per_channel_mean(acts == 0)


def apoz_keep(scores: torch.Tensor, std_factor: float = 1.0) -> torch.Tensor:
    """Channels that stay: APoZ <= mean + std_factor * std of the layer (the paper's rule)."""
    limit = scores.mean() + std_factor * scores.std()
    keep = torch.nonzero(scores <= limit).flatten()
    return keep if len(keep) else scores.argmin().view(1)


@dataclass
class APoZ(TrainingMethod):
    """Remove channels that are mostly zero after their ReLU (Hu et al. 2016).

    ``rounds`` times: measure APoZ on ``images`` training examples, trim, fine-tune for
    ``epochs`` (cosine decay from ``lr``)."""
    id = "prune.apoz"
    reference = ("Hu, Peng, Tai, Tang 2016, Network Trimming: A Data-Driven Neuron Pruning "
                 "Approach towards Efficient Deep Architectures")
    sliders = {"std_factor": (0.0, 3.0, 0.1), "rounds": (1, 5, 1), "epochs": (0, 5, 1)}
    smoke = {"images": 128, "epochs": 1}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = "channel groups (channel_groups()) followed by a ReLU"

    std_factor: float = knob(1.0, Real(0.0, 10.0))   # remove APoZ > mean + std_factor * std
    rounds: int = knob(1, Int(1, 50))      # measure -> trim -> fine-tune, this many times
    epochs: int = 1                        # fine-tuning per round (0: none)
    images: int = knob(512, Int(1, 10**6))  # examples APoZ is measured on
    weight_decay: float = 5e-4

    def tags(self):
        return replace(super().tags(), needs_data=True)     # it measures activations

    def supports(self, model):
        return any(relu_site(model, g) for g in channel_groups(model))

    def settings(self):
        return settings_without_training(self, self.epochs > 0)

    def scores(self, model: nn.Module, data, seed: int = 0) -> dict[str, torch.Tensor]:
        """APoZ of every channel group that has a ReLU, by producer name."""
        return {g.name: apoz(activations(model, data, g, self.images, seed))
                for g in channel_groups(model) if relu_site(model, g)}

    def compress(self, model, data=None):
        for r in range(self.rounds):
            keep = {name: apoz_keep(s, self.std_factor)
                    for name, s in self.scores(model, data, self.seed + r).items()}
            model = shrink(model, keep)
            model = finetune(self, model, data, finetune_recipe(self, data, seed=self.seed + r))
        return model

# ------------------------------------------------------------------ low activity


@dataclass
class Activity(TrainingMethod):
    """Remove the channels of lowest mean activation per layer (Polyak & Wolf 2015), then
    fine-tune for ``epochs``."""
    id = "prune.activity"
    reference = ("Polyak, Wolf 2015, Channel-Level Acceleration of Deep Face Representations")
    sliders = {"fraction": (0.0, 0.95, 0.05), "epochs": (0, 5, 1)}
    smoke = {"images": 128, "epochs": 1}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = "channel groups (a model's channel_groups())"

    fraction: float = knob(0.3, Real(0.0, 0.99))   # of each layer's channels removed
    epochs: int = 1                                # fine-tuning (0: none)
    images: int = knob(512, Int(1, 10**6))         # examples the activity is measured on
    weight_decay: float = 5e-4

    def tags(self):
        return replace(super().tags(), needs_data=True)     # it measures activations

    def supports(self, model):
        return has_channel_groups(model)

    def settings(self):
        return settings_without_training(self, self.epochs > 0)

    def scores(self, model: nn.Module, data) -> dict[str, torch.Tensor]:
        """Mean activation per channel; mean |a| where no ReLU follows (signed means of a
        linear response say nothing about how much a channel is used)."""
        out = {}
        for g in channel_groups(model):
            acts = activations(model, data, g, self.images, self.seed)
            out[g.name] = per_channel_mean(acts if relu_site(model, g) else acts.abs())
        return out

    def compress(self, model, data=None):
        keep = {name: keep_highest(s, keep_count(len(s), self.fraction))
                for name, s in self.scores(model, data).items()}
        model = shrink(model, keep)
        return finetune(self, model, data, finetune_recipe(self, data))

# ------------------------------------------------------------------ L1-norm filters


def filter_l1(weight: torch.Tensor) -> torch.Tensor:
    """Sum of |w| of each output filter (Li et al. 2016, s_j = sum |K_l|)."""
    return weight.detach().abs().flatten(1).sum(1)


def group_l1(model: nn.Module, group: CoupledGroup) -> torch.Tensor:
    """The L1 norm of each class of a coupled group: the sum over its producers of the
    filters in that class (channels added together are scored together)."""
    scores = torch.zeros(group.width)
    for producer in group.producers:
        rows = group.rows(producer)
        mine = rows >= 0
        l1 = filter_l1(model.get_submodule(producer).weight)
        scores.index_add_(0, rows[mine], l1[mine].to(scores.dtype))
    return scores


def conv_coupled_groups(model: nn.Module, graph: ChannelGraph | None = None
                        ) -> list[CoupledGroup]:
    """The prunable traced groups whose producers are all convolutions (``graph``: the
    analysis of ``model``, if made already)."""
    found = traced_groups(model) if graph is None else graph.prunable()
    return [g for g in found
            if all(isinstance(model.get_submodule(p), nn.Conv2d) for p in g.producers)]


def traced_structure(model: nn.Module) -> tuple:
    """What tracing ``model`` depends on besides its classes' code: its class and config, and
    the name, class and tensor shapes of every module. A copy of a network has the same."""
    return (type(model), repr(getattr(model, "config", None)),
            tuple((name, type(m)) for name, m in model.named_modules()),
            tuple((key, tuple(value.shape) if isinstance(value, torch.Tensor) else None)
                  for key, value in model.state_dict().items()))


@dataclass
class L1Filter(TrainingMethod):
    """Remove the conv filters of smallest L1 norm, then retrain for ``epochs`` (Li et al.
    2016). Without retraining (``epochs=0``) it needs no data.

    The groups come from tracing the network: filters whose channels are added together (a
    residual stage) or moved by a concatenation or a shuffle go together, scored by the sum
    of their L1 norms."""
    id = "prune.l1_filter"
    reference = "Li, Kadav, Durdanovic, Samet, Graf 2016, Pruning Filters for Efficient ConvNets"
    sliders = {"fraction": (0.0, 0.95, 0.05), "epochs": (0, 5, 1)}
    smoke = {"epochs": 1}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = "a prunable channel group produced by convolutions (found by tracing)"

    fraction: float = knob(0.3, Real(0.0, 0.99))   # of the filters of each group removed
    # group name (its first producer) -> fraction, overriding ``fraction`` (e.g.
    # {"features.0": 0.5}); the paper prunes sensitive layers less
    layer_fractions: dict = knob({}, Mapping(Real(0.0, 0.99)))
    round_to: int = knob(1, Int(1, 1024))  # keep a multiple of this many filters (8: SIMD)
    # "greedy": rank each layer without the kernels of inputs already removed
    strategy: str = knob("independent", Choice(("independent", "greedy")))
    epochs: int = 1                        # retraining after the removal (0: none, no data)
    weight_decay: float = 5e-4

    # The last network traced, as (traced_structure, analysis): apply() asks supports and
    # check_model about the input, then compress about a private copy of it, and all three
    # share one trace (compress lets it go). None until then.
    _traced: ClassVar = None

    def analysis(self, model: nn.Module) -> ChannelGraph | None:
        """``dependency.analyze(model)``, reused while the same network (or a copy) is asked
        about again; None for a network without a config dict, which no file could rebuild
        (``surgery.traced_groups``)."""
        key = traced_structure(model)
        if self._traced is None or self._traced[0] != key:
            config = isinstance(getattr(model, "config", None), dict)
            self._traced = (key, analyze(model) if config else None)
        return self._traced[1]

    def conv_groups(self, model: nn.Module) -> list[CoupledGroup]:
        graph = self.analysis(model)
        return [] if graph is None else conv_coupled_groups(model, graph)

    def supports(self, model):
        return bool(self.conv_groups(model))

    def check_model(self, model):
        self.groups(model)

    def settings(self):
        return settings_without_training(self, self.epochs > 0)

    def groups(self, model: nn.Module) -> list[CoupledGroup]:
        """The prunable groups made by convolutions (in a ResNet-20: each block's conv1)."""
        found = self.conv_groups(model)
        unknown = set(self.layer_fractions) - {g.name for g in found}
        if unknown:
            raise ValueError(f"L1Filter.layer_fractions={dict(self.layer_fractions)!r}: "
                             f"{sorted(unknown)} are not prunable conv groups of "
                             f"{type(model).__name__}; allowed is any of "
                             f"{[g.name for g in found]}")
        return found

    def keep(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        """The filters of one layer's ``weight`` that stay."""
        return self.keep_scores(filter_l1(weight), name)

    def keep_scores(self, scores: torch.Tensor, name: str) -> torch.Tensor:
        fraction = self.layer_fractions.get(name, self.fraction)
        return keep_highest(scores, keep_count(len(scores), fraction, self.round_to))

    def compress(self, model, data=None):
        groups, graph = self.groups(model), self.analysis(model)
        self._traced = None                  # the network changes from here on
        if self.strategy == "independent":   # every group ranked on the original weights
            keep = {g.name: self.keep_scores(group_l1(model, g), g.name) for g in groups}
            model = shrink(model, keep, graph)
        else:    # group after group, on the weights left by the previous removal
            for step, name in enumerate(g.name for g in groups):
                graph = graph if step == 0 else analyze(model)
                group = next(g for g in conv_coupled_groups(model, graph) if g.name == name)
                model = shrink(model, {name: self.keep_scores(group_l1(model, group), name)},
                               graph)
        if not self.epochs:
            return model
        return finetune(self, model, data, finetune_recipe(self, data))


METHODS = (APoZ, Activity, Merge, L1Filter, LayerRemoval)
