"""Channel selection and reconstruction on sampled feature maps, on tensors: the functions
behind ``reconstruct`` (He et al. 2017's LASSO + least squares, ThiNet, DCP), where the notes
on the choices are.

At one sampled position a consumer layer computes ``y[o] = sum_c x_c . W[o, c]`` (x_c: channel
c's k x k patch, or its inputs of a Linear), so channel c *contributes* ``z_c[o] = x_c .
W[o, c]``; the Gram matrix of those contributions (``contribution_gram``) is all that LASSO and
ThiNet need to choose channels, and the normal equations (``design``) give the least-squares
refit of any subset.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import lars_path_gram
from torch import nn

from ..models.groups import ChannelGroup

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
