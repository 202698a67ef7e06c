"""The functions on tensors of ``activations`` (XNOR-Net's K, HORQ's residual binarization,
the binary weight), re-exported from there.

Grouped convolutions (depthwise ones included) are computed per group, as each group is a
convolution of its own: XNOR's K averages |I| over the channels of the group only, HORQ
binarizes the receptive field of each group (its channels' k x k window) on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import GRADIENTS


def pair(v) -> tuple[int, int]:
    return tuple(int(a) for a in v) if isinstance(v, (list, tuple)) else (int(v), int(v))


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """The output length of a convolution along one spatial dimension (torch's formula)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def xnor_scale(x: torch.Tensor, kernel_size=1, stride=1, padding=0, dilation=1,
               groups: int = 1) -> torch.Tensor:
    """XNOR-Net's K: A = mean over the channels of each group of |x|, then A convolved with a
    kxk box of 1/(kh kw) with the layer's own stride, zero padding and dilation: (N, groups,
    H', W'). For a vector (N, features): the mean |x| of each example, (N, 1)."""
    if x.dim() == 2:
        return x.abs().mean(1, keepdim=True)
    n, c, h, w = x.shape
    a = x.abs().reshape(n, groups, c // groups, h, w).mean(2)
    kh, kw = pair(kernel_size)
    box = torch.full((groups, 1, kh, kw), 1.0 / (kh * kw), dtype=x.dtype)
    return F.conv2d(a, box, None, pair(stride), pair(padding), pair(dilation), groups)


def residual_binarize(x: torch.Tensor, order: int, valid: torch.Tensor | None = None):
    """HORQ along the last dimension: [(beta_i, H_i)] with H_i = sign(R_{i-1}) (0 where
    ``valid`` is 0: padding), beta_i = mean|R_{i-1}| over the whole vector, R_i = R_{i-1} -
    beta_i H_i. The sign's gradient is hard-tanh's; beta's is exact."""
    terms, residual = [], x
    for _ in range(order):
        h = GRADIENTS["htanh"](residual)
        if valid is not None:
            h = h * valid
        beta = residual.abs().mean(-1, keepdim=True)
        terms.append((beta, h))
        residual = residual - beta * h
    return terms


def receptive_fields(x: torch.Tensor, kernel_size, stride, padding, dilation, groups: int):
    """The receptive fields of a convolution's input, (N, positions, groups, field) with field
    = (C / groups) kh kw (the group's channels' window, in the weight's order), and the mask of
    its real (non-padding) entries, shaped the same with N = 1."""
    args = dict(kernel_size=pair(kernel_size), dilation=pair(dilation), padding=pair(padding),
                stride=pair(stride))
    cols = F.unfold(x, **args).transpose(1, 2)
    ones = torch.ones(1, x.shape[1], *x.shape[2:], dtype=x.dtype)
    valid = F.unfold(ones, **args).transpose(1, 2)
    return (cols.reshape(*cols.shape[:2], groups, -1),
            valid.reshape(*valid.shape[:2], groups, -1))


def horq_product(fields: torch.Tensor, valid: torch.Tensor | None, weight: torch.Tensor,
                 order: int) -> torch.Tensor:
    """sum_i beta_i (H_i . W) for each receptive field and filter of its group: ``fields``
    (N, P, groups, field), ``weight`` (out, field...) -> (N, P, out)."""
    groups = fields.shape[2]
    w = weight.reshape(groups, weight.shape[0] // groups, -1)
    y = sum(beta * torch.einsum("npgf,gof->npgo", h, w)
            for beta, h in residual_binarize(fields, order, valid))
    return y.reshape(*fields.shape[:2], -1)
