"""Checks of lesson 05's exercises (low rank, approximation and hashing).

Each ``check_<name>(function)`` runs the student's function on real layers of the zoo's
LeNet-300-100 (and, for the circulant product, on real MNIST test images), compares the result
with the library's own function and prints what is wrong.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import run
from .. import data, zoo
from ..lowrank import matrix_tensors as mt
from ..lowrank.circulant import circulant_apply, circulant_matrix, project_to_circulant, random_signs


@lru_cache(maxsize=1)
def _dense() -> tuple[tuple[str, torch.Tensor], ...]:
    """LeNet-300-100's three dense layers, named with their shapes."""
    net = zoo.pretrained("lenet300")
    return tuple((f"lenet300 net.{i} ({'x'.join(map(str, net.net[i].weight.shape))})",
                  net.net[i].weight.detach().clone()) for i in (1, 3, 5))


def _as_matrix(value, label: str) -> torch.Tensor | str:
    try:
        return torch.as_tensor(value).detach().double()
    except Exception:
        return f"{label} should be a tensor, got {type(value).__name__}"


# ------------------------------------------------------------------ 1. truncated SVD factors


def check_low_rank_factors(function) -> bool | None:
    """``function(weight, k)`` -> ``(A, B)``, A (m x k) and B (k x n), with A @ B the best
    rank-k approximation of ``weight`` (Eckart-Young); the oracle is ``mt.truncated_svd``."""

    def judge(label, result, args, kwargs):
        weight, k = args
        m, n = weight.shape
        try:
            a, b = result
        except Exception:
            return "expected a pair (A, B) of matrices"
        a, b = _as_matrix(a, "A"), _as_matrix(b, "B")
        for bad in (a, b):
            if isinstance(bad, str):
                return bad
        if tuple(a.shape) == (k, m) and tuple(b.shape) == (n, k):
            return (f"A is {k}x{m} and B {n}x{k}: transposed; A should be {m}x{k} (m x k) and "
                    f"B {k}x{n}, so that A @ B has the weight's shape")
        if tuple(a.shape) != (m, k) or tuple(b.shape) != (k, n):
            return (f"A should be {m}x{k} and B {k}x{n} (rank {k}), got {'x'.join(map(str, a.shape))} "
                    f"and {'x'.join(map(str, b.shape))}")
        left, right = mt.truncated_svd(weight, k)
        best = left @ right
        w = weight.double()
        error, optimum = (w - a @ b).norm().item(), (w - best).norm().item()
        if (a @ b - best).norm().item() <= 1e-4 * best.norm().item():
            return None
        u, s, vh = mt.svd(weight)
        if (a @ b - u[:, :k] @ vh[:k]).norm() <= 1e-4 * k ** 0.5:
            return ("A @ B is U_k V_k^T: the singular values are missing (put sqrt(S_k) in each "
                    "factor, or S_k in one of them)")
        smallest = (u[:, -k:] * s[-k:]) @ vh[-k:]
        if (a @ b - smallest).norm() <= 1e-4 * max(smallest.norm().item(), 1e-12):
            return ("you kept the k smallest singular values; torch.linalg.svd returns them "
                    "largest first, keep the first k")
        return (f"||W - A B||_F = {error:.5f}, but the best rank-{k} matrix errs by "
                f"sqrt(sum of the dropped sigma_i^2) = {optimum:.5f}")

    cases = [(f"{label}, k = {k}", (weight, k), {})
             for (label, weight), k in zip(_dense(), (30, 20, 5))]
    return run("low_rank_factors", function, cases, judge,
               "A @ B is the truncated SVD (the Eckart-Young optimum) of every LeNet-300-100 "
               "layer, as mt.truncated_svd")


# ------------------------------------------------------------------ 2. rank for an energy share


def check_rank_for_energy(function) -> bool | None:
    """``function(weight, energy)`` -> the smallest rank k whose k largest squared singular
    values hold at least ``energy`` of their sum (``lowrank.svd``'s ``by="energy"``)."""

    def judge(label, result, args, kwargs):
        weight, energy = args
        try:
            got = int(result)
        except Exception:
            return f"expected an integer rank, got {type(result).__name__}"
        if got != result:
            return f"expected an integer rank, got {result!r}"
        s = mt.singular_values(weight)
        want = mt.rank_from(s ** 2, "energy", 0, 0.0, energy)
        if got == want:
            return None
        if got == mt.rank_from(s, "energy", 0, 0.0, energy):
            return (f"you returned {got}, which is the rank for {energy:.0%} of the sum of the "
                    f"singular values; the energy is their squares: {want}")
        share = (s[:got] ** 2).sum() / (s ** 2).sum() if 0 < got <= len(s) else None
        kept = f" (rank {got} keeps {share.item():.2%})" if share is not None else ""
        if got == want - 1:
            return (f"you returned {got}{kept}, one less than the smallest rank that reaches "
                    f"{energy:.0%}: {want} (a 0-based index of the first k that reaches it?)")
        if got == want + 1:
            return f"you returned {got}, one more than needed: rank {want} already keeps {energy:.0%}"
        return f"expected rank {want} (the smallest keeping {energy:.0%} of sum sigma_i^2), got {got}{kept}"

    cases = [(f"{label}, energy {e}", (weight, e), {}) for label, weight in _dense()
             for e in (0.5, 0.9, 0.99)]
    return run("rank_for_energy", function, cases, judge,
               "the smallest rank reaching each energy share on every LeNet-300-100 layer, as "
               "SVD(by='energy').plan")


# ------------------------------------------------------------------ 3. circulant product by FFT


@lru_cache(maxsize=1)
def _circulant_cases() -> tuple:
    """r: the circulant nearest to LeNet-300-100's fc1 (N = 784, as approx.circulant starts)
    and to its head padded to an odd size (N = 101); x: real MNIST test images."""
    (_, fc1), _, (_, head) = _dense()
    test = data.mnist("test")
    images = test.normalize(test.images[:8]).flatten(1).double()          # 8 x 784
    r784 = project_to_circulant(fc1.double(), torch.ones(784, dtype=torch.float64), 784)
    r101 = project_to_circulant(head.double(), torch.ones(100, dtype=torch.float64), 101)
    hidden = torch.nn.functional.pad(images[:, :100], (0, 1))                        # 8 x 101
    return (("fc1's circulant, N = 784, 8 test images", (r784, images)),
            ("the head's circulant, N = 101 (odd), 8 inputs", (r101, hidden)),
            ("one image, N = 784, signs flipped at random",
             (r784, images[0] * random_signs(784, 0).double())))


def check_circulant_product(function) -> bool | None:
    """``function(r, x)`` -> C(r) x for every row of ``x`` (..., N), C[i, j] = r[(i - j) mod N],
    computed with the FFT; the oracle is ``circulant_apply`` (signs all +1)."""

    def judge(label, result, args, kwargs):
        r, x = args
        got = _as_matrix(result, "the result")
        if isinstance(got, str):
            return got
        n = r.shape[0]
        want = circulant_apply(x, r, torch.ones(n, dtype=r.dtype), n)
        if got.shape != want.shape:
            hint = (" (irfft returns an even length unless you pass n=N)"
                    if got.shape[-1] == n - 1 else "")
            return f"expected shape {tuple(want.shape)}, got {tuple(got.shape)}{hint}"
        scale = want.abs().max().item()
        if (got - want).abs().max().item() <= 1e-5 * scale:
            return None
        transposed = x @ circulant_matrix(r)                   # C(r)^T x, row by row
        if (got - transposed).abs().max().item() <= 1e-5 * scale:
            return ("you computed C(r)^T x, the circular correlation (a conj() on one of the "
                    "spectra gives it); C[i, j] = r[(i - j) mod N]: multiply the two spectra as they are")
        worst = (got - want).abs().max().item()
        return (f"largest difference from C(r) x is {worst:.3g} (the values are of size "
                f"{scale:.3g})")

    return run("circulant_product", function,
               [(label, args, {}) for label, args in _circulant_cases()], judge,
               "C(r) x by FFT equals the explicit circulant product on LeNet-300-100's "
               "circulant layers and MNIST images, as circulant_apply")
