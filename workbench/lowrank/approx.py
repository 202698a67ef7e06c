"""Approximations of a convolution: perforation (Figurnov et al. 2016) and CNNPack's
frequency-domain storage of the filters (Wang et al. 2016).

Perforation computes a convolution at a subset of its output positions (the perforation
mask) and gives every other position the value of its nearest computed neighbour, the
paper's interpolation. Two of the paper's masks are here: ``grid`` (every pair of a set of
rows and a set of columns, here a regular lattice so that one strided convolution computes
exactly those outputs, ``approx_tensors.grid_conv2d``; the rate is rounded to the nearest
lattice: 0, 1/2, 3/4, 5/6, 8/9 ...) and ``uniform`` (positions drawn at random; their
patches gathered and multiplied in one matmul, ``gathered_conv2d``). ``rate`` is the share of
positions skipped; the multiplications drop with it for real and ``PerforatedConv2d.mac_counts``
reports them. The mask is a function of the layer's config (rate, strategy, seed, output
size), so the file stores no mask and a decoded layer computes the same positions. The
paper's data-driven masks (pooling structure, impact) and its per-layer rate search are left
out; one rate applies to every chosen convolution. Fine-tuning after perforation (``epochs``)
trains through the perforated layers.

CNNPack treats each kxk filter as a small image: its 2-D DCT (orthonormal, so energy is
kept: Parseval) is split into a part shared by similar filters (k-means centres of the DCT
coefficient vectors) and a private residual; low-energy coefficients of both are dropped
(``energy``: the share of each layer's centre energy and residual energy kept) and the
residuals are quantized (``bits``, uniform). The layer ``DCTConv2d`` stores exactly that:
``centres`` (K x kh x kw), ``assign`` (one small integer per filter plane, uint8 for K <= 256)
and ``residual`` (out x in x kh x kw, mostly zeros, few distinct values, which the codec
stores as positions plus codebook indices). For inference it folds back to a spatial kernel
(idct2 of centre + residual), so the multiplications are those of the dense convolution: the
paper's speed-up (convolving with the DCT bases and combining the responses) is not done,
and neither is its Huffman stage (``encode.huffman`` can be chained). Convolutions with
k > 1 only: a 1x1 filter has a single DCT coefficient.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import probe
from ..measure import input_shape_of
from ..method import (LAYER_NAMES, Choice, Int, Method, Optional, Real, TrainingMethod,
                      check_layer_names, chosen_layers, knob, plain_conv)
from ..models import register_module, replace_module
from .approx_tensors import (cluster_filters, dct2, dct_matrix, energy_mask, gathered_conv2d,
                             grid_conv2d, grid_positions, lattice_steps, nearest_in, nearest_kept,
                             quantize_uniform, uniform_positions)

STRATEGIES = ("grid", "uniform")


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# ------------------------------------------------------------------ perforation

@register_module
class PerforatedConv2d(nn.Module):
    """A convolution computed at ``1 - rate`` of its ``out_size`` output positions (mask:
    ``strategy``, ``seed``), the others copied from their nearest computed position."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 dilation, bias: bool, out_size, rate: float, strategy: str = "grid",
                 seed: int = 0):
        super().__init__()
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "kernel_size": list(_pair(kernel_size)), "stride": list(_pair(stride)),
                       "padding": list(_pair(padding)), "dilation": list(_pair(dilation)),
                       "bias": bias, "out_size": list(out_size), "rate": rate,
                       "strategy": strategy, "seed": seed}
        self.stride, self.padding = _pair(stride), _pair(padding)
        self.dilation, self.out_size, self.strategy = _pair(dilation), tuple(out_size), strategy
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, *_pair(kernel_size)))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        h, w = self.out_size
        # the mask follows from the config: not stored in the file, rebuilt identically
        if strategy == "grid":
            rows, cols = grid_positions(h, w, rate)
            self.register_buffer("rows", rows, persistent=False)
            self.register_buffer("cols", cols, persistent=False)
            self.register_buffer("row_fill", nearest_in(h, rows), persistent=False)
            self.register_buffer("col_fill", nearest_in(w, cols), persistent=False)
        else:
            kept = uniform_positions(h, w, rate, seed)
            self.register_buffer("kept", kept, persistent=False)
            self.register_buffer("fill", nearest_kept(h, w, kept), persistent=False)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, out_size, rate: float, strategy: str, seed: int = 0
                  ) -> PerforatedConv2d:
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.bias is not None, out_size, rate,
                    strategy, seed).to(conv.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def kept_positions(self) -> int:
        """How many output positions are computed."""
        return self.rows.numel() * self.cols.numel() if self.strategy == "grid" \
            else self.kept.numel()

    def computed(self, x: torch.Tensor) -> torch.Tensor:
        """The outputs at the kept positions only: (N, out, rows, cols) for a grid,
        (N, out, kept) otherwise."""
        args = (x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        if self.strategy == "grid":
            return grid_conv2d(*args, self.rows, self.cols)
        return gathered_conv2d(*args, self.kept, self.out_size[1])

    def forward(self, x):
        h, w = self.out_size
        expected = [(x.shape[2 + i] + 2 * self.padding[i] - self.dilation[i]
                     * (self.weight.shape[2 + i] - 1) - 1) // self.stride[i] + 1 for i in (0, 1)]
        if tuple(expected) != self.out_size:
            raise ValueError(f"PerforatedConv2d was built for {h}x{w} outputs; this input "
                             f"gives {expected[0]}x{expected[1]}")
        y = self.computed(x)
        if self.strategy == "grid":     # nearest row with nearest column, one gather
            return y[:, :, self.row_fill[:, None], self.col_fill]
        return y[:, :, self.fill].reshape(x.shape[0], -1, h, w)

    def mac_counts(self, inputs, output) -> dict:
        """Per image: multiplications at the kept positions only (the copies are free)."""
        kept, nonzeros = self.kept_positions(), int(self.weight.count_nonzero())
        params = self.weight.numel() + (self.bias.numel() if self.bias is not None else 0)
        bias_nonzeros = int(self.bias.count_nonzero()) if self.bias is not None else 0
        return {"params": params, "nonzeros": nonzeros + bias_nonzeros,
                "macs": self.weight.numel() * kept, "effective_macs": nonzeros * kept}


def output_sizes(model: nn.Module, names: list[str]) -> dict[str, tuple[int, int]]:
    """The output height and width of each named layer on the model's input shape."""
    sizes = {}

    def record(module, inputs, output, name):
        sizes[name] = tuple(output.shape[2:])
    probe(model, input_shape_of(model), {n: record for n in names})
    return sizes


@dataclass
class Perforation(TrainingMethod):
    """Perforated convolutions (Figurnov et al. 2016): every chosen convolution computes only
    ``1 - rate`` of its output positions (``strategy`` "grid" or "uniform") and copies the
    rest from the nearest computed one; then fine-tuned for ``epochs`` (0: no data needed).
    """
    id = "approx.perforation"
    reference = ("Figurnov, Ibraimova, Vetrov, Kohli 2016, PerforatedCNNs: Acceleration "
                 "through Elimination of Redundant Convolutions")
    requires = ("a Conv2d (groups 1, zero padding) with more than one output position, and "
                "an input_shape attribute (C, H, W) to find the output sizes")
    # "grid" skips 1/2, 3/4, 5/6, 8/9 ... (a lattice): the slider stays where every value skips
    sliders = {"rate": (0.5, 0.95, 0.05)}
    smoke = {"rate": 0.5, "epochs": 0}
    effects = ("fewer_macs", "different_outputs")

    rate: float = knob(0.5, Real(0.0, 0.99))
    strategy: str = knob("grid", Choice(STRATEGIES))
    layers: tuple[str, ...] | None = knob(None, LAYER_NAMES)  # None: every conv
    epochs: int = 1      # Figurnov et al. fine-tune the perforated network; 0: none, no data
    lr: float = 0.01

    def validate(self):
        # a grid rounds the rate to its lattice: below 1/4 that is "skip nothing", which would
        # be a dense layer under another name
        if self.strategy == "grid" and 0 < self.rate and self.grid_rate() == 0:
            raise ValueError(f"Perforation.rate={self.rate} with strategy='grid': a lattice "
                             "skips 0, 1/2, 3/4, 5/6, 8/9 ... of the positions, and this rate "
                             "rounds to 0; allowed: a rate of at least 0.25, or "
                             "strategy='uniform' for any rate")

    def grid_rate(self) -> float:
        """The share of positions the grid really skips (the lattice nearest ``rate``)."""
        row_step, col_step = lattice_steps(self.rate)
        return 1 - 1 / (row_step * col_step)

    def settings(self):
        used = {"rate used": round(self.grid_rate(), 4)} if self.strategy == "grid" else {}
        return {**super().settings(), **used}

    def eligible(self, model: nn.Module) -> list[str]:
        return chosen_layers(model, plain_conv, self.layers)

    def supports(self, model):
        names = chosen_layers(model, plain_conv)
        return bool(names) and hasattr(model, "input_shape") and any(
            h * w > 1 for h, w in output_sizes(model, names).values())

    def check_model(self, model):
        if self.layers is not None:
            check_layer_names(self, "layers", model, kinds=(nn.Conv2d,))

    def compress(self, model, data=None):
        sizes = output_sizes(model, self.eligible(model))
        for name, (h, w) in sizes.items():
            if h * w > 1:
                replace_module(model, name, PerforatedConv2d.from_conv(
                    model.get_submodule(name), (h, w), self.rate, self.strategy, self.seed))
        if self.epochs:
            self.fit(model, data, schedule="cosine")
        return model


# ------------------------------------------------------------------ frequency (CNNPack)

@register_module
class DCTConv2d(nn.Module):
    """A convolution whose filters are stored as DCT coefficients: a shared centre
    (``centres[assign]``, absent when ``clusters`` is 0) plus a private ``residual``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride, padding,
                 dilation, bias: bool, clusters: int):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.config = {"in_channels": in_channels, "out_channels": out_channels,
                       "kernel_size": [kh, kw], "stride": list(_pair(stride)),
                       "padding": list(_pair(padding)), "dilation": list(_pair(dilation)),
                       "bias": bias, "clusters": clusters}
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.residual = nn.Parameter(torch.zeros(out_channels, in_channels, kh, kw))
        self.centres = nn.Parameter(torch.zeros(clusters, kh, kw)) if clusters else None
        index_type = torch.uint8 if clusters <= 256 else torch.int32
        self.register_buffer("assign", torch.zeros(out_channels, in_channels, dtype=index_type)
                             if clusters else None)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("dh", dct_matrix(kh, torch.float32), persistent=False)
        self.register_buffer("dw", dct_matrix(kw, torch.float32), persistent=False)

    def coefficients(self) -> torch.Tensor:
        """The DCT coefficients of every filter: centre + residual."""
        if self.centres is None:
            return self.residual
        return self.centres[self.assign.long()] + self.residual

    def spatial_weight(self) -> torch.Tensor:
        """The spatial kernel the layer computes with (the inverse DCT)."""
        return self.dh.T @ self.coefficients() @ self.dw

    def forward(self, x):
        return F.conv2d(x, self.spatial_weight(), self.bias, self.stride, self.padding,
                        self.dilation)

    def mac_counts(self, inputs, output) -> dict:
        """Params: stored coefficients (centres, residuals, bias); MACs: the dense spatial
        convolution it folds back to (a sparse set of DCT coefficients gives a dense kernel)."""
        stored = [t for t in (self.residual, self.centres, self.bias) if t is not None]
        macs = self.residual.numel() * output[0, 0].numel()
        return {"params": sum(t.numel() for t in stored),
                "nonzeros": sum(int(t.count_nonzero()) for t in stored),
                "macs": macs, "effective_macs": macs}


def pack_filters(weight: torch.Tensor, clusters: int, energy: float, bits: int | None,
                 seed: int = 0) -> dict[str, torch.Tensor]:
    """CNNPack on one layer's weight (out, in, kh, kw): {"centres", "assign", "residual"} in
    the DCT domain (centres / assign absent when ``clusters`` is 0). Centres keep ``energy``
    of their energy, then the residual against them keeps ``energy`` of its own and is
    quantized to ``bits`` (None: float)."""
    coeffs = dct2(weight.detach().double())
    planes = coeffs.reshape(-1, *coeffs.shape[2:])
    out = {}
    shared = torch.zeros_like(planes)
    if clusters:
        centres, labels = cluster_filters(planes, clusters, seed)
        centres = centres * energy_mask(centres, energy)
        out["centres"], out["assign"] = centres, labels.reshape(coeffs.shape[:2])
        shared = centres[labels]
    residual = (planes - shared).reshape(coeffs.shape)
    residual = residual * energy_mask(residual, energy)
    out["residual"] = residual if bits is None else quantize_uniform(residual, bits)
    return out


def to_dct_layer(conv: nn.Conv2d, clusters: int, energy: float, bits: int | None,
                 seed: int = 0) -> DCTConv2d:
    packed = pack_filters(conv.weight, clusters, energy, bits, seed)
    k = packed["centres"].shape[0] if clusters else 0
    layer = DCTConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.bias is not None, k)
    with torch.no_grad():
        layer.residual.copy_(packed["residual"].float())
        if k:
            layer.centres.copy_(packed["centres"].float())
            layer.assign.copy_(packed["assign"])
        if conv.bias is not None:
            layer.bias.copy_(conv.bias)
    return layer


@dataclass
class Frequency(Method):
    """CNNPack (Wang et al. 2016): every kxk convolution (k > 1) stored in the DCT domain as
    ``clusters`` shared centres plus residuals, keeping ``energy`` of each part's energy, the
    residuals quantized to ``bits`` (None: float). ``clusters=0, energy=1, bits=None`` keeps
    the whole DCT of the filters: the same kernels up to float rounding of the transform."""
    id = "approx.frequency"
    reference = ("Wang, Xu, You, Tao, Xu 2016, CNNpack: Packing Convolutional Neural Networks "
                 "in the Frequency Domain")
    requires = "a Conv2d with a kernel larger than 1x1 (groups 1, zero padding)"
    sliders = {"energy": (0.5, 1.0, 0.01), "clusters": (0, 256, 1), "bits": (2, 8, 1)}
    smoke = {"clusters": 8}
    effects = ("fewer_nonzeros", "fewer_bytes", "different_outputs")

    energy: float = knob(0.9, Real(0.01, 1.0))
    clusters: int = knob(16, Int(0, 4096))      # 0: no shared part, the residual is the DCT
    bits: int | None = knob(6, Optional(Int(2, 16)))
    layers: tuple[str, ...] | None = knob(None, LAYER_NAMES)  # None: every conv
    seed: int = knob(0, Int(0, 2**31 - 1))

    def eligible(self, model: nn.Module) -> list[str]:
        return chosen_layers(model, lambda m: plain_conv(m) and max(m.kernel_size) > 1,
                             self.layers)

    def supports(self, model):
        return bool(Frequency().eligible(model))

    def check_model(self, model):
        if self.layers is not None:
            check_layer_names(self, "layers", model, kinds=(nn.Conv2d,))

    def compress(self, model, data=None):
        for name in self.eligible(model):
            replace_module(model, name, to_dct_layer(model.get_submodule(name), self.clusters,
                                                     self.energy, self.bits, self.seed))
        return model


METHODS = (Perforation, Frequency)
