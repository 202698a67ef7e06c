"""Tensor decompositions of convolution kernels: Tucker-2, CP and block-term, each run as a
short sequence of smaller real convolutions, then fine-tuned.

A kxk convolution's kernel W (out, in, k, k) is a 4-way tensor. Three ways to write it with
fewer numbers, each of which is again a chain of convolutions:

- Tucker-2 (Kim et al. 2016): W ~ G x0 U x1 V, a small core G (r_out, r_in, k, k) between an
  input basis V (in x r_in) and an output basis U (out x r_out): a 1x1 convolution
  (in -> r_in), the core kxk convolution (r_in -> r_out, the layer's stride and padding), a 1x1
  convolution (r_out -> out, the layer's bias). Ranks per layer by VBMF on the mode-0 and mode-1
  unfoldings, as Kim et al. do (Nakajima et al.'s analytic empirical VBMF), or by the share of
  an unfolding's energy the kept singular values hold, or as a fixed fraction of the channels.
- CP (Lebedev et al. 2015): W ~ sum_r a_r o b_r o c_r o d_r, rank R: a 1x1 convolution
  (in -> R), a kx1 and a 1xk depthwise convolution (R groups), a 1x1 convolution (R -> out).
- Block term (Wang & Cheng 2016): a sum of B small Tucker-2 blocks, i.e. a Tucker-2 whose
  core is block-diagonal: 1x1 (in -> B r_in), a grouped kxk core (B groups), 1x1
  (B r_out -> out). Same outer cost as one Tucker of ranks B r, B times fewer core weights.

What we chose and why:

- Tucker-2 is computed by one-pass HOSVD (an SVD of each channel unfolding, the core by
  projection), in torch, not with tensorly's ``partial_tucker``: that is iterative (HOOI), and
  on trained-size kernels it is orders of magnitude slower than one pass (FIELD-NOTES has the
  times). The network is fine-tuned after anyway, and HOSVD's fit is close to the
  iterative one: the tests bound it against tensorly's ``partial_tucker`` error, and compare
  our factors with tensorly's reconstruction (``multi_mode_dot``).
- CP is fitted by our own alternating least squares (``tensor_tensors.cp_als``, SVD start,
  bounded sweeps, a small ridge against the divergence Lebedev et al. report): its error
  matches tensorly's ``parafac`` at the same sweeps, several times faster. Lebedev et al. fit
  by non-linear least squares; ALS is the common substitute. The fit error of every layer is
  kept in the attachment ``tensor_decomposition`` (``models.attached``).
- The block-term fit: Wang & Cheng reach the block-diagonal core through a low-rank plus
  group-sparse decomposition; we fix the block structure and fit it directly by alternating
  least squares from a greedy HOSVD start (each block the Tucker-2 of what the earlier ones
  leave), every step an exact least-squares update, so the error never grows.
- A layer is decomposed only if its chain costs at most ``1 - min_saving`` of the layer's
  multiplications (a 1x1 before a strided core runs at the input's resolution, and is counted
  so); grouped and 1x1 convolutions are left as they are. A chain is several convolutions, each
  reading and writing its activations, so a chain that saves a few MACs runs slower than the
  layer it replaces: the first convolution of a CIFAR network (3 input channels) is the usual
  case, and stays dense at the default ``min_saving``.

Speed: the chains' 1x1 and depthwise convolutions do few multiplications per byte they read,
so on a CPU their time falls less than their MACs do. In torch's default NCHW layout oneDNN
also converts each convolution's input and output to its own blocked layout and back, a cost
set by the activations, not the MACs, paid once per convolution of the chain; with the network
and its input in ``torch.channels_last`` those conversions go away. Time a decomposed network
against the dense one in the same layout. ``python -m workbench bench lowrank_tensor`` times
both layouts, and every layer against its chain, stage by stage.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..method import (LAYER_NAMES, Choice, Int, Real, TrainingMethod, check_layer_names,
                      chosen_layers, knob, plain_conv)
from ..models import attach, register_module, replace_module
from ..prune.structured import natural_images
from ..train import seeded
from .tensor_tensors import (block_term, cp_als, cp_cost, dense_cost, energy_rank,
                             evbmf_rank, layer_kernel, relative_error, singular_values,
                             tucker2, tucker_cost, unfold)

# ------------------------------------------------------------------ modules


def _conv_geometry(conv: nn.Conv2d) -> dict:
    return {"in_channels": conv.in_channels, "out_channels": conv.out_channels,
            "kernel_size": list(conv.kernel_size), "stride": list(conv.stride),
            "padding": list(conv.padding), "dilation": list(conv.dilation),
            "bias": conv.bias is not None}


@register_module
class Tucker2Conv(nn.Module):
    """A convolution as 1x1 (in -> B r_in), a kxk core with B groups (B r_in -> B r_out,
    the original stride, padding and dilation), 1x1 (B r_out -> out, the bias). ``blocks=1``
    is Tucker-2; ``blocks=B`` a block-term decomposition of B blocks."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=(1, 1),
                 padding=(0, 0), dilation=(1, 1), bias: bool = False, rank_in: int = 1,
                 rank_out: int = 1, blocks: int = 1):
        super().__init__()
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "kernel_size": list(kernel_size), "stride": list(stride),
                       "padding": list(padding), "dilation": list(dilation), "bias": bias,
                       "rank_in": rank_in, "rank_out": rank_out, "blocks": blocks}
        self.first = nn.Conv2d(in_channels, blocks * rank_in, 1, bias=False)
        self.core = nn.Conv2d(blocks * rank_in, blocks * rank_out, tuple(kernel_size),
                              tuple(stride), tuple(padding), tuple(dilation), groups=blocks,
                              bias=False)
        self.last = nn.Conv2d(blocks * rank_out, out_channels, 1, bias=bias)

    @classmethod
    def from_factors(cls, conv: nn.Conv2d, cores: torch.Tensor, us: torch.Tensor,
                     vs: torch.Tensor) -> "Tucker2Conv":
        """The chain computing ``sum_b cores[b] x0 us[b] x1 vs[b]`` with ``conv``'s geometry
        and bias: cores (B, r_out, r_in, kh, kw), us (B, out, r_out), vs (B, in, r_in)."""
        blocks, r_out, r_in = cores.shape[:3]
        layer = cls(**_conv_geometry(conv), rank_in=r_in, rank_out=r_out, blocks=blocks)
        layer.to(conv.weight.dtype)
        with torch.no_grad():
            layer.first.weight.copy_(vs.transpose(1, 2).reshape(blocks * r_in, -1)[..., None,
                                                                                   None])
            layer.core.weight.copy_(cores.reshape(blocks * r_out, r_in, *cores.shape[3:]))
            layer.last.weight.copy_(us.transpose(0, 1).reshape(us.shape[1], -1)[..., None,
                                                                                None])
            if conv.bias is not None:
                layer.last.bias.copy_(conv.bias)
        return layer

    def forward(self, x):
        return self.last(self.core(self.first(x)))


@register_module
class CPConv(nn.Module):
    """A convolution as four: 1x1 (in -> R), kx1 depthwise and 1xk depthwise (R groups, the
    original stride, padding and dilation split by axis), 1x1 (R -> out, the bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=(1, 1),
                 padding=(0, 0), dilation=(1, 1), bias: bool = False, rank: int = 1):
        super().__init__()
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "kernel_size": list(kernel_size), "stride": list(stride),
                       "padding": list(padding), "dilation": list(dilation), "bias": bias,
                       "rank": rank}
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
        self.first = nn.Conv2d(in_channels, rank, 1, bias=False)
        # zero padding splits exactly by axis: the vertical pass maps zero columns to zero
        self.vertical = nn.Conv2d(rank, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), groups=rank,
                                  bias=False)
        self.horizontal = nn.Conv2d(rank, rank, (1, kw), (1, sw), (0, pw), (1, dw),
                                    groups=rank, bias=False)
        self.last = nn.Conv2d(rank, out_channels, 1, bias=bias)

    @classmethod
    def from_factors(cls, conv: nn.Conv2d, factors: list[torch.Tensor]) -> "CPConv":
        """The chain computing the CP kernel of ``factors`` [a (out x R), b (in x R),
        c (kh x R), d (kw x R)] with ``conv``'s geometry and bias."""
        a, b, c, d = factors
        layer = cls(**_conv_geometry(conv), rank=a.shape[1])
        layer.to(conv.weight.dtype)
        with torch.no_grad():
            layer.first.weight.copy_(b.T[..., None, None])
            layer.vertical.weight.copy_(c.T[:, None, :, None])
            layer.horizontal.weight.copy_(d.T[:, None, None, :])
            layer.last.weight.copy_(a[..., None, None])
            if conv.bias is not None:
                layer.last.bias.copy_(conv.bias)
        return layer

    def forward(self, x):
        return self.last(self.horizontal(self.vertical(self.first(x))))


# ------------------------------------------------------------------ costs and layers


def eligible(module: nn.Module) -> bool:
    """A dense (ungrouped) convolution with a kernel larger than 1x1 and zero padding."""
    return plain_conv(module) and module.kernel_size[0] * module.kernel_size[1] > 1


@dataclass
class _Decomposition(TrainingMethod):
    """Shared by the three: which layers, the fine-tuning, the record of the fits."""
    layers: tuple | None = knob(None, LAYER_NAMES)
    # the share of a layer's MACs its chain must save for the layer to be decomposed
    min_saving: float = knob(0.25, Real(0.0, 0.99))
    epochs: int = 2
    lr: float = 0.01
    weight_decay: float = 5e-4

    def candidates(self, model: nn.Module) -> list[str]:
        return chosen_layers(model, eligible, self.layers)

    def supports(self, model):
        return any(eligible(m) for m in model.modules())

    def check_model(self, model):
        check_layer_names(self, "layers", model, kinds=(nn.Conv2d,))
        wrong = [n for n in self.layers or () if not eligible(model.get_submodule(n))]
        if wrong:
            raise ValueError(f"{type(self).__name__}.layers: {wrong} are not dense kxk "
                             "convolutions (groups=1, kernel larger than 1x1, zero padding)")

    def worth(self, chain_cost: int, conv: nn.Conv2d) -> bool:
        """Whether a chain of ``chain_cost`` multiplications per output pixel saves enough of
        ``conv``'s to replace it (``min_saving``; never a chain that costs as much)."""
        dense = dense_cost(conv)
        return chain_cost < dense and chain_cost <= (1 - self.min_saving) * dense

    def decompose(self, conv: nn.Conv2d) -> tuple[nn.Module, dict] | None:
        """The replacement of ``conv`` and what to record, or None to keep it."""
        raise NotImplementedError

    def compress(self, model, data=None):
        record = {}
        with seeded(self.seed):     # new layers draw (overwritten) initial weights
            for name in self.candidates(model):
                conv = model.get_submodule(name)
                made = self.decompose(conv)
                if made is not None:
                    replace_module(model, name, made[0].train(conv.training))
                    record[name] = made[1]
        attach(model, "tensor_decomposition", {"method": self.id, "layers": record})
        if self.epochs:
            self.fit(model, data, schedule="cosine", augment=natural_images(data))
        return model


# ------------------------------------------------------------------ methods


@dataclass
class Tucker(_Decomposition):
    """Tucker-2 of every dense kxk convolution (1x1 -> core kxk -> 1x1), by HOSVD, ranks by
    VBMF (Kim et al.), by energy share or as a fraction of the channels; then fine-tuned.
    A layer whose chain would not save ``min_saving`` of its MACs is kept."""
    id = "lowrank.tucker"
    reference = ("Kim, Park, Yoo, Choi, Yang, Shin 2016, Compression of Deep Convolutional "
                 "Neural Networks for Fast and Low Power Mobile Applications")
    requires = "a dense kxk convolution (groups=1, k > 1)"
    sliders = {"rank_ratio": (0.05, 1.0, 0.05), "energy": (0.5, 1.0, 0.01),
               "epochs": (0, 10, 1)}
    smoke = {"ranks_by": "ratio", "rank_ratio": 0.5, "epochs": 1}
    effects = ("fewer_macs", "smaller_module", "different_outputs")

    # "vbmf": Kim et al.'s choice; "energy": keep ``energy`` of each unfolding's squared
    # singular values; "ratio": ceil(rank_ratio x channels) on both sides
    ranks_by: str = knob("vbmf", Choice(("vbmf", "energy", "ratio")))
    energy: float = knob(0.9, Real(0.01, 1.0))
    rank_ratio: float = knob(0.5, Real(0.01, 1.0))

    def settings(self):
        hidden = {"vbmf": ("energy", "rank_ratio"), "energy": ("rank_ratio",),
                  "ratio": ("energy",)}[self.ranks_by]
        return {k: v for k, v in super().settings().items() if k not in hidden}

    def ranks(self, w: torch.Tensor) -> tuple[int, int]:
        """(rank_out, rank_in) of kernel ``w`` with these settings."""
        if self.ranks_by == "vbmf":
            ranks = [evbmf_rank(unfold(w, mode)) for mode in (0, 1)]
        elif self.ranks_by == "energy":
            ranks = [energy_rank(singular_values(w, mode), self.energy) for mode in (0, 1)]
        else:
            ranks = [math.ceil(self.rank_ratio * w.shape[mode]) for mode in (0, 1)]
        return tuple(min(max(r, 1), w.shape[mode]) for mode, r in enumerate(ranks))

    def decompose(self, conv):
        w = conv.weight.detach()
        r_out, r_in = self.ranks(w)
        if not self.worth(tucker_cost(conv, r_out, r_in), conv):
            return None
        core, u, v = tucker2(w, r_out, r_in)
        layer = Tucker2Conv.from_factors(conv, core[None], u[None], v[None])
        return layer, {"ranks": [r_out, r_in],
                       "error": relative_error(w, layer_kernel(layer))}


@dataclass
class CP(_Decomposition):
    """Rank-R CP of every dense kxk convolution as four convolutions (1x1, kx1 depthwise, 1xk
    depthwise, 1x1), fitted by ALS, then fine-tuned (Lebedev et al.).
    R = ceil(rank_ratio x out_channels); a layer whose chain would not save ``min_saving`` of
    its MACs is kept."""
    id = "lowrank.cp"
    reference = ("Lebedev, Ganin, Rakhuba, Oseledets, Lempitsky 2015, Speeding-up "
                 "Convolutional Neural Networks Using Fine-tuned CP-Decomposition")
    requires = "a dense kxk convolution (groups=1, k > 1)"
    sliders = {"rank_ratio": (0.05, 2.0, 0.05), "epochs": (0, 10, 1)}
    smoke = {"rank_ratio": 0.25, "iterations": 5, "epochs": 1}
    effects = ("fewer_macs", "smaller_module", "different_outputs")

    rank_ratio: float = knob(0.5, Real(0.01, 8.0))
    iterations: int = knob(100, Int(1, 10000))      # ALS sweeps at most
    # CP factors are badly conditioned: fine-tuning VGG-small at the Tucker rate (0.01) lowered
    # its accuracy in a trial; Lebedev et al. also fine-tune at a small rate
    lr: float = 0.003

    def decompose(self, conv):
        w = conv.weight.detach()
        rank = math.ceil(self.rank_ratio * conv.out_channels)
        if not self.worth(cp_cost(conv, rank), conv):
            return None
        factors, errors = cp_als(w, rank, self.iterations, seed=self.seed)
        return CPConv.from_factors(conv, factors), {"rank": rank, "error": min(errors),
                                                    "sweeps": len(errors)}


@dataclass
class BlockTerm(_Decomposition):
    """Block-term decomposition (Wang & Cheng): a sum of ``blocks`` Tucker-2 blocks of ranks
    ceil(rank_ratio x channels / blocks) each, i.e. 1x1 -> grouped kxk core -> 1x1, fitted by
    ALS (``sweeps``), then fine-tuned. ``blocks=1`` is Tucker-2 with those ranks."""
    id = "lowrank.block_term"
    reference = ("Wang, Cheng 2016, Accelerating Convolutional Neural Networks for Mobile "
                 "Applications (ACM Multimedia; block-term decomposition)")
    requires = "a dense kxk convolution (groups=1, k > 1)"
    sliders = {"rank_ratio": (0.05, 1.0, 0.05), "blocks": (1, 8, 1), "epochs": (0, 10, 1)}
    smoke = {"rank_ratio": 0.5, "blocks": 2, "sweeps": 2, "epochs": 1}
    effects = ("fewer_macs", "smaller_module", "different_outputs")

    blocks: int = knob(4, Int(1, 64))
    rank_ratio: float = knob(0.5, Real(0.01, 1.0))
    sweeps: int = knob(10, Int(0, 100))

    def block_ranks(self, conv: nn.Conv2d) -> tuple[int, int]:
        return tuple(max(1, math.ceil(self.rank_ratio * c / self.blocks))
                     for c in (conv.out_channels, conv.in_channels))

    def decompose(self, conv):
        w = conv.weight.detach()
        r_out, r_in = self.block_ranks(conv)
        if not self.worth(tucker_cost(conv, r_out, r_in, self.blocks), conv):
            return None
        cores, us, vs, errors = block_term(w, self.blocks, r_out, r_in, self.sweeps)
        return Tucker2Conv.from_factors(conv, cores, us, vs), {
            "blocks": self.blocks, "ranks": [r_out, r_in], "error": errors[-1]}


METHODS = (Tucker, CP, BlockTerm)
