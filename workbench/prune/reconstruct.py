"""Channel pruning with reconstruction of the next layer: LASSO + least squares (He et al.
2017), ThiNet (Luo et al. 2017), discrimination-aware pruning (Zhuang et al. 2018).

All three prune the *input* channels of a consumer layer (the outputs of the producer before
it: a ``surgery.ChannelGroup``), one group at a time in forward order, and fit the consumer's
weights so that its output stays close to the original network's. The regression data are
sampled feature maps, as in the papers: ``images`` images (``surgery.layer_io``, seeded) and
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

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import lars_path_gram
from torch import nn

from ..method import Method, clone_model
from ..train import Recipe, fit
from .magnitude import prunable_layers
from .surgery import ChannelGroup, channel_groups, layer_io, shrink

# ----------------------------------------------------------------- sampled feature maps


def sample_positions(n: int, height: int, width: int, positions: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (n, p) of ``positions`` distinct output positions per image."""
    p = min(positions, height * width)
    flat = torch.rand(n, height * width, generator=generator).argsort(1)[:, :p]
    return flat // width, flat % width


def conv_patches(x: torch.Tensor, conv: nn.Conv2d, rows, cols) -> torch.Tensor:
    """The input patches (n*p, C, kh*kw) that ``conv`` reads for the given output positions."""
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    ph, pw = conv.padding
    padded = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1)          # (n, H, W, C)
    dy = (torch.arange(kh) * dh).view(1, 1, kh, 1)
    dx = (torch.arange(kw) * dw).view(1, 1, 1, kw)
    r = rows[:, :, None, None] * sh + dy
    c = cols[:, :, None, None] * sw + dx
    image = torch.arange(len(x)).view(-1, 1, 1, 1)
    patches = padded[image, r, c]                                      # (n, p, kh, kw, C)
    return patches.permute(0, 1, 4, 2, 3).reshape(rows.numel(), x.shape[1], kh * kw)


def regression_samples(layer: nn.Module, group: ChannelGroup, x: torch.Tensor, y: torch.Tensor,
                       positions: int, generator: torch.Generator):
    """(patches (m, C, K), targets (m, O)): the consumer's inputs per channel and its outputs
    (the original network's, bias included) at sampled positions; one sample per image for a
    Linear consumer."""
    if isinstance(layer, nn.Linear):
        return x.reshape(len(x), -1, group.spatial), y
    rows, cols = sample_positions(len(x), y.shape[2], y.shape[3], positions, generator)
    image = torch.arange(len(x)).view(-1, 1)
    return conv_patches(x, layer, rows, cols), y[image, :, rows, cols].reshape(rows.numel(), -1)


def weight_per_channel(layer: nn.Module, channels: int) -> torch.Tensor:
    """The consumer's weight as (O, C, K): K inputs of each input channel."""
    w = layer.weight.detach()
    return w.reshape(w.shape[0], channels, -1)


def bias_of(layer: nn.Module) -> torch.Tensor | None:
    return None if layer.bias is None else layer.bias.detach()


def contribution_gram(patches: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """G[c, d] = sum z_c z_d and b[c] = sum z_c y over all samples and outputs (float64).

    ``targets`` are what the channels must explain (the output minus the bias). Computed in
    chunks of samples: the contributions themselves (C x m x O) need not fit in memory.
    """
    channels = patches.shape[1]
    gram = torch.zeros(channels, channels, dtype=torch.float64)
    zy = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(patches), chunk):
        z = torch.einsum("mck,ock->cmo", patches[start:start + chunk].double(), weight.double())
        z = z.reshape(channels, -1)
        gram += z @ z.T
        zy += z @ targets[start:start + chunk].double().flatten()
    return gram, zy


def design(patches: torch.Tensor, targets: torch.Tensor, bias: bool):
    """The normal equations (a'a, a'y) of regressing the outputs on every channel's patches
    (and a constant column when the consumer has a bias), float64. Any subset of channels is
    then solved from sub-blocks, without touching the samples again."""
    a = patches.reshape(len(patches), -1).double()
    if bias:
        a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
    return a.T @ a, a.T @ targets.double()


def columns_of(keep: list[int], size: int, bias: bool) -> torch.Tensor:
    """Columns of the design that belong to the kept channels (``size`` = K each)."""
    cols = (torch.tensor(keep)[:, None] * size + torch.arange(size)).flatten()
    return torch.cat([cols, torch.tensor([-1])]) if bias else cols


def least_squares(ata, aty, prior=None, ridge: float = 0.0) -> torch.Tensor:
    """argmin_w ||a w - y||^2 + lam ||w - prior||^2 with lam = ridge * mean(diag(a'a)).

    ridge = 0: the least-squares solution (torch.linalg.lstsq, which also copes with dead,
    all-zero channels). A small ridge keeps the weights near the original ones where the
    samples do not determine them (a Linear consumer sees one sample per image).
    """
    if ridge == 0:
        return torch.linalg.lstsq(ata, aty).solution
    lam = ridge * ata.diagonal().mean()
    eye = torch.eye(len(ata), dtype=ata.dtype)
    return torch.linalg.solve(ata + lam * eye, aty + lam * prior.double())


def reconstruct_weights(patches, targets, keep, weight, bias=None, ridge: float = 0.0,
                        normal=None):
    """New consumer weight (O, k, K) of the kept channels (and bias) by least squares: the
    outputs (bias included) regressed on the kept channels' patches (and a constant, so the
    mean of what was removed moves into the bias). ``normal``: ``design(...)``, if known."""
    ata, aty = normal or design(patches, targets, bias is not None)
    cols = columns_of(keep, patches.shape[2], bias is not None)
    prior = weight[:, keep].reshape(len(weight), -1).T
    if bias is not None:
        prior = torch.cat([prior, bias[None]])
    solution = least_squares(ata[cols][:, cols], aty[cols], prior, ridge).float().T
    if bias is not None:
        return solution[:, :-1].reshape(len(weight), len(keep), -1), solution[:, -1]
    return solution.reshape(len(weight), len(keep), -1), None


# ----------------------------------------------------------------- channel selection


def lasso_select(gram: torch.Tensor, zy: torch.Tensor, n_samples: int, count: int,
                 return_alpha: bool = False):
    """He et al.: min ||y - sum beta_c z_c||^2 / (2n) + alpha |beta|_1, alpha raised until at
    most ``count`` betas are nonzero. The LARS-lasso path (sklearn, from the Gram matrix) gives
    every alpha where the support changes, so the smallest such alpha is found exactly; if a
    variable left the path there, the channels that entered earliest fill the budget."""
    alphas, _, coefs = lars_path_gram(zy.numpy(), gram.numpy(), n_samples=n_samples,
                                      method="lasso")
    nonzero = coefs != 0
    knot = max(k for k in range(len(alphas)) if nonzero[:, k].sum() <= count)
    chosen = list(np.flatnonzero(nonzero[:, knot]))
    first = np.where(nonzero.any(1), nonzero.argmax(1), len(alphas))   # knot of entry
    entered = list(np.argsort(first, kind="stable"))
    energy = list(np.argsort(-gram.diagonal().numpy(), kind="stable"))
    for c in entered + energy:      # dead channels never enter: ranked by energy last
        if len(chosen) == count:
            break
        if c not in chosen:
            chosen.append(c)
    chosen = sorted(int(c) for c in chosen)
    return (chosen, float(alphas[knot])) if return_alpha else chosen


def thinet_select(gram: torch.Tensor, count: int) -> list[int]:
    """Luo et al.: greedily grow the removed set T, each time adding the channel that least
    increases ||sum_{c in T} z_c||^2 = 1_T' G 1_T; the remaining ``count`` channels stay."""
    channels = gram.shape[0]
    removed, cross = [], torch.zeros(channels, dtype=gram.dtype)
    while channels - len(removed) > count:
        cost = gram.diagonal() + 2 * cross            # increase of the error when adding c
        cost[removed] = float("inf")
        c = int(cost.argmin())
        removed.append(c)
        cross += gram[:, c]
    return [c for c in range(channels) if c not in removed]


def thinet_scale(gram: torch.Tensor, zy: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """Luo et al.'s w = (X'X)^-1 X'y: one least-squares factor per kept channel."""
    return torch.linalg.lstsq(gram[keep][:, keep], zy[keep, None]).solution[:, 0]


def consumer_function(layer: nn.Module):
    """f(x, weight (O, C, K)) -> the consumer's output on full inputs, weights swapped in."""
    if isinstance(layer, nn.Linear):
        return lambda x, w: F.linear(x.flatten(1), w.reshape(len(w), -1), layer.bias)
    return lambda x, w: F.conv2d(x, w.reshape(layer.weight.shape[0], -1, *layer.kernel_size),
                                 layer.bias, layer.stride, layer.padding, layer.dilation)


def dcp_select(patches, targets, weight, count: int, consume, aux_x, labels, head,
               discrimination: float = 1.0, steps: int = 3, lr: float = 0.01,
               ridge: float = 0.0):
    """Zhuang et al.'s greedy selection (their Algorithm 2) for one consumer.

    Loss L(W) = ||y - sum_c z_c(W)||^2 / ||y||^2 (reconstruction on the sampled positions)
    + discrimination * cross-entropy of the auxiliary ``head`` on the consumer's full output.
    Starting from no channel (W = 0), repeat: add the channel whose weights have the largest
    gradient norm ||dL/dW_c||_F, then solve for the selected weights (least squares for the
    reconstruction, then ``steps`` Adam steps on L). Returns (kept channels, weight (O, k, K)).
    """
    energy = targets.pow(2).sum()

    def loss(w):
        rec = (targets - torch.einsum("mck,ock->mo", patches, w)).pow(2).sum() / energy
        if discrimination == 0:
            return rec
        return rec + discrimination * F.cross_entropy(head(consume(aux_x, w)), labels)

    chosen, w = [], torch.zeros_like(weight)
    scale, normal = weight.abs().mean(), design(patches, targets, False)
    while len(chosen) < count:
        w.requires_grad_(True)
        grad, = torch.autograd.grad(loss(w), w)
        norms = grad.pow(2).sum((0, 2))
        norms[chosen] = -1
        chosen = sorted(chosen + [int(norms.argmax())])
        w = torch.zeros_like(weight)
        w[:, chosen] = reconstruct_weights(patches, targets, chosen, weight, None, ridge,
                                           normal)[0]
        # A few steps on one weight tensor and cached samples (the paper's "solve by SGD"):
        # not network training, so not train.fit, which iterates a network over a Dataset.
        part = w[:, chosen].clone().requires_grad_(True)
        optimizer = torch.optim.Adam([part], lr=lr * float(scale))
        for _ in range(steps if discrimination else 0):   # least squares is optimal alone
            full = torch.zeros_like(weight).index_copy(1, torch.tensor(chosen), part)
            optimizer.zero_grad()
            loss(full).backward()
            optimizer.step()
        w = torch.zeros_like(weight).index_copy(1, torch.tensor(chosen), part.detach())
    return chosen, w[:, chosen]


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

        def grab(module, inputs, output):
            out["y"] = output
            raise _Stop
        handle = self.network.get_submodule(self.layer).register_forward_hook(grab)
        try:
            self.network(x)
        except _Stop:
            pass
        finally:
            handle.remove()
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
    needs_data = True
    sliders = {"keep": (0.1, 1.0, 0.05), "positions": (1, 50, 1)}
    smoke = {"images": 64, "positions": 4}

    keep: float = 0.6          # fraction of each group's channels that stays
    images: int = 500          # images whose feature maps are sampled
    positions: int = 10        # output positions sampled per image (the papers: 10)
    seed: int = 0

    def validate(self):
        self._check_range("keep", 0.01, 1.0)
        self._check_range("images", 1, 1_000_000)
        self._check_range("positions", 1, 100_000)
        self._check_range("seed", 0, 2 ** 31 - 1)

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError(f"{type(self).__name__} samples feature maps: pass the training data")
        reference = clone_model(model).eval()         # the original: targets, never changed
        current = clone_model(model).eval()
        for index, group in enumerate(channel_groups(model)):
            current = self.prune_group(current, reference, group, data, index)
        return current.train(model.training)

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

    ridge: float = 0.1         # least squares pulled this much toward the original weights

    def validate(self):
        super().validate()
        self._check_range("ridge", 0.0, float("inf"))

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
    loss (Zhuang et al. 2018)."""
    id = "prune.dcp"
    reference = ("Zhuang, Tan, Zhuang, Liu, Guo, Wu, Huang, Zhu 2018, Discrimination-aware "
                 "Channel Pruning for Deep Neural Networks")
    sliders = {**_Reconstruction.sliders, "discrimination": (0.0, 10.0, 0.1)}
    smoke = {"images": 64, "positions": 4, "aux_images": 16, "head_epochs": 1, "steps": 0,
             "keep": 0.3}

    images: int = 300
    ridge: float = 0.1            # as ChannelLasso's, in each least-squares solve
    discrimination: float = 1.0   # weight of the auxiliary classifier's loss (the paper's 1)
    aux_images: int = 128         # images on which the discriminative loss is computed
    head_epochs: int = 5          # training of each auxiliary head (train.fit)
    steps: int = 3                # Adam steps on the full loss after each least-squares solve
    lr: float = 0.01              # Adam step, relative to the mean |weight| of the layer

    def validate(self):
        super().validate()
        self._check_range("ridge", 0.0, float("inf"))
        self._check_range("discrimination", 0.0, float("inf"))
        self._check_range("aux_images", 1, 1_000_000)
        self._check_range("head_epochs", 0, 1000)
        self._check_range("steps", 0, 10_000)
        self._check_range("lr", 0.0, 10.0)

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
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            head = make_head(reference.get_submodule(group.consumer), last[1].out_features)
        aux = AuxiliaryClassifier(reference, group.consumer, head)   # our own copy: frozen
        subset = data.subset(min(self.images, len(data)), seed=self.seed)
        fit(aux, subset, Recipe(epochs=self.head_epochs, lr=0.2, batch_size=64,
                                weight_decay=0.0, schedule="cosine", seed=self.seed),
            progress=False)
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
