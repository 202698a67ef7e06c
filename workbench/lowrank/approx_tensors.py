"""The functions on tensors behind ``approx.perforation`` and ``approx.frequency`` (the
methods and their layers are in ``approx``).

Perforation: which output positions a convolution computes (``grid_positions``,
``uniform_positions``), the nearest computed position of every other one
(``nearest_kept``), and the convolution computed at those positions only
(``grid_conv2d``, ``gathered_conv2d``).

Frequency: the orthonormal DCT-II of each kxk filter (``dct_matrix``, ``dct2``, ``idct2``),
the mask keeping a requested share of the energy (``energy_mask``), k-means on the DCT
coefficient vectors (``cluster_filters``) and the uniform quantizer of the residuals
(``quantize_uniform``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ------------------------------------------------------------------ perforation masks


def lattice_steps(rate: float) -> tuple[int, int]:
    """(row step, column step) of the grid closest to skipping ``rate`` of the positions:
    steps equal or the row step one larger, (1, 1) (2, 1) (2, 2) (3, 2) ..., whose skipped
    share 1 - 1 / (sr sc) is nearest ``rate``."""
    steps = [((s + 1, s) if odd else (s, s)) for s in range(1, 33) for odd in (False, True)]
    return min(steps, key=lambda st: abs(1 - 1 / (st[0] * st[1]) - rate))


def centred_lattice(size: int, step: int) -> torch.Tensor:
    """Every ``step``-th index of ``range(size)``, the lattice centred (equal margins)."""
    count = -(-size // step)
    return (size - 1 - (count - 1) * step) // 2 + step * torch.arange(count)


def grid_positions(h: int, w: int, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of a grid perforation mask skipping about ``rate`` of the h x w outputs:
    every pair (row, col) is computed. The paper spreads the rows and columns by a
    pseudo-random integer sequence, which allows any rate; here they form a regular lattice
    (``lattice_steps``), so that one strided convolution computes exactly them."""
    row_step, col_step = lattice_steps(rate)
    return centred_lattice(h, row_step), centred_lattice(w, col_step)


def uniform_positions(h: int, w: int, rate: float, seed: int = 0) -> torch.Tensor:
    """Flat indices (row-major, sorted) of ``round((1 - rate) h w)`` positions (at least
    one) drawn uniformly without replacement: the paper's uniform perforation mask."""
    n_keep = max(1, round((1.0 - rate) * h * w))
    order = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return order[:n_keep].sort().values


def nearest_kept(h: int, w: int, kept: torch.Tensor) -> torch.Tensor:
    """For every position of an h x w map (row-major), the index into ``kept`` (flat,
    sorted) of the nearest kept position (Euclidean; a tie goes to the first in row-major
    order). A kept position is its own nearest."""
    ys, xs = torch.div(kept, w, rounding_mode="floor"), kept % w
    grid_y, grid_x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d2 = (grid_y.reshape(-1, 1) - ys) ** 2 + (grid_x.reshape(-1, 1) - xs) ** 2
    return d2.argmin(dim=1)


def nearest_in(size: int, kept: torch.Tensor) -> torch.Tensor:
    """For every index of ``range(size)``, the index into ``kept`` of the nearest one. On a
    grid, the nearest kept position is the nearest row with the nearest column."""
    return (torch.arange(size).reshape(-1, 1) - kept).abs().argmin(dim=1)


# ------------------------------------------------------------------ perforated convolutions


def _pad(x: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    return F.pad(x, (padding[1], padding[1], padding[0], padding[0]))


def grid_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation,
                rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """The convolution's outputs at ``rows`` x ``cols`` only, (N, out, len(rows), len(cols)),
    for rows and columns in arithmetic progression: one convolution of the input, shifted to
    the first kept position, with the strides multiplied by the lattice steps (so the
    multiplications really drop with the positions)."""
    steps = [int(v[1] - v[0]) if v.numel() > 1 else 1 for v in (rows, cols)]
    x = _pad(x, padding)[:, :, int(rows[0]) * stride[0]:, int(cols[0]) * stride[1]:]
    y = F.conv2d(x, weight, bias, (stride[0] * steps[0], stride[1] * steps[1]), 0, dilation)
    return y[:, :, :rows.numel(), :cols.numel()]


def gathered_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, stride, padding, dilation,
                    kept: torch.Tensor, out_w: int) -> torch.Tensor:
    """The convolution's outputs at the flat positions ``kept`` only, (N, out, len(kept)):
    the patches of those positions gathered (im2col restricted to them), then one matmul."""
    (kh, kw), x = weight.shape[2:], _pad(x, padding)
    n, c, _, wp = x.shape
    ys, xs = torch.div(kept, out_w, rounding_mode="floor"), kept % out_w
    dy = torch.arange(kh).repeat_interleave(kw) * dilation[0]
    dx = torch.arange(kw).repeat(kh) * dilation[1]
    index = (ys * stride[0] + dy.reshape(-1, 1)) * wp + xs * stride[1] + dx.reshape(-1, 1)
    patches = x.flatten(2)[:, :, index.reshape(-1).to(x.device)]       # (N, C, kk * kept)
    y = weight.reshape(weight.shape[0], -1) @ patches.reshape(n, c * kh * kw, -1)
    return y if bias is None else y + bias.reshape(1, -1, 1)


# ------------------------------------------------------------------ DCT of filters


def dct_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n x n): D @ v is the DCT of v, D.T @ c its inverse
    (scipy.fft.dct(v, norm="ortho") is the same transform)."""
    k, i = torch.arange(n, dtype=dtype).reshape(-1, 1), torch.arange(n, dtype=dtype)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def dct2(w: torch.Tensor) -> torch.Tensor:
    """2-D DCT of every kh x kw filter of ``w`` (..., kh, kw): Dh w Dw^T."""
    dh, dw = dct_matrix(w.shape[-2], w.dtype), dct_matrix(w.shape[-1], w.dtype)
    return dh @ w @ dw.T


def idct2(c: torch.Tensor) -> torch.Tensor:
    """Inverse of ``dct2``: Dh^T c Dw."""
    dh, dw = dct_matrix(c.shape[-2], c.dtype), dct_matrix(c.shape[-1], c.dtype)
    return dh.T @ c @ dw


def energy_mask(c: torch.Tensor, energy: float) -> torch.Tensor:
    """Boolean mask of the fewest entries of ``c`` (largest |c| first) whose squares sum to
    at least ``energy`` of the total; energy 1 keeps every nonzero entry."""
    flat = c.detach().flatten().double() ** 2
    total = flat.sum()
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if total == 0:
        return mask.view(c.shape)
    order = flat.argsort(descending=True)
    cumulative = flat[order].cumsum(0)
    # relative slack: a cumulative sum of floats may end a hair under energy * total
    needed = int((cumulative < energy * total * (1 - 1e-12)).sum()) + 1
    keep = order[:min(needed, flat.numel())]
    mask[keep[flat[keep] > 0]] = True
    return mask.view(c.shape)


def cluster_filters(coeffs: torch.Tensor, k: int, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (k', kh, kw), labels (n,)) of k-means on the n DCT filters ``coeffs``
    (n, kh, kw) seen as vectors; k' = min(k, distinct filters). scikit-learn's KMeans,
    k-means++ seeded, one thread."""
    from ..quantize.product_tensors import kmeans
    points = coeffs.reshape(coeffs.shape[0], -1).double().numpy()
    k = min(k, len(np.unique(points, axis=0)))
    centres, labels = kmeans(points, k, seed)
    return (torch.from_numpy(centres).to(coeffs.dtype).reshape(-1, *coeffs.shape[1:]),
            torch.from_numpy(labels.astype(np.int64)))


def quantize_uniform(x: torch.Tensor, bits: int) -> torch.Tensor:
    """``x`` rounded to the 2^(bits-1) - 1 steps either side of 0 of a symmetric uniform
    quantizer whose largest step is max|x| (zero stays zero)."""
    top = x.abs().max()
    if top == 0:
        return x.clone()
    step = top / (2 ** (bits - 1) - 1)
    return torch.round(x / step) * step
