"""Low-rank layers from matrix factorizations: truncated SVD (Denton et al. 2014), spatially
separable filters (Jaderberg et al. 2014) and channel decomposition (Zhang et al. 2016).

Each method replaces chosen layers by two smaller real layers (``matrix_tensors``:
``LowRankLinear``, ``LowRankConv2d``, ``SeparableConv2d``), so the state dict holds the
factors, the codec stores them and ``measure`` counts the MACs of the two children:

- ``lowrank.svd``: a Linear W (m x n) becomes n -> k -> m with the truncated SVD, k(m + n)
  MACs per row instead of mn, the best rank-k matrix (Eckart-Young). ``kinds="conv"`` or
  ``"all"`` also treats convolutions through their flattened kernel (out x in*kh*kw): a kxk
  conv to k channels then a 1x1, the weights-only counterpart of ``lowrank.channel``. Denton
  et al. approximate convolutions with finer schemes (monochromatic, biclustering) that are
  not here; for dense layers they use this SVD.
- ``lowrank.separable``: Jaderberg et al.'s scheme 2, a kh x kw conv as a kh x 1 conv to r
  channels then a 1 x kw conv, fitted to the original filters. The filter reconstruction is
  solved in closed form (the SVD of the reshaped kernel, see ``separable_factors``), exact
  where Jaderberg et al. iterate. Their data-driven variant is not done.
- ``lowrank.channel``: Zhang et al.'s linear channel decomposition, fitted to the layer's
  responses on ``images`` training images (``positions`` random positions each, the paper's
  sampling): the d' principal directions of the responses give d' filters plus a 1x1 conv.
  The responses all come from the original network in one pass (the paper's symmetric
  reconstruction); its nonlinear (ReLU-aware) solution and asymmetric reconstruction are not
  done.

The rank of each layer is set by ``by``: ``"rank"`` (the same ``rank`` everywhere, at most the
layer's full rank), ``"keep"`` (that share of each layer's full rank) or ``"energy"`` (the
smallest rank keeping that share of the squared singular values, for channel of the response
variance). A layer whose factors would hold as many weights as it does stays as it is: it
would cost more and approximate worse. All three may fine-tune the network after
(``epochs``, 0 by default, then no data is needed except by ``lowrank.channel``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import (LAYER_NAMES, Choice, Int, Real, TrainingMethod, check_layer_names,
                      clone_model, knob, layers_of, plain_conv)
from ..models import replace_module
from ..train import seeded
from .matrix_tensors import (LowRankConv2d, LowRankLinear, SeparableConv2d, channel_factors,
                             conv_matrix, rank_from, response_pca,
                             sampled_responses, separable_matrix, singular_values, svd)

RANK_RULES = ("rank", "keep", "energy")


@dataclass
class _Factorization(TrainingMethod):
    """Shared: the rank rule, the layer choice, the replacement and the optional fine-tune."""
    sliders = {"rank": (1, 128, 1), "keep": (0.02, 1.0, 0.02), "energy": (0.5, 1.0, 0.005)}
    effects = ("fewer_macs", "smaller_module", "fewer_bytes", "different_outputs")

    by: str = knob("rank", Choice(RANK_RULES))      # which knob sets each layer's rank
    rank: int = knob(16, Int(1, 1 << 20))
    # shares above 0: a share of 0 would mean "rank 0", which no layer can have
    keep: float = knob(0.25, Real(1e-6, 1.0))        # share of each layer's full rank
    energy: float = knob(0.95, Real(1e-6, 1.0))      # share of the spectrum's energy kept
    layers: tuple[str, ...] | None = knob(None, LAYER_NAMES)  # None: all eligible
    epochs: int = 0                                  # fine-tuning after the factorization
    lr: float = 0.01

    # -- which layers
    def eligible(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def candidates(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        chosen = layers_of(model)
        if self.layers is not None:
            chosen = [(n, m) for n, m in chosen if n in self.layers]
        return [(n, m) for n, m in chosen if self.eligible(m)]

    def supports(self, model):
        return any(self.eligible(m) for _, m in layers_of(model))

    def check_model(self, model):
        if self.layers is None:
            return
        check_layer_names(self, "layers", model)
        wrong = [n for n in self.layers if not self.eligible(model.get_submodule(n))]
        if wrong:
            raise ValueError(f"{type(self).__name__}.layers: {wrong} cannot be factorized by "
                             f"{self.id}, which needs {self.requires}")

    def settings(self) -> dict:
        out = {"by": self.by, self.by: getattr(self, self.by)}
        if self.layers is not None:
            out["layers"] = list(self.layers)
        if self.epochs:
            out.update(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                       weight_decay=self.weight_decay, seed=self.seed)
        return {**out, **self.teacher_settings()}

    def rank_of(self, energies: torch.Tensor) -> int:
        return rank_from(energies, self.by, self.rank, self.keep, self.energy)

    # -- the work
    def factorize(self, model: nn.Module, data) -> list[dict]:
        """Replace the chosen layers of ``model`` in place; one row per candidate layer."""
        raise NotImplementedError

    def plan(self, model: nn.Module, data=None) -> list[dict]:
        """Per candidate layer: its shape, full rank, the rank chosen, the share of the
        spectrum kept, and whether it is factorized (the model is untouched)."""
        self.check_model(model)
        if data is None and self.tags().needs_data:
            raise ValueError(f"{self.id} samples the layers' responses: pass the training set "
                             "as plan(model, data)")
        with seeded(self.seed):
            return self.factorize(clone_model(model).eval(), data)

    def compress(self, model, data=None):
        with seeded(self.seed):   # new layers draw initial weights (overwritten) from torch's RNG
            rows = self.factorize(model, data)
        # the layers the user named must not all come back silently unchanged (a slider may
        # push one of several past its break-even rank: that one stays dense, see plan())
        if self.layers is not None and not any(r["factorized"] for r in rows):
            raise ValueError(f"{type(self).__name__}.layers: none of {list(self.layers)} would "
                             "shrink at these settings (the factors would hold as many weights "
                             "as the layer); choose a lower rank, keep or energy")
        if self.epochs:
            self.fit(model, data, schedule="cosine")
        return model


def _row(name: str, module: nn.Module, full: int, rank: int, energies: torch.Tensor,
         params: int) -> dict:
    kept = float(energies[:rank].sum() / energies.sum()) if energies.sum() > 0 else 1.0
    weights = module.weight.numel()
    return {"layer": name, "shape": "x".join(map(str, module.weight.shape)), "full_rank": full,
            "rank": rank, "energy_kept": round(kept, 6), "weights": weights,
            "factor_weights": params, "factorized": params < weights}


@dataclass
class SVD(_Factorization):
    """Truncated SVD of dense layers (Denton et al. 2014): W (m x n) ~ A B with A (m x k) and
    B (k x n), two real layers n -> k -> m; ``kinds`` "conv" or "all" also factorize
    convolutions through their flattened kernel (a kxk conv to k channels, then a 1x1)."""
    id = "lowrank.svd"
    reference = ("Denton, Zaremba, Bruna, LeCun, Fergus 2014, Exploiting Linear Structure "
                 "Within Convolutional Networks for Efficient Evaluation")
    requires = "a Linear layer (or, with kinds='conv' / 'all', an ungrouped Conv2d)"
    smoke = {"rank": 4}

    kinds: str = knob("linear", Choice(("linear", "conv", "all")))   # which layers by default
    # 30: on LeNet-300-100 the smallest rank within 1 point of the float network (bench
    # lowrank_svd's curve), the form of Denton et al.'s comparison
    rank: int = knob(30, Int(1, 1 << 20))

    def eligible(self, module):
        linear = isinstance(module, nn.Linear) and self.kinds in ("linear", "all")
        conv = plain_conv(module) and self.kinds in ("conv", "all")
        return linear or conv

    def settings(self):
        return {**super().settings(), "kinds": self.kinds}

    def factorize(self, model, data):
        rows = []
        for name, module in self.candidates(model):
            matrix = module.weight if isinstance(module, nn.Linear) else conv_matrix(module.weight)
            factors = svd(matrix)                 # once: the spectrum and the factors
            energies = factors[1] ** 2
            k = self.rank_of(energies)
            row = _row(name, module, len(energies), k, energies, k * sum(matrix.shape))
            if row["factorized"]:
                new = LowRankLinear.from_linear(module, k, factors) \
                    if isinstance(module, nn.Linear) else LowRankConv2d.from_conv(module, k,
                                                                                 factors)
                replace_module(model, name, new)
            rows.append(row)
        return rows


@dataclass
class Separable(_Factorization):
    """Spatially separable filters (Jaderberg et al. 2014, scheme 2): each kh x kw conv
    (kh, kw > 1) becomes a kh x 1 conv to ``rank`` channels then a 1 x kw conv, the best
    filter reconstruction of that rank (SVD of the kernel reshaped to (in*kh) x (out*kw))."""
    id = "lowrank.separable"
    reference = ("Jaderberg, Vedaldi, Zisserman 2014, Speeding up Convolutional Neural "
                 "Networks with Low Rank Expansions")
    requires = "an ungrouped Conv2d with a kernel larger than 1 in both directions"
    smoke = {"by": "keep", "keep": 0.25}

    def eligible(self, module):
        return plain_conv(module) and min(module.kernel_size) > 1

    def factorize(self, model, data):
        rows = []
        for name, conv in self.candidates(model):
            matrix = separable_matrix(conv.weight)
            energies = singular_values(matrix) ** 2
            r = self.rank_of(energies)
            row = _row(name, conv, len(energies), r, energies, r * sum(matrix.shape))
            if row["factorized"]:
                replace_module(model, name, SeparableConv2d.from_conv(conv, r))
            rows.append(row)
        return rows


@dataclass
class Channel(_Factorization):
    """Channel decomposition fitted to the responses (Zhang et al. 2016, linear version): a
    conv with d filters becomes d' filters P^T W and a 1x1 conv P (d' -> d), P the d' leading
    principal directions of the conv's responses sampled on ``images`` training images at
    ``positions`` random positions each; the 1x1's bias carries the mean response."""
    id = "lowrank.channel"
    reference = ("Zhang, Zou, He, Sun 2016, Accelerating Very Deep Convolutional Networks for "
                 "Classification and Detection")
    requires = "an ungrouped Conv2d"
    sliders = {**_Factorization.sliders, "images": (16, 3000, 16)}
    smoke = {"by": "keep", "keep": 0.25, "images": 32, "positions": 8}

    images: int = knob(500, Int(1, 1_000_000))       # images whose responses are sampled
    positions: int = knob(10, Int(1, 100_000))       # random positions per image (paper: 10)

    def tags(self):
        return replace(super().tags(), needs_data=True)   # it samples responses

    def eligible(self, module):
        return plain_conv(module)

    def settings(self):
        return {**super().settings(), "images": self.images, "positions": self.positions}

    def factorize(self, model, data):
        chosen = self.candidates(model)
        responses = sampled_responses(model, data, [n for n, _ in chosen], self.images,
                                      self.positions, self.seed)
        rows = []
        for name, conv in chosen:
            mean, values, vectors = response_pca(responses[name])
            d = len(values)
            k = self.rank_of(values)
            row = _row(name, conv, d, k, values.clamp(min=0),
                       k * conv.weight[0].numel() + d * k)
            if row["factorized"]:
                first, second, bias = channel_factors(conv.weight, conv.bias, mean,
                                                      vectors[:, :k])
                replace_module(model, name, LowRankConv2d.like(conv, first, second, bias))
            rows.append(row)
        return rows


METHODS = (SVD, Separable, Channel)
