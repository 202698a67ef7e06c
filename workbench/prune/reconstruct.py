"""Channel pruning with reconstruction of the next layer: LASSO + least squares (He et al.
2017), ThiNet (Luo et al. 2017), discrimination-aware pruning (Zhuang et al. 2018).

All three prune the *input* channels of a consumer layer (the outputs of the producer before
it: a ``surgery.ChannelGroup``), one group at a time in forward order, and fit the consumer's
weights so that its output stays close to the original network's. The regression data are
sampled feature maps, as in the papers: ``images`` images (``hooks.layer_io``, seeded) and
``positions`` random output positions per image. At one sampled position the consumer computes

    y[o] = sum_c  x_c . W[o, c]        (x_c: channel c's k x k patch, or its inputs of a Linear)

so channel c *contributes* z_c[o] = x_c . W[o, c], and the Gram matrix of those contributions
(``contribution_gram``) is all that LASSO and ThiNet need to choose channels.

Inputs come from the network pruned so far, targets from the original network (He et al.'s
whole-model pruning), so each layer also makes up for the error of the layers before it.
Each group is shrunk with ``surgery.shrink`` (a physically smaller network) and the consumer's
weights are then overwritten with the reconstructed ones. Residual networks: only the channels
inside each block (conv1 -> conv2) are groups, so the shortcuts keep their width.

Choices where the papers leave room (the reasons are at the functions):
- LASSO: the whole LARS-lasso path from the Gram matrix (sklearn's ``lars_path_gram``, the
  LassoLars algorithm) gives the smallest lambda with at most the budget of nonzero betas
  exactly, instead of a search over lambda. The least squares refit the bias too and are
  pulled slightly toward the original weights (``ridge``).
- ThiNet: every output channel at each sampled position is a sample (the paper draws one
  output channel per position); the scaling leaves the bias as it is, as in the paper.
- DCP: one auxiliary head per pruned layer, on the consumer's output (the paper puts one at
  the end of each stage and also fine-tunes the network with it before pruning the stage);
  after each greedy step the selected weights are solved by least squares for the
  reconstruction, then ``steps`` Adam steps on the full loss (the paper: SGD on the full loss).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..hooks import hooked, layer_io
from ..method import Int, Method, Real, clone_model, knob
from ..train import Recipe, fit, quiet, seeded
from .channel_selection import (bias_of, columns_of, consumer_function, contribution_gram,
                                conv_patches, dcp_select, design, lasso_select, least_squares,
                                reconstruct_weights, regression_samples, sample_positions,
                                thinet_scale, thinet_select, weight_per_channel)
from .magnitude import prunable_layers
from .structured import has_channel_groups
from .surgery import channel_groups, shrink

__all__ = ["AuxiliaryClassifier", "ChannelLasso", "DCP", "LayerSample", "ThiNet", "bias_of",
           "columns_of", "consumer_function", "contribution_gram", "conv_patches",
           "dcp_select", "design", "lasso_select", "least_squares", "make_head",
           "reconstruct_weights", "regression_samples", "sample_positions", "thinet_scale",
           "thinet_select", "weight_per_channel"]

# ----------------------------------------------------------------- DCP's auxiliary classifier


class _Stop(Exception):
    """Raised by a forward hook to end a pass once the wanted layer has run."""


class AuxiliaryClassifier(nn.Module):
    """A frozen network read up to ``layer``, then a small trainable ``head`` on that layer's
    output: what DCP attaches inside the network to make the features there discriminative."""

    def __init__(self, network: nn.Module, layer: str, head: nn.Module):
        super().__init__()
        self.network, self.layer, self.head = network.requires_grad_(False), layer, head

    def train(self, mode: bool = True):
        # fit() switches to train mode: only the head's BN may learn, the network stays eval.
        self.training = mode
        self.head.train(mode)
        self.network.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = {}

        def grab(module, inputs, output, name):
            out["y"] = output
            raise _Stop

        with hooked(self.network, {self.layer: grab}):
            try:
                self.network(x)
            except _Stop:
                pass
        return out["y"]

    def forward(self, x):
        return self.head(self.features(x))


def make_head(layer: nn.Module, classes: int) -> nn.Module:
    """DCP's head: BN, ReLU, global average pooling (of a conv output), then a Linear."""
    if isinstance(layer, nn.Linear):
        width = layer.out_features
        return nn.Sequential(nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, classes))
    width = layer.out_channels
    return nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))


# ----------------------------------------------------------------- the methods


@dataclass
class LayerSample:
    """What one consumer is reconstructed from."""
    layer: nn.Module          # the consumer in the network pruned so far
    patches: torch.Tensor     # (m, C, K) its inputs per channel at the sampled positions
    targets: torch.Tensor     # (m, O) the original network's outputs there, bias included
    inputs: torch.Tensor      # its whole inputs (n images), for DCP's discriminative loss
    labels: torch.Tensor      # the labels of those images

    @property
    def weight(self) -> torch.Tensor:
        return weight_per_channel(self.layer, self.patches.shape[1])

    @property
    def bias(self) -> torch.Tensor | None:
        return bias_of(self.layer)

    def explained(self) -> torch.Tensor:
        """The part of the targets the channels must explain (the bias taken off)."""
        return self.targets if self.bias is None else self.targets - self.bias


@dataclass
class _Reconstruction(Method):
    """Shared loop: every channel group in forward order, sampled, selected, reconstructed."""
    sliders = {"keep": (0.1, 1.0, 0.05), "positions": (1, 50, 1)}
    smoke = {"images": 64, "positions": 4}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = "channel groups (a model's channel_groups())"

    keep: float = knob(0.6, Real(0.01, 1.0))      # fraction of each group's channels that stays
    images: int = knob(500, Int(1, 1_000_000))    # images whose feature maps are sampled
    # output positions sampled per image (the papers: 10)
    positions: int = knob(10, Int(1, 100_000))
    seed: int = knob(0, Int(0, 2 ** 31 - 1))

    def tags(self):
        return replace(super().tags(), needs_data=True)   # it samples feature maps

    def supports(self, model):
        return has_channel_groups(model)

    def compress(self, model, data=None):
        reference = clone_model(model).eval()         # the original: targets, never changed
        current = model.eval()
        for index, group in enumerate(channel_groups(model)):
            current = self.prune_group(current, reference, group, data, index)
        return current

    def sample(self, current, reference, group, data, index) -> LayerSample:
        name, layer = group.consumer, current.get_submodule(group.consumer)
        # A Linear consumer sees one "position" per image: it gets ``positions`` times as many
        # images, so that its regression has as many rows as a convolution's.
        images = self.images * (self.positions if isinstance(layer, nn.Linear) else 1)
        inputs = layer_io(current, data, [name], images, seed=self.seed)[name]["input"]
        outputs = layer_io(reference, data, [name], images, seed=self.seed)[name]["output"]
        labels = data.subset(min(images, len(data)), seed=self.seed).labels
        generator = torch.Generator().manual_seed(self.seed * 1009 + index)
        patches, targets = regression_samples(layer, group, inputs, outputs, self.positions,
                                              generator)
        return LayerSample(layer, patches, targets, inputs, labels)

    def prune_group(self, current, reference, group, data, index) -> nn.Module:
        """Shrink one group, then put the reconstructed weights into its consumer."""
        count = max(1, round(self.keep * group.width(current)))
        sample = self.sample(current, reference, group, data, index)
        keep, weight, bias = self.select(sample, count, group, reference, data)
        smaller = shrink(current, {group.name: torch.tensor(keep)})
        consumer = smaller.get_submodule(group.consumer)
        with torch.no_grad():
            consumer.weight.copy_(weight.reshape(consumer.weight.shape))
            if bias is not None:
                consumer.bias.copy_(bias)
        return smaller.eval()

    def select(self, sample: LayerSample, count: int, group, reference, data):
        """-> (kept channels, consumer weight (O, k, K) of those channels, consumer bias)."""
        raise NotImplementedError


@dataclass
class ChannelLasso(_Reconstruction):
    """Choose channels by LASSO on their contributions, then refit the next layer by least
    squares (He, Zhang, Sun 2017)."""
    id = "prune.channel_lasso"
    reference = ("He, Zhang, Sun 2017, Channel Pruning for Accelerating Very Deep Neural "
                 "Networks")

    # least squares pulled this much toward the original weights
    ridge: float = knob(0.1, Real(0.0, 1e6))   # finite: an infinite ridge zeroes every solve

    def select(self, sample, count, group, reference, data):
        gram, zy = contribution_gram(sample.patches, sample.weight, sample.explained())
        keep = lasso_select(gram, zy, sample.targets.numel(), count)
        weight, bias = reconstruct_weights(sample.patches, sample.targets, keep, sample.weight,
                                           sample.bias, self.ridge)
        return keep, weight, bias


@dataclass
class ThiNet(_Reconstruction):
    """Greedily remove the channels whose summed contribution is smallest, then rescale each
    kept channel by least squares (Luo, Wu, Lin 2017)."""
    id = "prune.thinet"
    reference = ("Luo, Wu, Lin 2017, ThiNet: A Filter Level Pruning Method for Deep Neural "
                 "Network Compression")

    def select(self, sample, count, group, reference, data):
        gram, zy = contribution_gram(sample.patches, sample.weight, sample.explained())
        keep = thinet_select(gram, count)
        scale = thinet_scale(gram, zy, keep).float()
        return keep, sample.weight[:, keep] * scale[None, :, None], sample.bias


@dataclass
class DCP(_Reconstruction):
    """Greedy channel selection by the gradient of reconstruction + auxiliary classification
    loss (Zhuang et al. 2018).

    The network itself is not trained: each auxiliary head is (``head_epochs`` of train.fit
    on the frozen original network's features, a fixed recipe), and ``lr`` is the step of the
    few Adam steps on one layer's selected weights."""
    id = "prune.dcp"
    reference = ("Zhuang, Tan, Zhuang, Liu, Guo, Wu, Huang, Zhu 2018, Discrimination-aware "
                 "Channel Pruning for Deep Neural Networks")
    sliders = {**_Reconstruction.sliders, "discrimination": (0.0, 10.0, 0.1)}
    smoke = {"images": 64, "positions": 4, "aux_images": 16, "head_epochs": 1, "steps": 0,
             "keep": 0.3}

    images: int = 300
    ridge: float = knob(0.1, Real(0.0, 1e6))  # as ChannelLasso's, in each least-squares solve
    # weight of the auxiliary classifier's loss (the paper's 1)
    discrimination: float = knob(1.0, Real(0.0, 1e6))
    # images on which the discriminative loss is computed
    aux_images: int = knob(128, Int(1, 1_000_000))
    head_epochs: int = knob(5, Int(0, 1000))  # training of each auxiliary head (train.fit)
    # Adam steps on the full loss after each least-squares solve
    steps: int = knob(3, Int(0, 10_000))
    lr: float = knob(0.01, Real(0.0, 10.0))   # Adam step, relative to the layer's mean |weight|

    def settings(self):
        if self.discrimination:
            return self.params()
        # Without the classifier the selection is pure reconstruction: no head, no Adam steps.
        ignored = {"aux_images", "head_epochs", "steps", "lr"}
        return {k: v for k, v in self.params().items() if k not in ignored}

    def head(self, group, reference, data) -> nn.Module:
        """The auxiliary classifier on the consumer's output, trained on the original network's
        features there; the last layer already gives class scores and needs none."""
        last = prunable_layers(reference)[-1]
        if last[0] == group.consumer or self.discrimination == 0:
            return nn.Identity()
        with seeded(self.seed):
            head = make_head(reference.get_submodule(group.consumer), last[1].out_features)
        aux = AuxiliaryClassifier(reference, group.consumer, head)   # our own copy: frozen
        subset = data.subset(min(self.images, len(data)), seed=self.seed)
        with quiet():       # a helper's training inside one step: no bars of its own
            fit(aux, subset, Recipe(epochs=self.head_epochs, lr=0.2, batch_size=64,
                                    weight_decay=0.0, schedule="cosine", seed=self.seed))
        return head.eval().requires_grad_(False)

    def select(self, sample, count, group, reference, data):
        head = self.head(group, reference, data)
        n = min(self.aux_images, len(sample.inputs))
        keep, weight = dcp_select(sample.patches, sample.explained(), sample.weight, count,
                                  consumer_function(sample.layer), sample.inputs[:n],
                                  sample.labels[:n], head, self.discrimination, self.steps,
                                  self.lr, self.ridge)
        return keep, weight, sample.bias


METHODS = (ChannelLasso, ThiNet, DCP)
