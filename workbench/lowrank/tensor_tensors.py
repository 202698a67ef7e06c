"""Tensor decompositions of a convolution kernel W (out, in, kh, kw), as plain functions.

- ``tucker2``: Tucker-2 along the two channel modes by one-pass HOSVD,
  W ~ G x0 U x1 V with U (out x r_out), V (in x r_in) orthonormal, G (r_out, r_in, kh, kw).
- ``evbmf_rank`` / ``energy_rank``: how many singular values of an unfolding to keep.
- ``cp_als``: rank-R CP, W ~ sum_r a_r o b_r o c_r o d_r, by alternating least squares.
- ``block_term``: a sum of B Tucker-2 blocks, fitted by alternating least squares.
- ``tucker_cost`` / ``cp_cost`` / ``dense_cost``: multiplications per output pixel.

Everything is computed in float64 (the SVDs and the small linear solves are cheap at these
sizes) and returned in the kernel's dtype.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def unfold(t: torch.Tensor, mode: int) -> torch.Tensor:
    """The mode-``mode`` unfolding: that axis as rows, all others flattened as columns."""
    return t.movedim(mode, 0).reshape(t.shape[mode], -1)


def relative_error(w: torch.Tensor, approx: torch.Tensor) -> float:
    """||W - approx|| / ||W|| (Frobenius)."""
    w, approx = w.detach().double(), approx.detach().double()
    return float((w - approx).norm() / w.norm().clamp_min(1e-300))


def singular_values(w: torch.Tensor, mode: int) -> torch.Tensor:
    """Singular values of the mode-``mode`` unfolding, largest first."""
    return torch.linalg.svdvals(unfold(w.double(), mode))


# ------------------------------------------------------------------ costs of the chains
# (``conv`` is an nn.Conv2d; only its shape, kernel and stride are read)


def tucker_cost(conv: nn.Conv2d, rank_out: int, rank_in: int, blocks: int = 1) -> int:
    """Multiplications per output pixel of the Tucker-2 / block-term chain (the first 1x1
    runs at the input's resolution: stride^2 times per output pixel)."""
    kh, kw = conv.kernel_size
    strided = conv.stride[0] * conv.stride[1]
    return blocks * (strided * conv.in_channels * rank_in + rank_in * rank_out * kh * kw
                     + rank_out * conv.out_channels)


def cp_cost(conv: nn.Conv2d, rank: int) -> int:
    """Multiplications per output pixel of the CP chain (1x1 at the input's resolution, the
    kx1 pass at the input's width)."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.stride
    return rank * (sh * sw * conv.in_channels + sw * kh + kw + conv.out_channels)


def dense_cost(conv: nn.Conv2d) -> int:
    return conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]


# ------------------------------------------------------------------ Tucker-2


def tucker2(w: torch.Tensor, rank_out: int, rank_in: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tucker-2 of ``w`` (out, in, kh, kw) by HOSVD: ``(core, u, v)``.

    ``u`` (out x rank_out) and ``v`` (in x rank_in) are the leading left singular vectors of
    the mode-0 and mode-1 unfoldings; the core is the projection
    ``core = w x0 u^T x1 v^T`` (rank_out, rank_in, kh, kw). With full ranks the reconstruction
    ``tucker2_to_kernel`` is exact.
    """
    w64 = w.detach().double()
    u = torch.linalg.svd(unfold(w64, 0), full_matrices=False)[0][:, :rank_out]
    v = torch.linalg.svd(unfold(w64, 1), full_matrices=False)[0][:, :rank_in]
    core = torch.einsum("oihw,op,iq->pqhw", w64, u, v)
    return core.to(w.dtype), u.to(w.dtype), v.to(w.dtype)


def tucker2_to_kernel(core: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The kernel ``core x0 u x1 v`` (out, in, kh, kw)."""
    return torch.einsum("pqhw,op,iq->oihw", core, u, v)


def energy_rank(s: torch.Tensor, share: float) -> int:
    """The fewest leading singular values whose squares hold ``share`` of the total."""
    energy = (s.double() ** 2).cumsum(0)
    return int(torch.searchsorted(energy, share * energy[-1] * (1 - 1e-12))) + 1


def evbmf_rank(y: torch.Tensor) -> int:
    """Rank of ``y`` chosen by empirical variational Bayesian matrix factorization.

    Nakajima, Tomioka, Sugiyama & Babacan (JMLR 2013) give the global solution in closed
    form: a singular value is kept when it exceeds ``sqrt(M sigma2 (1 + tau)(1 + alpha/tau))``
    (L <= M the sides, alpha = L/M, tau ~ 2.5129 sqrt(alpha)); the noise variance sigma2
    is the minimizer of the free energy over a bounded interval (their ``estimatesigma2``),
    found here with scipy's bounded scalar search, as their ``fminbnd``.
    """
    from scipy.optimize import minimize_scalar
    y = y.detach().double()
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    s = torch.linalg.svdvals(y).numpy()
    alpha = L / M
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    # the bounds of the noise variance (Nakajima et al.'s code); 0-based index of the first
    # singular value that must be noise
    first_noise = min(math.ceil(L / (1 + alpha)) - 1, L - 1)
    upper = float((s ** 2).sum() / (L * M))
    lower = max(float(s[first_noise] ** 2 / (M * x_bar)),
                float((s[first_noise:] ** 2).mean() / M))
    if not 0 < lower < upper:        # a zero or rank-one matrix: nothing to estimate
        return int((s > 1e-12 * max(s[0], 1e-300)).sum())
    scale = 1 / lower                # their rescaling, for the search's tolerance

    def free_energy(sigma2):
        x = (s ** 2) * scale / (M * sigma2)
        big = x[x > x_bar]
        tau = 0.5 * (big - (1 + alpha) + ((big - (1 + alpha)) ** 2 - 4 * alpha) ** 0.5)
        return float((x - np.log(x)).sum() + (np.log(tau + 1) + alpha * np.log(tau / alpha + 1)
                                               - tau).sum())

    sigma2 = minimize_scalar(free_energy, bounds=(1.0, upper * scale), method="bounded").x / scale
    threshold = math.sqrt(M * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return int((s > threshold).sum())


# ------------------------------------------------------------------ CP


def cp_to_kernel(factors: list[torch.Tensor]) -> torch.Tensor:
    """The kernel ``sum_r a_r o b_r o c_r o d_r`` of CP factors (out, in, kh, kw each x R)."""
    a, b, c, d = factors
    return torch.einsum("or,ir,hr,wr->oihw", a, b, c, d)


# MTTKRP of each mode (the unfolding times the Khatri-Rao product of the other factors),
# as one einsum: contracted pairwise, it never builds the large Khatri-Rao matrix.
_MTTKRP = ("oihw,ir,hr,wr->or", "oihw,or,hr,wr->ir", "oihw,or,ir,wr->hr", "oihw,or,ir,hr->wr")


def _svd_init(w: torch.Tensor, rank: int, g: torch.Generator) -> list[torch.Tensor]:
    """Leading left singular vectors of each unfolding; seeded random columns where a mode
    has fewer than ``rank`` (the spatial modes), as tensorly's init='svd'."""
    factors = []
    for mode in range(4):
        u = torch.linalg.svd(unfold(w, mode), full_matrices=False)[0][:, :rank]
        if u.shape[1] < rank:
            extra = torch.randn(u.shape[0], rank - u.shape[1], generator=g, dtype=w.dtype)
            u = torch.cat([u, extra / math.sqrt(u.shape[0])], 1)
        factors.append(u)
    return factors


def cp_als(w: torch.Tensor, rank: int, iterations: int = 100, tol: float = 1e-7,
           ridge: float = 1e-6, seed: int = 0) -> tuple[list[torch.Tensor], list[float]]:
    """Rank-``rank`` CP of ``w`` (out, in, kh, kw) by alternating least squares.

    Returns the factors ``[a (out x R), b (in x R), c (kh x R), d (kw x R)]`` and the relative
    error after each sweep. The factors of the best sweep are returned, with each component's
    norm shared equally by its four factors (well-scaled for fine-tuning). Against the
    divergence Lebedev et al. report (two components growing large with opposite signs),
    each least-squares update carries a small ridge (``ridge`` times the mean diagonal of its
    Gram matrix), columns are renormalized every sweep, and the sweeps are bounded.
    """
    w64 = w.detach().double()
    factors = _svd_init(w64, rank, torch.Generator().manual_seed(seed))
    norm2 = float((w64 ** 2).sum())
    best, errors = None, []
    for _ in range(iterations):
        for mode in range(4):
            others = [factors[m] for m in range(4) if m != mode]
            gram = torch.ones(rank, rank, dtype=torch.float64)
            for f in others:
                gram = gram * (f.T @ f)
            mttkrp = torch.einsum(_MTTKRP[mode], w64, *others)
            regular = gram + ridge * gram.diagonal().mean() * torch.eye(rank, dtype=gram.dtype)
            new = torch.linalg.solve(regular, mttkrp.T).T
            if mode < 3:     # unit columns; the last factor carries the weights
                new = new / new.norm(dim=0).clamp_min(1e-300)
            factors[mode] = new
        # ||W - W_hat||^2 = ||W||^2 - 2 <W, W_hat> + ||W_hat||^2, from the last update's terms
        inner = float((mttkrp * new).sum())
        fitted = float((gram * (new.T @ new)).sum())
        errors.append(math.sqrt(max(norm2 - 2 * inner + fitted, 0.0) / norm2))
        if best is None or errors[-1] < best[0]:
            best = (errors[-1], [f.clone() for f in factors])
        if len(errors) > 1 and abs(errors[-2] - errors[-1]) < tol:
            break
    return [f.to(w.dtype) for f in _balance(best[1])], errors


def _balance(factors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same CP with each component's norm split equally over its four factors (and the
    sign kept in the first)."""
    norms = torch.stack([f.norm(dim=0) for f in factors]).clamp_min(1e-300)   # (4, R)
    share = norms.prod(0) ** 0.25
    return [f / n * share for f, n in zip(factors, norms)]


# ------------------------------------------------------------------ block term


def block_term_to_kernel(cores: torch.Tensor, us: torch.Tensor, vs: torch.Tensor
                         ) -> torch.Tensor:
    """``sum_b cores[b] x0 us[b] x1 vs[b]``: cores (B, r_out, r_in, kh, kw), us (B, out,
    r_out), vs (B, in, r_in)."""
    return torch.einsum("bpqhw,bop,biq->oihw", cores, us, vs)


def block_term(w: torch.Tensor, blocks: int, rank_out: int, rank_in: int, sweeps: int = 10,
               ridge: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                list[float]]:
    """A sum of ``blocks`` Tucker-2 blocks of ranks (rank_out, rank_in) fitted to ``w``.

    Start: block b is the HOSVD Tucker-2 of what blocks 0..b-1 leave (greedy on residuals).
    Then ``sweeps`` of alternating least squares: all output factors at once, all input
    factors at once, then the cores block by block; each step is the exact least-squares solution
    given the others, so the error never grows. Returns ``(cores, us, vs, errors)``, errors
    the relative error of the start and after each sweep. With ``blocks=1`` and ``sweeps=0``
    this is ``tucker2``.
    """
    w64 = w.detach().double()
    residual, parts = w64.clone(), []
    for _ in range(blocks):
        core, u, v = tucker2(residual, rank_out, rank_in)
        residual = residual - tucker2_to_kernel(core, u, v)
        parts.append((core, u, v))
    cores, us, vs = (torch.stack(p) for p in zip(*parts))
    errors = [relative_error(w64, block_term_to_kernel(cores, us, vs))]
    for _ in range(sweeps):
        us = _solve_outer(w64, cores, vs, ridge)
        vs = _solve_outer(w64.transpose(0, 1), cores.transpose(1, 2), us, ridge)
        cores = _solve_cores(w64, us, vs, cores)
        errors.append(relative_error(w64, block_term_to_kernel(cores, us, vs)))
    return cores.to(w.dtype), us.to(w.dtype), vs.to(w.dtype), errors


def _solve_outer(w: torch.Tensor, cores: torch.Tensor, vs: torch.Tensor, ridge: float
                 ) -> torch.Tensor:
    """Least-squares output factors of every block, given the cores and input factors."""
    blocks, r_out = cores.shape[:2]
    m = torch.einsum("bpqhw,biq->bpihw", cores, vs).reshape(blocks * r_out, -1)
    gram = m @ m.T
    gram = gram + ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    u_all = torch.linalg.solve(gram, m @ unfold(w, 0).T).T            # (out, B * r_out)
    return u_all.reshape(w.shape[0], blocks, r_out).transpose(0, 1)


def _solve_cores(w: torch.Tensor, us: torch.Tensor, vs: torch.Tensor, cores: torch.Tensor
                 ) -> torch.Tensor:
    """Least-squares cores, one block after the other given the rest (block Gauss-Seidel):
    block b's core is ``R_b x0 pinv(U_b) x1 pinv(V_b)``, R_b what the other blocks leave.
    Each update is exact, so the error never grows; a joint solve over all blocks would
    cost (B r_out r_in)^3."""
    cores = cores.clone()
    residual = w - block_term_to_kernel(cores, us, vs)
    for b in range(len(cores)):
        residual = residual + block_term_to_kernel(cores[b:b + 1], us[b:b + 1], vs[b:b + 1])
        cores[b] = torch.einsum("oihw,po,qi->pqhw", residual, torch.linalg.pinv(us[b]),
                                torch.linalg.pinv(vs[b]))
        residual = residual - block_term_to_kernel(cores[b:b + 1], us[b:b + 1], vs[b:b + 1])
    return cores


# ------------------------------------------------------------------ chains


def layer_kernel(layer: nn.Module) -> torch.Tensor:
    """The dense kernel (out, in, kh, kw) that a ``tensor.CPConv`` (it has a ``vertical``
    stage) or a ``tensor.Tucker2Conv`` computes."""
    if hasattr(layer, "vertical"):
        return cp_to_kernel([layer.last.weight[..., 0, 0], layer.first.weight[..., 0, 0].T,
                             layer.vertical.weight[:, 0, :, 0].T,
                             layer.horizontal.weight[:, 0, 0, :].T])
    blocks = layer.config["blocks"]
    r_in, r_out = layer.config["rank_in"], layer.config["rank_out"]
    vs = layer.first.weight[..., 0, 0].reshape(blocks, r_in, -1).transpose(1, 2)
    cores = layer.core.weight.reshape(blocks, r_out, r_in, *layer.core.weight.shape[2:])
    us = layer.last.weight[..., 0, 0].reshape(-1, blocks, r_out).transpose(0, 1)
    return torch.einsum("bpqhw,bop,biq->oihw", cores, us, vs)
