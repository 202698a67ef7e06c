"""Neuron and channel pruning that returns a physically smaller network: APoZ, low-activity
elimination, data-free merging, L1-norm filters, layer removal.

Every method here decides which channels of each ``surgery.channel_groups`` group stay and
hands that to ``surgery.shrink``, which builds real smaller layers (the consumer's inputs go
too). Residual networks are pruned only inside their blocks (conv1 -> conv2), since the
channels a block adds to its shortcut must keep the shortcut's width (Li et al. 2016).

Activations are read after the ReLU, where zeros and activity mean something: for VGG the
``nn.ReLU`` module after each BatchNorm, for ResNet-20 ``bn1`` followed by the block's
functional ReLU, for the LeNets the ``nn.ReLU`` after each hidden Linear. Caffe's LeNet-5 has
no ReLU after its convolutions, so APoZ leaves them alone and Activity uses mean |a| there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from ..codec import plain_state_dict
from ..method import Method, clone_model
from ..train import Recipe, fit
from .surgery import ChannelGroup, channel_groups, layer_io, shrink

# ------------------------------------------------------------------ shared pieces


def require_data(method: Method, data) -> None:
    if data is None:
        raise ValueError(f"{type(method).__name__}.apply needs data (the training Dataset): "
                         "it measures activations or fine-tunes")


def finetune(model: nn.Module, data, epochs: int, lr: float, seed: int) -> nn.Module:
    """Retrain the pruned network in place with the house loop (cosine decay from ``lr``)."""
    if epochs == 0:
        return model
    cifar = data.name == "cifar10"
    if cifar:   # channels_last is 1.5-2x faster for these convs on CPU (as zoo.train does)
        model = model.to(memory_format=torch.channels_last)
    fit(model, data, Recipe(epochs=int(epochs), lr=lr, schedule="cosine", augment=cifar,
                            seed=seed))
    return model.to(memory_format=torch.contiguous_format).eval()


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
    if models.name_of(model) == "resnet20":    # BasicBlock.forward: F.relu(bn1(conv1(x)))
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


def settings_without_finetune(method: Method) -> dict:
    params = method.params()
    if params.get("finetune_epochs") == 0:
        params.pop("lr", None)
    return params

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
class APoZ(Method):
    """Remove channels that are mostly zero after their ReLU (Hu et al. 2016)."""
    id = "prune.apoz"
    reference = ("Hu, Peng, Tai, Tang 2016, Network Trimming: A Data-Driven Neuron Pruning "
                 "Approach towards Efficient Deep Architectures")
    sliders = {"std_factor": (0.0, 3.0, 0.1), "rounds": (1, 5, 1), "finetune_epochs": (0, 5, 1)}
    needs_data = True
    smoke = {"images": 128, "finetune_epochs": 1}

    std_factor: float = 1.0         # remove APoZ > mean + std_factor * std
    rounds: int = 1                 # measure -> trim -> fine-tune, this many times
    finetune_epochs: int = 1        # per round
    lr: float = 0.01
    images: int = 512               # examples APoZ is measured on
    seed: int = 0

    def validate(self):
        self._check_range("std_factor", 0.0, 10.0)
        self._check_whole("rounds", 1, 50)
        self._check_whole("finetune_epochs", 0, 1000)
        self._check_range("lr", 1e-9, 10.0)
        self._check_whole("images", 1, 10**6)
        self._check_whole("seed", 0, 2**31)

    def settings(self):
        return settings_without_finetune(self)

    def scores(self, model: nn.Module, data, seed: int = 0) -> dict[str, torch.Tensor]:
        """APoZ of every channel group that has a ReLU, by producer name."""
        return {g.name: apoz(activations(model, data, g, self.images, seed))
                for g in channel_groups(model) if relu_site(model, g)}

    def apply(self, model, data=None):
        require_data(self, data)
        pruned = clone_model(model)
        for r in range(int(self.rounds)):
            keep = {name: apoz_keep(s, self.std_factor)
                    for name, s in self.scores(pruned, data, self.seed + r).items()}
            pruned = shrink(pruned, keep)
            pruned = finetune(pruned, data, self.finetune_epochs, self.lr, self.seed + r)
        return pruned

# ------------------------------------------------------------------ low activity


@dataclass
class Activity(Method):
    """Remove the channels of lowest mean activation per layer (Polyak & Wolf 2015)."""
    id = "prune.activity"
    reference = ("Polyak, Wolf 2015, Channel-Level Acceleration of Deep Face Representations")
    sliders = {"fraction": (0.0, 0.95, 0.05), "finetune_epochs": (0, 5, 1)}
    needs_data = True
    smoke = {"images": 128, "finetune_epochs": 1}

    fraction: float = 0.3           # of each layer's channels removed
    finetune_epochs: int = 1
    lr: float = 0.01
    images: int = 512
    seed: int = 0

    def validate(self):
        self._check_range("fraction", 0.0, 0.99)
        self._check_whole("finetune_epochs", 0, 1000)
        self._check_range("lr", 1e-9, 10.0)
        self._check_whole("images", 1, 10**6)
        self._check_whole("seed", 0, 2**31)

    def settings(self):
        return settings_without_finetune(self)

    def scores(self, model: nn.Module, data) -> dict[str, torch.Tensor]:
        """Mean activation per channel; mean |a| where no ReLU follows (signed means of a
        linear response say nothing about how much a channel is used)."""
        out = {}
        for g in channel_groups(model):
            acts = activations(model, data, g, self.images, self.seed)
            out[g.name] = per_channel_mean(acts if relu_site(model, g) else acts.abs())
        return out

    def apply(self, model, data=None):
        require_data(self, data)
        pruned = clone_model(model)
        keep = {name: keep_highest(s, keep_count(len(s), self.fraction))
                for name, s in self.scores(pruned, data).items()}
        pruned = shrink(pruned, keep)
        return finetune(pruned, data, self.finetune_epochs, self.lr, self.seed)

# ------------------------------------------------------------------ data-free merging


def squared_distances(w: torch.Tensor) -> torch.Tensor:
    """||w_i - w_j||^2 for all row pairs, in float64 and without the matmul shortcut, so that
    exact twins are at distance exactly 0."""
    w = w.double()
    return torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def merge_saliency(w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """s[i, j] = ||w_i - w_j||^2 * ||a_j||^2: the damage of removing neuron j and adding its
    outgoing weights a_j to neuron i (Srinivas & Babu 2015, eq. 6). Rows of ``w_in`` are the
    incoming weights (bias included), rows of ``w_out`` the outgoing ones. Diagonal: inf."""
    s = squared_distances(w_in) * w_out.double().pow(2).sum(1)[None, :]
    return s.fill_diagonal_(float("inf"))


def merge_neurons(w_in: torch.Tensor, w_out: torch.Tensor,
                  count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``count`` neurons greedily, least saliency first. Returns the kept indices and
    the outgoing weights (rows: neurons, all of them) with each twin's share added in."""
    out = w_out.clone()
    dist = squared_distances(w_in)          # fixed: incoming weights never change
    s = merge_saliency(w_in, w_out)
    alive = torch.ones(len(w_in), dtype=torch.bool)
    for _ in range(count):
        i, j = divmod(int(torch.argmin(s)), len(w_in))
        out[i] += out[j]
        alive[j] = False
        # Only a_i changed: refresh the saliencies of merging i away, retire j.
        s[:, i] = dist[:, i] * out[i].double().pow(2).sum()
        s[i, i] = float("inf")
        s[~alive, :] = float("inf")
        s[:, j] = float("inf")
    return torch.nonzero(alive).flatten(), out


@dataclass
class Merge(Method):
    """Merge near-duplicate fully connected neurons, without data (Srinivas & Babu 2015)."""
    id = "prune.merge"
    reference = "Srinivas, Babu 2015, Data-free Parameter Pruning for Deep Neural Networks"
    sliders = {"fraction": (0.0, 0.95, 0.05), "count": (0, 250, 1)}
    archs = ("lenet300", "lenet5")          # the nets with hidden fully connected layers

    fraction: float = 0.5           # of each hidden FC layer's neurons removed
    count: int = 10                 # or this many per layer
    by: str = "fraction"            # "fraction" | "count"

    def validate(self):
        self._check_choice("by", ("fraction", "count"))
        self._check_range("fraction", 0.0, 0.99)
        self._check_whole("count", 0, 10**6)

    def settings(self):
        return {"by": self.by, self.by: getattr(self, self.by)}

    def removed(self, width: int) -> int:
        n = round(self.fraction * width) if self.by == "fraction" else int(self.count)
        return min(n, width - 1)

    def apply(self, model, data=None):
        return self.merge(model)[0]

    def merge(self, model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """The merged network and, per layer, the original indices of the surviving neurons
        (``shrink(model, keep)`` gives the same survivors without the merging, to compare)."""
        pruned, kept = clone_model(model), {}
        # One layer at a time: a layer's consumer is the next layer's producer, whose incoming
        # weights must be read after the previous merge has removed its dead inputs. (Its
        # rows, hence neuron indices, are untouched by the previous shrink.)
        for g in channel_groups(pruned):
            producer = pruned.get_submodule(g.name)
            if not isinstance(producer, nn.Linear):
                continue
            state = plain_state_dict(pruned)
            w_in = torch.cat([state[f"{g.name}.weight"], state[f"{g.name}.bias"][:, None]], 1)
            consumer = state[f"{g.consumer}.weight"]
            keep, w_out = merge_neurons(w_in, consumer.T, self.removed(len(w_in)))
            with torch.no_grad():
                pruned.get_submodule(g.consumer).weight.copy_(w_out.T)
            pruned, kept[g.name] = shrink(pruned, {g.name: keep}), keep
        return pruned, kept

# ------------------------------------------------------------------ L1-norm filters


def filter_l1(weight: torch.Tensor) -> torch.Tensor:
    """Sum of |w| of each output filter (Li et al. 2016, s_j = sum |K_l|)."""
    return weight.detach().abs().flatten(1).sum(1)


@dataclass
class L1Filter(Method):
    """Remove the conv filters of smallest L1 norm, then retrain (Li et al. 2016)."""
    id = "prune.l1_filter"
    reference = "Li, Kadav, Durdanovic, Samet, Graf 2016, Pruning Filters for Efficient ConvNets"
    sliders = {"fraction": (0.0, 0.95, 0.05), "finetune_epochs": (0, 5, 1)}
    needs_data = True               # for the retraining (finetune_epochs=0 needs none)
    archs = ("lenet5", "vgg_small", "resnet20")
    smoke = {"finetune_epochs": 1}

    fraction: float = 0.3           # of the filters of each conv layer removed
    # producer name -> fraction, overriding ``fraction`` (e.g. {"features.0": 0.5}); the
    # paper prunes sensitive layers less
    layer_fractions: dict = field(default_factory=dict)
    round_to: int = 1               # keep a multiple of this many filters (8: SIMD-friendly)
    strategy: str = "independent"   # "greedy": ignore kernels of already removed inputs
    finetune_epochs: int = 1
    lr: float = 0.01
    seed: int = 0

    def validate(self):
        self._check_range("fraction", 0.0, 0.99)
        if not isinstance(self.layer_fractions, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and 0 <= v <= 0.99
                for k, v in self.layer_fractions.items()):
            raise ValueError(f"L1Filter.layer_fractions={self.layer_fractions!r}: allowed is a "
                             "dict of layer name -> fraction from 0 to 0.99")
        self._check_whole("round_to", 1, 1024)
        self._check_choice("strategy", ("independent", "greedy"))
        self._check_whole("finetune_epochs", 0, 1000)
        self._check_range("lr", 1e-9, 10.0)
        self._check_whole("seed", 0, 2**31)

    def settings(self):
        return settings_without_finetune(self)

    def groups(self, model: nn.Module) -> list[ChannelGroup]:
        """Groups produced by a convolution (only the inner conv1 of each residual block)."""
        found = [g for g in channel_groups(model)
                 if isinstance(model.get_submodule(g.name), nn.Conv2d)]
        unknown = set(self.layer_fractions) - {g.name for g in found}
        if unknown:
            raise ValueError(f"L1Filter.layer_fractions names {sorted(unknown)}; the prunable "
                             f"conv layers are {[g.name for g in found]}")
        return found

    def keep(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        fraction = self.layer_fractions.get(name, self.fraction)
        return keep_highest(filter_l1(weight), keep_count(len(weight), fraction, self.round_to))

    def apply(self, model, data=None):
        if self.finetune_epochs:
            require_data(self, data)
        pruned = clone_model(model)
        groups = self.groups(pruned)
        if self.strategy == "independent":   # every layer ranked on the original weights
            keep = {g.name: self.keep(pruned.get_submodule(g.name).weight, g.name)
                    for g in groups}
            pruned = shrink(pruned, keep)
        else:    # layer after layer, on the weights left by the previous removal
            for g in groups:
                weight = pruned.get_submodule(g.name).weight
                pruned = shrink(pruned, {g.name: self.keep(weight, g.name)})
        return finetune(pruned, data, self.finetune_epochs, self.lr, self.seed)

# ------------------------------------------------------------------ layer removal


def removable_blocks(model: nn.Module) -> list[tuple[int, int]]:
    """(stage, block) of the ResNet blocks whose input and output shapes are equal: every
    block but the first of a stage (which changes width and stride)."""
    return [(s, b) for s, stage in enumerate(model.stages) for b in range(1, len(stage))]


def without_block(model: nn.Module, stage: int, block: int) -> nn.Module:
    """A new ResNet-20 without block ``(stage, block)``: a shorter ``blocks_per_stage`` list
    and ``inner`` list, the state dict re-keyed so later blocks move up by one."""
    config = {**model.config, "blocks_per_stage": list(model.config["blocks_per_stage"]),
              "inner": list(model.config["inner"])}
    config["blocks_per_stage"][stage] -= 1
    del config["inner"][sum(model.config["blocks_per_stage"][:stage]) + block]
    state = {}
    for key, value in plain_state_dict(model).items():
        parts = key.split(".")
        if parts[0] == "stages" and int(parts[1]) == stage and int(parts[2]) >= block:
            if int(parts[2]) == block:
                continue
            parts[2] = str(int(parts[2]) - 1)
        state[".".join(parts)] = value.clone()
    smaller = models.build("resnet20", **config)
    smaller.load_state_dict(state)
    return smaller.train(model.training)


@torch.no_grad()
def subset_cost(model: nn.Module, batches: list, criterion: str) -> float:
    """Mean cross-entropy, or error rate, of ``model`` (eval mode) on cached batches."""
    model.eval()
    total, n = 0.0, 0
    for x, y in batches:
        logits = model(x)
        total += (F.cross_entropy(logits, y, reduction="sum").item() if criterion == "loss"
                  else (logits.argmax(1) != y).sum().item())
        n += len(y)
    return total / n


def greedy_block_removal(model: nn.Module, batches: list, blocks: int,
                         criterion: str = "loss") -> tuple[nn.Module, list[dict]]:
    """Remove ``blocks`` blocks one by one, each time the one whose removal raises the cost
    least. Returns the smaller net and the path: which block went (its original name, and
    ``at``: its index in the net of that step, for without_block) and the cost after it."""
    origin = [list(range(len(stage))) for stage in model.stages]
    path = [{"removed": None, "at": None, "depth": depth_of(model),
             "cost": subset_cost(model, batches, criterion)}]
    for _ in range(blocks):
        candidates = removable_blocks(model)
        if not candidates:
            break
        trials = [(subset_cost(without_block(model, s, b), batches, criterion), s, b)
                  for s, b in candidates]
        cost, s, b = min(trials)
        model = without_block(model, s, b)
        path.append({"removed": f"stages.{s}.{origin[s].pop(b)}", "at": (s, b),
                     "depth": depth_of(model), "cost": cost})
    return model, path


def depth_of(model: nn.Module) -> int:
    """Weighted layers of a ResNet: stem + 2 per block + head (ResNet-20: 20)."""
    return 2 + 2 * sum(model.config["blocks_per_stage"])


@dataclass
class LayerRemoval(Method):
    """Remove the residual blocks whose removal costs least, greedily (ThiNet's remark)."""
    id = "prune.layer"
    reference = ("Luo, Wu, Lin 2017, ThiNet (remark on removing whole layers); seed 000 "
                 "notes; greedy removal of residual blocks")
    sliders = {"blocks": (0, 6, 1), "finetune_epochs": (0, 5, 1)}
    needs_data = True
    archs = ("resnet20",)
    smoke = {"images": 64, "finetune_epochs": 1}

    blocks: int = 2                 # residual blocks removed (each: 2 conv layers)
    criterion: str = "loss"         # "loss" | "accuracy": the cost measured on the subset
    images: int = 512               # training examples the cost is measured on
    finetune_epochs: int = 1
    lr: float = 0.01
    seed: int = 0

    def validate(self):
        self._check_whole("blocks", 0, 6)
        self._check_choice("criterion", ("loss", "accuracy"))
        self._check_whole("images", 1, 10**6)
        self._check_whole("finetune_epochs", 0, 1000)
        self._check_range("lr", 1e-9, 10.0)
        self._check_whole("seed", 0, 2**31)

    def settings(self):
        return settings_without_finetune(self)

    def path(self, model: nn.Module, data) -> tuple[nn.Module, list[dict]]:
        """The smaller net (not fine-tuned) and the greedy path, for a depth/accuracy plot."""
        require_data(self, data)
        if models.name_of(model) != "resnet20":
            raise ValueError(f"LayerRemoval applies to resnet20, not {models.name_of(model)}")
        batches = list(data.subset(min(int(self.images), len(data)), seed=self.seed).loader(256))
        return greedy_block_removal(clone_model(model), batches, int(self.blocks),
                                    self.criterion)

    def apply(self, model, data=None):
        smaller, _ = self.path(model, data)
        return finetune(smaller, data, self.finetune_epochs, self.lr, self.seed)


METHODS = (APoZ, Activity, Merge, L1Filter, LayerRemoval)
