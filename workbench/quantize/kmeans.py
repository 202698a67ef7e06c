"""Scalar k-means weight sharing (Gong et al. 2014) and trained centroids (Han et al. 2016).

Each layer's weights are clustered into ``k`` values; every weight is replaced by its cluster's
centroid, so the layer stores a codebook of ``k`` floats and one ``log2(k)``-bit index per
weight (``codec.encode`` finds the few distinct values and packs the indices).

Initialization matters (Deep Compression, sec. 3, fig. 4): ``random`` (Forgy: k of the
layer's weights drawn at random), ``density`` (the k quantiles at (i + 1/2)/k of the weights'
CDF, dense where the weights are) and ``linear`` (evenly spaced from min to max). Han et al.
found linear best, since it keeps centroids for the few large weights that matter most; it is
the default here.

How the clustering is computed. In one dimension the clusters of Lloyd's algorithm are runs of
the *sorted* weights split at the midpoints between neighbouring centroids, so one iteration
is a ``searchsorted`` of k-1 midpoints and differences of a prefix sum: the same Lloyd
iterations as scikit-learn's ``KMeans(n_init=1, init=<array>)`` (empty clusters relocated to
the farthest weight, as scikit-learn does; the tests check both agree), at O(k log n) per
iteration after one sort instead of O(n k). Measured on LeNet-300-100's 784x300 layer, one
thread, up to 300 iterations: ~0.01 s for any k from 2 to 256, against 1 s (k=16) to 73 s
(k=256) for scikit-learn's Lloyd. Only the former fits a widget's half-second budget. Lloyd
runs to its fixed point (assignments unchanged) or 300 iterations, whichever comes first.

Pruned weights (zeros, or ``weight_mask`` of ``torch.nn.utils.prune``) are not clustered and
stay zero, so k-means chains after pruning as in Deep Compression's pipeline.

``TrainedKMeans`` then fine-tunes the centroids (Han et al. 2016, sec. 3, eq. 3): the layer weight
becomes ``core.SharedWeights``, ``codebook[indices]`` with the codebook as the trainable
tensor, so autograd hands every centroid the sum of the gradients of its weights and
``train.fit`` updates it. Indices stay fixed. A pruned layer's codebook holds 0 in slot 0,
put back to 0 after every step (``KeepPrunedZero``), so pruned weights stay zero. Our
choices where the paper leaves them open: biases train too by default (they are few and not
shared, and adapting them costs nothing); SGD with momentum 0.9, cosine schedule, no weight
decay, lr 1e-3 (the summed gradient of a centroid is large: lr 1e-2 diverges on LeNet-300-100).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

from ..method import (TRAIN_DOMAINS, Choice, Flag, Int, Method, Optional, Tags, TrainingMethod,
                      knob)
from ..train import Hook
from .core import SharedWeights, fold, quantizable_layers, quantize_weights

INITS = ("random", "density", "linear")


# ------------------------------------------------------------------ plain functions

def init_centroids(w: torch.Tensor, k: int, init: str, seed: int = 0) -> torch.Tensor:
    """The ``k`` initial centroids (sorted, float64) of the values ``w`` by ``init``.

    At most as many centroids as ``w`` has distinct values.
    """
    return torch.from_numpy(_init_sorted(_sorted(w), int(k), init, seed))


def _sorted(w: torch.Tensor) -> np.ndarray:
    return np.sort(w.detach().flatten().double().numpy())


def _init_sorted(s: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    # numpy, not torch, below: per-call overhead decides the time on arrays of k values
    distinct = s[np.r_[True, s[1:] != s[:-1]]]
    if len(distinct) <= k:
        return distinct
    if init == "linear":          # evenly spaced between the extremes
        return np.linspace(s[0], s[-1], k)
    if init == "density":         # evenly spaced on the CDF's y axis, centres of k bins
        position = (np.arange(k) + 0.5) / k * (len(s) - 1)   # np.quantile's "linear" rule
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, len(s) - 1)
        return s[low] + (position - low) * (s[high] - s[low])
    if init == "random":          # Forgy: k of the (distinct) weights, drawn with the seed
        rng = np.random.default_rng(seed)
        return np.sort(distinct[rng.choice(len(distinct), k, replace=False)])
    raise ValueError(f"init={init!r}: allowed is one of {', '.join(map(repr, INITS))}")


def assign(w: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of the sorted ``codebook`` for every value of ``w``."""
    c = codebook.double()
    midpoints = (c[1:] + c[:-1]) / 2
    return torch.searchsorted(midpoints, w.detach().double().contiguous())


def _relocate_empty(s, c, counts, sums):
    """Move each empty cluster's centroid to the weight farthest from its own centroid, and
    take that weight out of its old cluster (scikit-learn's rule for empty clusters)."""
    empty = np.flatnonzero(counts == 0)
    labels = np.repeat(np.arange(len(c)), counts)
    distances = (s - c[labels]) ** 2
    if distances.max() == 0:
        return
    far = np.argpartition(distances, -len(empty))[-len(empty):]
    for cluster, i in zip(empty, far):
        sums[labels[i]] -= s[i]
        counts[labels[i]] -= 1
        sums[cluster], counts[cluster] = s[i], 1


def _lloyd_sorted(s: np.ndarray, c: np.ndarray, max_iter: int) -> np.ndarray:
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    c, bounds = np.sort(c), None
    edges = np.zeros(len(c) + 1, dtype=np.int64)     # cluster j is s[edges[j]:edges[j + 1]]
    edges[-1] = len(s)
    for _ in range(max_iter):
        new_bounds = s.searchsorted((c[1:] + c[:-1]) / 2, side="right")
        if bounds is not None and np.array_equal(new_bounds, bounds):
            break
        bounds = edges[1:-1] = new_bounds
        counts, sums = np.diff(edges), prefix[edges[1:]] - prefix[edges[:-1]]
        if (counts == 0).any():
            _relocate_empty(s, c, counts, sums)
            bounds = None   # the relocated centroids change the runs
        c = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c))
    return c


def lloyd_1d(w: torch.Tensor, centroids: torch.Tensor, max_iter: int = 300) -> torch.Tensor:
    """Lloyd's k-means on scalars from ``centroids``: the converged codebook (sorted, float64).

    Works on the sorted values, where each cluster is a run between two midpoints: per
    iteration one ``searchsorted`` and a prefix-sum difference. Stops when the clusters no
    longer change (a fixed point: every centroid is the mean of its cluster) or after
    ``max_iter`` iterations.
    """
    return torch.from_numpy(_lloyd_sorted(_sorted(w), centroids.double().numpy(), max_iter))


def kmeans_codebook(w: torch.Tensor, k: int, init: str = "linear", seed: int = 0,
                    max_iter: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """(codebook, indices): scalar k-means of ``w``; ``codebook[indices]`` approximates ``w``.

    The codebook is sorted, in ``w``'s dtype, and holds only centroids that some weight uses
    (fewer than ``k`` only if ``w`` has fewer than ``k`` distinct values). ``indices`` has
    ``w``'s shape; each weight goes to its nearest centroid.
    """
    s = _sorted(w)
    centroids = _lloyd_sorted(s, _init_sorted(s, int(k), init, seed), max_iter)
    # in w's dtype (the values the weights will take); sorted, float32 twins merged
    codebook = torch.unique(torch.from_numpy(centroids).to(w.dtype))
    c = codebook.double().numpy()
    indices = np.searchsorted((c[1:] + c[:-1]) / 2, w.detach().double().flatten().numpy())
    used = np.flatnonzero(np.bincount(indices, minlength=len(c)))
    remap = np.zeros(len(c), dtype=np.int64)
    remap[used] = np.arange(len(used))                    # drop centroids left without weights
    return codebook[torch.from_numpy(used)], torch.from_numpy(remap[indices]).reshape(w.shape)


def share_weights(weight: torch.Tensor, k: int, init: str = "linear", seed: int = 0,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer weight sharing that leaves pruned (zero) weights out of the clustering.

    Returns (codebook, indices) with ``codebook[indices]`` the shared weight. If the layer has
    zeros, ``codebook[0]`` is 0.0 and the zeros point to it; the ``k`` centroids follow.
    """
    kept = weight != 0
    if bool(kept.all()):
        return kmeans_codebook(weight, k, init, seed)
    codebook = torch.zeros(1, dtype=weight.dtype)
    indices = torch.zeros(weight.shape, dtype=torch.long)
    if bool(kept.any()):
        centroids, idx = kmeans_codebook(weight[kept], k, init, seed)
        codebook = torch.cat([codebook, centroids])
        indices[kept] = idx + 1
    return codebook, indices


def plain_weights(model: nn.Module) -> nn.Module:
    """Fold parametrizations and pruning masks of ``model`` into plain weights (in place):
    a pruned weight becomes an exact zero, which the clustering leaves out."""
    fold(model)
    for _, module in quantizable_layers(model):
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")
    return model


def layer_ks(model: nn.Module, k: int, conv_k: int | None = None) -> dict[str, int]:
    """Layer name -> number of shared weights: ``conv_k`` for convolutions if given, else k."""
    return {name: int(conv_k if conv_k is not None and isinstance(m, nn.Conv2d) else k)
            for name, m in quantizable_layers(model)}


class KeepPrunedZero(Hook):
    """After every step, put slot 0 (the pruned weights' value) of these codebooks back to 0.

    A projection rather than a gradient hook: a hook on the codebook would stay on the
    parameter after ``fold`` (which reuses the parameter object for the plain weight).
    """

    def __init__(self, codebooks: list[torch.Tensor]):
        self.codebooks = codebooks

    def after_step(self, model):
        for book in self.codebooks:
            book[0] = 0


# ------------------------------------------------------------------ methods

@dataclass
class KMeans(Method):
    """Share ``k`` weights per layer, found by scalar k-means (Gong et al. 2014), no retraining.

    ``conv_k`` gives convolutions their own k (Deep Compression gives conv layers more bits
    than fc layers); None uses ``k`` everywhere. ``seed`` matters only for ``init="random"``.
    """
    id = "quant.kmeans"
    reference = ("Gong, Liu, Yang, Bourdev 2014, Compressing Deep Convolutional Networks "
                 "using Vector Quantization; inits as compared by Han, Mao, Dally 2016, "
                 "Deep Compression (sec. 3, fig. 4)")
    sliders = {"k": (2, 256, 1)}
    effects = ("fewer_bytes", "different_outputs")

    k: int = knob(16, Int(2, 2 ** 16))
    conv_k: int | None = knob(None, Optional(Int(2, 2 ** 16)))
    init: str = knob("linear", Choice(INITS))
    seed: int = knob(0, Int(0, 2 ** 63 - 1))
    # Lloyd's iterations stop at convergence, usually within a few dozen
    max_iter: int = knob(300, Int(1, 10_000))

    def settings(self) -> dict:
        out = {"k": int(self.k), "init": self.init}
        if self.conv_k is not None:
            out["conv_k"] = int(self.conv_k)
        if self.init == "random":
            out["seed"] = self.seed
        return out

    def tags(self) -> Tags:
        """Nominal index bits per weight, log2(k) (``k``: fc layers, or all without conv_k)."""
        return replace(super().tags(), bits_per_weight=math.log2(self.k))

    def codebooks(self, model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Layer name -> (codebook, indices) of the plain (pruning folded) weights of model."""
        ks = layer_ks(model, self.k, self.conv_k)
        return {name: share_weights(m.weight.detach(), ks[name], self.init, int(self.seed))
                for name, m in quantizable_layers(model)}

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        shared = plain_weights(model)
        with torch.no_grad():
            for name, (codebook, indices) in self.codebooks(shared).items():
                shared.get_submodule(name).weight.copy_(codebook[indices])
        return shared


@dataclass
class TrainedKMeans(KMeans, TrainingMethod):
    """k-means weight sharing, then the centroids fine-tuned by the summed gradients of their
    weights (Han et al. 2016, Deep Compression, sec. 3, eq. 3); indices fixed, biases train too
    unless ``train_biases=False``. SGD with momentum, cosine learning rate, ``weight_decay``
    0 by default. ``seed`` (also k-means' with ``init="random"``) orders the batches.

    ``half_biases`` rounds the biases of the shared (Conv2d and Linear) layers to float16 after
    training, so that the file holds them in two bytes each: once the weights are pruned and
    shared, a LeNet's float32 biases are a noticeable share of its file. BatchNorm's stay
    float32. The paper counts weights only, and says nothing of biases.
    """
    id = "quant.trained_kmeans"
    reference = ("Han, Mao, Dally 2016, Deep Compression: Compressing Deep Neural Networks "
                 "with Pruning, Trained Quantization and Huffman Coding")
    sliders = {"k": (2, 256, 1), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}

    k: int = 8
    epochs: int = 2
    lr: float = 1e-3
    seed: int = knob(0, TRAIN_DOMAINS["seed"])     # the training's range, not k-means' own
    train_biases: bool = knob(True, Flag())
    half_biases: bool = knob(False, Flag())
    augment: bool = knob(False, Flag())   # fine-tune on shifted (CIFAR: also flipped) images

    def settings(self) -> dict:   # the seed also orders the training batches: always shown
        return {**super().settings(), "seed": self.seed, "epochs": int(self.epochs),
                "lr": self.lr, "batch_size": int(self.batch_size),
                "weight_decay": self.weight_decay, "train_biases": self.train_biases,
                # shown only when on, so that earlier results keep their settings (and keys)
                **({"half_biases": True} if self.half_biases else {}),
                **({"augment": True} if self.augment else {}),
                **self.teacher_settings()}

    def share(self, model: nn.Module) -> tuple[nn.Module, KeepPrunedZero]:
        """``model`` (plain weights) with every layer weight parametrized as
        ``SharedWeights(indices, codebook)``, in place; only codebooks (and biases) train.
        Also returns the training hook that keeps pruned weights at zero."""
        codebooks = self.codebooks(model)
        pruned = {name: bool((m.weight == 0).any()) for name, m in quantizable_layers(model)}
        quantize_weights(model, lambda name, m: SharedWeights(codebooks[name][1],
                                                              codebooks[name][0]))
        for p in model.parameters():
            p.requires_grad_(self.train_biases)
        books = {name: m.parametrizations.weight.original
                 for name, m in quantizable_layers(model)}
        for book in books.values():
            book.requires_grad_(True)
        return model, KeepPrunedZero([books[name] for name in books if pruned[name]])

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        shared, keep_zero = self.share(plain_weights(model))
        if self.epochs:
            self.fit(shared, data, hooks=[keep_zero], schedule="cosine", augment=self.augment)
        for p in shared.parameters():
            p.requires_grad_(True)
        out = fold(shared.eval())
        if self.half_biases:
            round_biases_to_half(out)
        return out


def round_biases_to_half(model: nn.Module) -> None:
    """The Conv2d and Linear biases of ``model`` rounded to float16 values, in place; a bias
    beyond float16's range is an error, not an infinity."""
    limit = torch.finfo(torch.float16).max
    biased = [(name, m) for name, m in quantizable_layers(model) if m.bias is not None]
    for name, m in biased:          # all checked before any is changed
        largest = float(m.bias.detach().abs().max())
        if largest > limit:
            raise ValueError(f"half_biases=True: a bias of {name} is {largest:.3g}, beyond "
                             f"float16's {limit:g}")
    with torch.no_grad():
        for _, m in biased:
            m.bias.copy_(m.bias.half().float())


METHODS = (KMeans, TrainedKMeans)
