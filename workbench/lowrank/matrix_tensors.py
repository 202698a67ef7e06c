"""The tensors and layers behind ``lowrank.svd``, ``lowrank.separable`` and ``lowrank.channel``
(the methods are in ``matrix.py``).

Three ways to write one layer as two smaller ones, each optimal in its own sense:

- ``truncated_svd(W, k)``: the best rank-k matrix in Frobenius and spectral norm (Eckart-Young),
  split as two factors; a Linear layer becomes ``LowRankLinear`` (n -> k -> m), a convolution
  with its kernel flattened to (out, in*kh*kw) becomes ``LowRankConv2d`` (kxk conv to k
  channels, then a 1x1 conv).
- ``separable_factors(W, r)``: Jaderberg et al.'s scheme 2, a kxk convolution as a vertical
  kx1 convolution to r channels then a horizontal 1xk one (``SeparableConv2d``). Reshaping the
  kernel to a (in*kh) x (out*kw) matrix turns "sum of r vertical-times-horizontal products"
  into "a matrix of rank r", so its truncated SVD is the filter reconstruction with the least
  squared error (Tai et al. 2016 noted this closed form; Jaderberg et al. used conjugate
  gradients).
- ``response_pca`` and ``channel_factors``: Zhang et al.'s channel decomposition, fitted to the
  layer's responses y = W x + b sampled on real images: the d' leading principal directions P
  of y give y ~ P P^T (y - mean) + mean, i.e. a conv with the d' filters P^T W and a 1x1 conv
  P with a bias that carries the mean (``LowRankConv2d`` again).

Factors are computed in float64 and stored in the layer's dtype.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..hooks import hooked
from ..models import register_module

# ------------------------------------------------------------------ functions on tensors


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD ``(U, S, V^T)`` of ``matrix`` in float64."""
    return torch.linalg.svd(matrix.detach().double(), full_matrices=False)


def truncated_svd(matrix: torch.Tensor, rank: int, factors=None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left, right)`` with ``left @ right`` the best rank-``rank`` approximation of
    ``matrix`` (m x n): left = U_k sqrt(S_k) (m x k), right = sqrt(S_k) V_k^T (k x n). The
    singular values are split evenly so that neither factor has a much larger scale.
    ``factors``: ``svd(matrix)`` if already computed (a method that chose the rank from the
    spectrum does not pay for a second SVD)."""
    u, s, vh = factors if factors is not None else svd(matrix)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of ``matrix``, largest first (float64)."""
    return torch.linalg.svdvals(matrix.detach().double())


def rank_from(energies: torch.Tensor, by: str, rank: int, keep: float, energy: float) -> int:
    """The rank a rule gives for a spectrum ``energies`` (squared singular values or PCA
    eigenvalues, largest first): ``by="rank"``: ``rank``, at most the full rank;
    ``"keep"``: that share of the full rank (rounded up, at least 1); ``"energy"``: the
    smallest rank whose leading energies sum to at least ``energy`` of the total."""
    full = len(energies)
    if by == "rank":
        return min(rank, full)
    if by == "keep":
        return max(1, min(full, math.ceil(keep * full - 1e-9)))
    if by == "energy":
        total = energies.clamp(min=0).sum()
        if total <= 0:
            return 1
        share = energies.clamp(min=0).cumsum(0) / total
        return min(full, int((share < energy - 1e-12).sum()) + 1)
    raise ValueError(f"by={by!r}; allowed: 'rank', 'keep', 'energy'")


def conv_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A conv kernel (out, in, kh, kw) as the (out, in*kh*kw) matrix it multiplies patches by."""
    return weight.reshape(weight.shape[0], -1)


def separable_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The kernel (N, C, kh, kw) as the (C*kh) x (N*kw) matrix M[(c, y), (n, x)] = W[n, c, y, x]:
    a sum of r vertical filters times horizontal filters is exactly a rank-r M."""
    n, c, kh, kw = weight.shape
    return weight.permute(1, 2, 0, 3).reshape(c * kh, n * kw)


def separable_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Jaderberg's scheme 2 fitted to the filters: (vertical (r, C, kh, 1), horizontal
    (N, r, 1, kw)) whose composition is the rank-r truncated SVD of ``separable_matrix``."""
    n, c, kh, kw = weight.shape
    left, right = truncated_svd(separable_matrix(weight), rank)   # (C*kh, r), (r, N*kw)
    vertical = left.T.reshape(rank, c, kh, 1)
    horizontal = right.reshape(rank, n, kw).permute(1, 0, 2).reshape(n, rank, 1, kw)
    return vertical, horizontal


def compose_separable(vertical: torch.Tensor, horizontal: torch.Tensor) -> torch.Tensor:
    """The kxk kernel (N, C, kh, kw) a vertical-then-horizontal pair computes."""
    return torch.einsum("kcy,nkx->ncyx", vertical[..., 0], horizontal[:, :, 0])


def response_pca(responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean, eigenvalues, eigenvectors)`` of responses (samples x d): the mean response and
    the eigen-decomposition of their covariance (divided by the number of samples), largest
    eigenvalue first, eigenvectors as columns."""
    y = responses.detach().double()
    mean = y.mean(0)
    centred = y - mean
    values, vectors = torch.linalg.eigh(centred.T @ centred / len(y))
    return mean, values.flip(0), vectors.flip(1)


def channel_factors(weight: torch.Tensor, bias: torch.Tensor | None, mean: torch.Tensor,
                    basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zhang et al.'s decomposition of a conv (d, C, kh, kw) with ``basis`` P (d x d'): the d'
    filters P^T W (no bias), the 1x1 conv P (d, d', 1, 1) and its bias mean + P P^T (b - mean),
    so that the pair computes P P^T (y - mean) + mean of the conv's response y = W x + b."""
    w = weight.detach().double()
    p = basis.double()
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
    first = torch.einsum("dk,dchw->kchw", p, w)
    second_bias = mean + p @ (p.T @ (b - mean))
    return first, p[:, :, None, None], second_bias


def sample_positions(outputs: torch.Tensor, positions: int, generator: torch.Generator
                     ) -> torch.Tensor:
    """``positions`` random (row, column) positions of each image's feature map, drawn with
    replacement: the responses there as (images * positions, channels)."""
    n, d, h, w = outputs.shape
    index = torch.randint(h * w, (n, positions), generator=generator)
    flat = outputs.reshape(n, d, h * w)
    return flat.gather(2, index[:, None, :].expand(n, d, positions)).permute(0, 2, 1) \
        .reshape(-1, d)


@torch.no_grad()
def sampled_responses(model: nn.Module, data, names: list[str], images: int, positions: int,
                      seed: int = 0, batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Responses (outputs, bias included) of the named convolutions at ``positions`` random
    positions of each of ``images`` images of ``data`` (a seeded stratified subset), in one
    pass in eval mode: {name: (images * positions, channels)}. Only the sampled responses are
    kept, not whole feature maps."""
    sample = data.subset(min(images, len(data)), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    kept = {name: [] for name in names}

    def record(module, inputs, output, name):
        kept[name].append(sample_positions(output.detach(), positions, generator))

    with hooked(model, {name: record for name in names}):
        for x, _ in sample.loader(batch_size):
            model(x)
    return {name: torch.cat(v) for name, v in kept.items()}


def load_factors(layer: nn.Module, first_name: str, first: torch.Tensor, second_name: str,
                 second: torch.Tensor, bias: torch.Tensor | None, dtype) -> nn.Module:
    """``layer`` with its two child layers' weights set to ``first`` and ``second`` (cast to
    ``dtype``) and ``bias`` on the second; the layer in ``dtype``."""
    with torch.no_grad():
        layer.get_submodule(first_name).weight.copy_(first.to(dtype))
        layer.get_submodule(second_name).weight.copy_(second.to(dtype))
        if bias is not None:
            layer.get_submodule(second_name).bias.copy_(bias.detach().to(dtype))
    return layer.to(dtype)


# ------------------------------------------------------------------ the factorized layers


def _pair(value) -> list[int]:
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


@register_module
class LowRankLinear(nn.Module):
    """A Linear layer of rank ``rank``: ``first`` (in -> rank, no bias) then ``second``
    (rank -> out, the bias). ``weight_product()`` is the (out, in) matrix it stands for."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.config = {"in_features": in_features, "out_features": out_features,
                       "rank": rank, "bias": bias}
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, factors=None) -> "LowRankLinear":
        """The truncated SVD of ``linear``'s weight (``factors``: its ``svd`` if known), its
        bias on ``second``."""
        layer = cls(linear.in_features, linear.out_features, rank, linear.bias is not None)
        left, right = truncated_svd(linear.weight, rank, factors)
        return load_factors(layer, "first", right, "second", left, linear.bias,
                            linear.weight.dtype)

    def weight_product(self) -> torch.Tensor:
        return self.second.weight @ self.first.weight

    def forward(self, x):
        return self.second(self.first(x))


@register_module
class LowRankConv2d(nn.Module):
    """A convolution through ``rank`` channels: ``first``, a kxk conv (in -> rank, the original
    stride, padding and dilation, no bias), then ``second``, a 1x1 conv (rank -> out, the bias).
    ``kernel()`` is the (out, in, kh, kw) kernel it stands for."""

    def __init__(self, in_channels: int, out_channels: int, rank: int, kernel_size,
                 stride=1, padding=0, dilation=1, bias: bool = True):
        super().__init__()
        kernel_size, stride, padding, dilation = map(_pair, (kernel_size, stride, padding,
                                                             dilation))
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "rank": rank,
                       "kernel_size": kernel_size, "stride": stride, "padding": padding,
                       "dilation": dilation, "bias": bias}
        self.first = nn.Conv2d(in_channels, rank, kernel_size, stride, padding, dilation,
                               bias=False)
        self.second = nn.Conv2d(rank, out_channels, 1, bias=bias)

    @classmethod
    def like(cls, conv: nn.Conv2d, first: torch.Tensor, second: torch.Tensor,
             bias: torch.Tensor | None) -> "LowRankConv2d":
        """A layer with ``conv``'s geometry and the given weights (first (r, C, kh, kw),
        second (N, r, 1, 1)); ``bias`` None only when ``conv`` has none."""
        layer = cls(conv.in_channels, conv.out_channels, first.shape[0], conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, bias is not None)
        return load_factors(layer, "first", first, "second", second, bias, conv.weight.dtype)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int, factors=None) -> "LowRankConv2d":
        """The truncated SVD of the flattened kernel (weights only, no data; ``factors``: its
        ``svd`` if known)."""
        left, right = truncated_svd(conv_matrix(conv.weight), rank, factors)
        first = right.reshape(rank, *conv.weight.shape[1:])
        bias = None if conv.bias is None else conv.bias.detach()
        return cls.like(conv, first, left[:, :, None, None], bias)

    def kernel(self) -> torch.Tensor:
        return torch.einsum("nk,kchw->nchw", self.second.weight[:, :, 0, 0], self.first.weight)

    def forward(self, x):
        return self.second(self.first(x))


@register_module
class SeparableConv2d(nn.Module):
    """A kh x kw convolution as ``vertical`` (kh x 1, in -> rank, no bias) then ``horizontal``
    (1 x kw, rank -> out, the bias), each carrying its own direction's stride, padding and
    dilation (Jaderberg et al.'s scheme 2). ``kernel()`` is the kernel the pair computes."""

    def __init__(self, in_channels: int, out_channels: int, rank: int, kernel_size,
                 stride=1, padding=0, dilation=1, bias: bool = True):
        super().__init__()
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(_pair, (kernel_size, stride, padding,
                                                             dilation))
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "rank": rank,
                       "kernel_size": [kh, kw], "stride": [sh, sw], "padding": [ph, pw],
                       "dilation": [dh, dw], "bias": bias}
        self.vertical = nn.Conv2d(in_channels, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1),
                                  bias=False)
        self.horizontal = nn.Conv2d(rank, out_channels, (1, kw), (1, sw), (0, pw), (1, dw),
                                    bias=bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank: int) -> "SeparableConv2d":
        layer = cls(conv.in_channels, conv.out_channels, rank, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.bias is not None)
        vertical, horizontal = separable_factors(conv.weight, rank)
        return load_factors(layer, "vertical", vertical, "horizontal", horizontal, conv.bias,
                            conv.weight.dtype)

    def kernel(self) -> torch.Tensor:
        return compose_separable(self.vertical.weight, self.horizontal.weight)

    def forward(self, x):
        return self.horizontal(self.vertical(x))



