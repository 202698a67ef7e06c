"""Pruning granularity (Mao et al. 2017; Anwar et al. 2015): the same budget pruned by
weight, vector, kernel, group or filter.

Every convolution weight (filters O x channels C x kh x kw) is cut into equal groups, scored by
their mean |w| (``l1``) or root mean square (``l2``), and the lowest groups are zeroed until
the layer has lost ``sparsity`` of its weights (within one group):

- ``weight``: single weights (0-D), the same mask as prune.magnitude;
- ``vector``: one row of a kernel, kw weights (1-D);
- ``kernel``: a whole kh x kw kernel (2-D), i.e. one input channel of one filter;
- ``group``: one input channel across a block of ``group_size`` consecutive filters, a block
  of group_size x (kh kw) in the im2col weight matrix (block-sparse GEMM; with group_size = O
  it is Anwar et al.'s feature-map pruning);
- ``filter``: a whole filter (3-D); its bias and BatchNorm scale and shift are masked too, so
  the channel outputs exactly zero and ``shrink_filters`` can remove it for real (surgery);
- ``strided``: the stride-``stride`` sub-lattices of a kernel (for stride 2, the weights
  (i, j) with the same i mod 2 and j mod 2): what stays of a kernel has zeros in a strided
  pattern, the intra-kernel strided sparsity of Anwar et al. Here each kernel keeps its own
  sub-lattices by norm; Anwar et al. search the pattern with particle filters.

Only convolutions are pruned (linear layers stay dense): granularity is a question about
convolution kernels, and the budget is theirs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from ..method import Choice, Int, Method, Real, clone_model, knob
from . import surgery

GRANULARITIES = ("weight", "vector", "kernel", "group", "filter", "strided")


def group_ids(shape: tuple[int, ...], granularity: str, group_size: int = 4,
              stride: int = 2) -> torch.Tensor:
    """For a conv weight of ``shape`` (O, C, kh, kw): the index of each weight's group."""
    o, c, kh, kw = (torch.arange(n).view([-1 if i == d else 1 for i in range(4)])
                    for d, n in enumerate(shape))
    n_o, n_c, n_kh, n_kw = shape
    kernel = o * n_c + c
    ids = {
        "weight": lambda: ((kernel * n_kh + kh) * n_kw + kw),
        "vector": lambda: (kernel * n_kh + kh).expand(*shape[:3], n_kw),
        "kernel": lambda: kernel,
        "group": lambda: (o // group_size) * n_c + c,
        "filter": lambda: o,
        "strided": lambda: (kernel * stride + kh % stride) * stride + kw % stride,
    }[granularity]()
    return ids.expand(shape).contiguous()


def group_scores(weight: torch.Tensor, ids: torch.Tensor, norm: str = "l1") -> tuple[
        torch.Tensor, torch.Tensor]:
    """(score, size) per group: mean |w| or root mean square of its weights.

    Means, not sums, so that groups of unequal size (the last block of filters, the strided
    sub-lattices of an odd kernel) compete fairly; for equal sizes the order is that of the
    group's L1 / L2 norm.
    """
    ids = ids.flatten()
    sizes = torch.bincount(ids).to(weight.dtype)
    values = weight.detach().abs().flatten() if norm == "l1" else weight.detach().flatten() ** 2
    sums = torch.zeros(len(sizes), dtype=weight.dtype).index_add_(0, ids, values)
    score = sums / sizes if norm == "l1" else (sums / sizes).sqrt()
    return score, sizes


def group_mask(weight: torch.Tensor, ids: torch.Tensor, sparsity: float,
               norm: str = "l1") -> torch.Tensor:
    """Mask zeroing the lowest-scored groups, as many as bring the zeroed weights closest to
    ``round(sparsity * n)``. Groups of one weight give exactly magnitude_mask (torch.topk)."""
    score, sizes = group_scores(weight, ids, norm)
    target = round(sparsity * weight.numel())
    cumulative = torch.cat([sizes.new_zeros(1), sizes[score.argsort(stable=True)].cumsum(0)])
    n_drop = int((cumulative - target).abs().argmin())
    dropped = torch.zeros(len(score), dtype=torch.bool)
    dropped[torch.topk(score, n_drop, largest=False).indices] = True
    return (~dropped[ids]).to(weight.dtype)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def norm_after(model: nn.Module, conv_name: str) -> nn.BatchNorm2d | None:
    """The BatchNorm that directly follows a convolution (registered right after it)."""
    names = [n for n, _ in model.named_modules()]
    following = names[names.index(conv_name) + 1:names.index(conv_name) + 2]
    module = model.get_submodule(following[0]) if following else None
    conv = model.get_submodule(conv_name)
    if isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels:
        return module
    return None


@torch.no_grad()
def shrink_filters(model: nn.Module) -> nn.Module:
    """The physically smaller network: every all-zero filter of a layer that surgery can
    shrink (a channel group's producer) is removed, with the next layer's inputs."""
    keep = {}
    for group in surgery.channel_groups(model):
        weight = model.get_submodule(group.name).weight
        alive = weight.flatten(1).abs().sum(1).nonzero().flatten()
        if 0 < len(alive) < len(weight):
            keep[group.name] = alive
    return surgery.shrink(model, keep) if keep else clone_model(model)


@dataclass
class Granularity(Method):
    """Prune conv weights to one budget at a chosen granularity (Mao et al. 2017)."""
    id = "prune.granularity"
    reference = ("Mao, Han, Pool, Li, Liu, Wang, Dally 2017, Exploring the Granularity of "
                 "Sparsity in Convolutional Neural Networks; Anwar, Hwang, Sung 2015, "
                 "Structured Pruning of Deep Convolutional Neural Networks")
    sliders = {"sparsity": (0.0, 0.99, 0.01), "group_size": (1, 32, 1)}
    effects = ("fewer_nonzeros", "fewer_bytes")
    requires = "Conv2d layers (linear layers stay dense)"

    sparsity: float = knob(0.5, Real(0.0, 1.0))
    granularity: str = knob("kernel", Choice(GRANULARITIES))
    # "l1" (mean |w|) | "l2" (root mean square)
    norm: str = knob("l1", Choice(("l1", "l2")))
    group_size: int = knob(4, Int(1, 1024))     # filters per block (granularity "group")
    stride: int = knob(2, Int(1, 1024))         # sub-lattice stride (granularity "strided")

    def supports(self, model):
        return bool(conv_layers(model))

    def settings(self) -> dict:
        shown = self.params()
        if self.granularity != "group":
            del shown["group_size"]
        if self.granularity != "strided":
            del shown["stride"]
        return shown

    def masks(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Conv layer name -> weight mask, from the layer's effective weights."""
        out = {}
        for name, conv in conv_layers(model):
            ids = group_ids(tuple(conv.weight.shape), self.granularity, self.group_size,
                            self.stride)
            out[name] = group_mask(conv.weight, ids, self.sparsity, self.norm)
        return out

    def compress(self, pruned: nn.Module, data=None) -> nn.Module:
        for name, mask in self.masks(pruned).items():
            conv = pruned.get_submodule(name)
            prune.custom_from_mask(conv, "weight", mask)
            if self.granularity == "filter":
                # A zero filter still emits its bias, and BatchNorm shifts even a zero: mask
                # those too, so the channel is exactly zero, as if it were not there.
                alive = mask.flatten(1).amax(1)
                norm = norm_after(pruned, name)
                for module, param in ((conv, "bias"), (norm, "weight"), (norm, "bias")):
                    if module is not None and getattr(module, param, None) is not None:
                        prune.custom_from_mask(module, param, alive)
        return pruned


# The methods this module registers in workbench.METHODS.
METHODS = (Granularity,)
