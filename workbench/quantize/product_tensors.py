"""Product and residual quantization on matrices (Gong et al. 2014), Q-CNN's output-error
refinement (Wu et al. 2016) and the PQ regularizer's pieces (Soulie et al. 2016): the
functions on tensors of the ``product`` methods. The layout (input axis split into column
blocks) is described in ``product``."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

# ------------------------------------------------------------------ PQ and RQ on matrices


def subspaces(W: torch.Tensor, subvector: int) -> torch.Tensor:
    """(M, out, d): the rows of ``W`` (out x n) cut into column blocks of ``d`` (zero-padded)."""
    out, n = W.shape
    M = -(-n // subvector)
    padded = F.pad(W, (0, M * subvector - n))
    return padded.reshape(out, M, subvector).transpose(0, 1)


def kmeans(points: np.ndarray, k: int, seed: int, init=None) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels) of scikit-learn's KMeans; ``k`` is capped at the number of points."""
    k = min(k, len(points))
    km = KMeans(k, init="k-means++" if init is None else init, n_init=1, random_state=seed)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # fewer distinct points than k
        km.fit(points)
    return km.cluster_centers_, km.labels_


def pq_codebooks(W: torch.Tensor, subvector: int, k: int, seed: int = 0):
    """Product quantization of a matrix: k-means in each sub-space (Gong et al. 2014).

    Returns codebooks (M, K, d) float32 and codes (out, M) int64, K = min(k, out).
    """
    blocks = subspaces(W.detach().double(), subvector).numpy()
    fitted = [kmeans(b, k, seed) for b in blocks]
    codebooks = torch.from_numpy(np.stack([c for c, _ in fitted])).float()
    codes = torch.from_numpy(np.stack([l for _, l in fitted], axis=1)).long()
    return codebooks, codes


def pq_reconstruct(codebooks: torch.Tensor, codes: torch.Tensor, n: int | None = None):
    """The (out, n) matrix the codes select: row t, block m is ``codebooks[m, codes[t, m]]``."""
    M = codebooks.shape[0]
    W = codebooks[torch.arange(M), codes]                 # (out, M, d)
    return W.reshape(codes.shape[0], -1)[:, :n]


def pq_assign(W: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(out, M) index of the nearest codeword of every sub-vector of ``W``."""
    blocks = subspaces(W, codebooks.shape[2])             # (M, out, d)
    return torch.cdist(blocks, codebooks).argmin(2).t()


def rq_stages(W: torch.Tensor, subvector: int, k: int, stages: int, seed: int = 0):
    """Residual quantization (Gong et al. 2014): stage s runs PQ on what stages < s missed.

    Returns codebooks (S, M, K, d) and codes (S, out, M); ``subvector=n`` quantizes whole rows.
    """
    residual, books, codes = W.detach().float(), [], []
    for s in range(stages):
        cb, cd = pq_codebooks(residual, subvector, k, seed + s)
        residual = residual - pq_reconstruct(cb, cd, W.shape[1])
        books.append(cb)
        codes.append(cd)
    return torch.stack(books), torch.stack(codes)


def pq_weight(codebooks: torch.Tensor, codes: torch.Tensor, shape) -> torch.Tensor:
    """The layer weight of a (multi-stage) PQ: stages summed in order; one function for the
    model's forward and the decoder, so both give the same bits."""
    n = math.prod(shape[1:])
    W = pq_reconstruct(codebooks[0], codes[0], n)
    for s in range(1, codes.shape[0]):
        W = W + pq_reconstruct(codebooks[s], codes[s], n)
    return W.reshape(shape)


# ------------------------------------------------------------------ Q-CNN (Wu et al. 2016)

def qcnn_refine(X: torch.Tensor, T: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor,
                sweeps: int = 3, damping: float = 1e-3):
    """Minimize the OUTPUT error ``||T - X W_hat^T||`` over codebooks and codes (Wu et al.).

    ``X`` (N, n): sampled inputs of the layer; ``T`` (N, out): the outputs to reproduce. Block
    coordinate descent over the sub-spaces: with the other blocks fixed, block m must explain
    the residual ``R = T - sum_{m' != m} S_m' W_m'^T``; its codewords are the least-squares
    solution for the rows assigned to them, then each row takes the codeword of lowest output
    error, ``D_k' G D_k - 2 D_k' P_t`` with ``G = S'S``, ``P = S'R``. ``damping`` (relative to
    G's mean diagonal) pulls a codeword toward its old value where the samples say nothing
    (e.g. an input that is always zero), instead of leaving it undefined.
    """
    M, K, d = codebooks.shape
    S_all = subspaces(X.double(), d)                      # (M, N, d)
    D = codebooks.double().clone()
    codes = codes.clone()
    T = T.double()
    Wb = D[torch.arange(M), codes].transpose(0, 1)        # (M, out, d): current block weights
    Y = torch.einsum("mnd,mod->no", S_all, Wb)
    for _ in range(sweeps):
        for m in range(M):
            S = S_all[m]
            R = T - Y + S @ Wb[m].t()
            G, P = S.t() @ S, S.t() @ R                  # (d, d), (d, out)
            lam = damping * G.diagonal().mean() + 1e-12
            counts = torch.bincount(codes[:, m], minlength=K).double()
            summed = torch.zeros(K, d, dtype=torch.float64).index_add_(0, codes[:, m], P.t())
            A = counts[:, None, None] * G + lam * counts.clamp(min=1)[:, None, None] * \
                torch.eye(d, dtype=torch.float64)
            rhs = summed + lam * counts.clamp(min=1)[:, None] * D[m]
            D[m] = torch.where(counts[:, None] > 0, torch.linalg.solve(A, rhs), D[m])
            cost = ((D[m] @ G) * D[m]).sum(1)[:, None] - 2 * D[m] @ P    # (K, out)
            codes[:, m] = cost.argmin(0)
            new = D[m][codes[:, m]]
            Y += S @ (new - Wb[m]).t()
            Wb[m] = new
    return D.float(), codes


# ------------------------------------------------------------------ PQ regularizer (Soulie)

def pq_penalty(W: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``||W - Q(W)||^2``, Q(W) the nearest-codeword reconstruction, held constant: its
    gradient is ``2 (W - Q(W))``, a pull of each sub-vector toward its codeword."""
    target = pq_reconstruct(codebooks, pq_assign(W.detach(), codebooks), W.shape[1])
    return ((W - target.detach()) ** 2).sum()


def lloyd_update(W: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """One k-means step in every sub-space: codewords move to the mean of their sub-vectors
    (a codeword nobody uses stays)."""
    M, K, d = codebooks.shape
    blocks, codes = subspaces(W, d), pq_assign(W, codebooks)       # (M, out, d), (out, M)
    slot = (codes.t() + K * torch.arange(M)[:, None]).flatten()    # codeword id over all m
    sums = torch.zeros(M * K, d, dtype=W.dtype).index_add_(0, slot, blocks.reshape(-1, d))
    n = torch.bincount(slot, minlength=M * K)[:, None]
    new = torch.where(n > 0, sums / n.clamp(min=1), codebooks.reshape(-1, d))
    return new.reshape(M, K, d)
