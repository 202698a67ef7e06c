"""Checks of lesson 04's exercises (binary and ternary networks).

Each ``check_<name>(function)`` runs the student's function on real layers of the zoo's
LeNet-300-100 and LeNet-5 (and, for the XNOR dot product, on real activations of MNIST test
images), compares the result with the library's own function and prints what is wrong.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import run
from .. import data, zoo
from ..binary import core, ternary


@lru_cache(maxsize=1)
def _layers() -> tuple[tuple[str, torch.Tensor], ...]:
    """Real weights: LeNet-300-100's three dense layers, LeNet-5's two convolutions."""
    lenet300, lenet5 = zoo.pretrained("lenet300"), zoo.pretrained("lenet5")
    named = [("lenet300 net.1", lenet300.net[1]), ("lenet300 net.3", lenet300.net[3]),
             ("lenet300 net.5", lenet300.net[5]), ("lenet5 features.0", lenet5.features[0]),
             ("lenet5 features.2", lenet5.features[2])]
    return tuple((f"{name} ({'x'.join(map(str, m.weight.shape))})", m.weight.detach().clone())
                 for name, m in named)


def _tensor(result, like: torch.Tensor) -> torch.Tensor | str:
    """The student's result as a tensor of ``like``'s shape, or what is wrong with it."""
    try:
        result = torch.as_tensor(result, dtype=like.dtype)
    except Exception:
        return f"expected a tensor, got {type(result).__name__}"
    if result.shape != like.shape:
        return f"expected a tensor of shape {tuple(like.shape)} (the weight's), got {tuple(result.shape)}"
    return result


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------ 1. binarize (BWN)


def check_binarize(function) -> bool | None:
    """``function(weight)`` -> alpha_c * sign(W), one least-squares alpha per output channel
    (BWN), sign(0) = +1; the oracle is ``core.binarize(weight, per_channel=True)``."""

    def judge(label, result, args, kwargs):
        (weight,) = args
        got = _tensor(result, weight)
        if isinstance(got, str):
            return got
        want = core.binarize(weight, per_channel=True)
        if _close(got, want):
            return None
        if _close(got, core.binarize(weight, per_channel=False)):
            return ("you use one scale for the whole layer; BWN takes one per output channel "
                    "(the mean of |W| over every dimension but the first)")
        zeros = int((got == 0).sum())
        if zeros:
            return (f"{zeros:,} of your values are 0; a binary weight is +alpha or -alpha "
                    "(sign(0) = +1: torch.sign gives 0 there, core.sign does not)")
        flat = got.flatten(1).abs()
        spread = (flat.max(1).values - flat.min(1).values) > 1e-6 * flat.max(1).values.clamp(min=1e-12)
        if spread.any():
            c = int(spread.nonzero()[0])
            return (f"output channel {c} holds {len(torch.unique(flat[c])):,} different magnitudes; "
                    "each channel should be +-alpha_c with a single alpha_c (for a convolution "
                    "take the mean over the input channels and both kernel dimensions)")
        wrong_signs = int((torch.sign(got) != core.sign(weight)).sum())
        alpha = core.ls_scale(weight).flatten()
        mine = flat[:, 0]
        if wrong_signs:
            return (f"{wrong_signs:,} of {weight.numel():,} signs differ from sign(W)"
                    + (" (is your alpha negative? the mean of W, not of |W|, can be)"
                       if (torch.sign(got) != core.sign(weight)).flatten(1).all(1).any() else ""))
        rms = weight.flatten(1).pow(2).mean(1).sqrt()
        largest = weight.flatten(1).abs().max(1).values
        hint = ("you took the root mean square; the least-squares scale is mean|W|"
                if torch.allclose(mine, rms, rtol=1e-4) else
                "you took max|W|; the least-squares scale is mean|W|"
                if torch.allclose(mine, largest, rtol=1e-4) else
                "alpha should be mean|W| of the channel")
        c = int((mine - alpha).abs().argmax())
        return (f"the signs are right but the scales are not: channel {c} has alpha "
                f"{mine[c].item():.5f}, the least-squares alpha is {alpha[c].item():.5f}; {hint}")

    cases = [(label, (weight,), {}) for label, weight in _layers()]
    return run("binarize", function, cases, judge,
               "alpha_c sign(W) with alpha_c = mean|W_c|, on every layer of LeNet-300-100 and "
               "LeNet-5's convolutions, as core.binarize")


# ------------------------------------------------------------------ 2. XNOR-popcount dot


def pack(signs) -> int:
    """+-1 values -> one Python integer whose bit i is 1 where element i is +1."""
    return sum(1 << i for i, s in enumerate(torch.as_tensor(signs).flatten().tolist()) if s > 0)


@lru_cache(maxsize=1)
def _dot_cases() -> tuple:
    """Signs of LeNet-300-100's second-layer inputs (real MNIST test images, shifted by 0.5 so
    both signs occur, as in the lesson) against the signs of rows of its weight."""
    net = zoo.pretrained("lenet300")
    test = data.mnist("test")
    x = test.normalize(test.images[:4]).flatten(1)
    with torch.no_grad():
        inputs = core.sign(torch.relu(net.net[1](x)) - 0.5)          # 4 x 300
    weight = core.sign(net.net[3].weight.detach())                    # 100 x 300
    cases = []
    for image, unit in ((0, 0), (1, 7), (2, 42), (3, 99)):
        a, w = inputs[image], weight[unit]
        cases.append((f"test image {image}, net.3 unit {unit} (K = 300)", (pack(a), pack(w), 300),
                      int((a * w).sum())))
    a8, w8 = torch.tensor([1, -1, -1, 1, 1, 1, -1, 1]), torch.tensor([1, 1, -1, -1, 1, -1, -1, 1])
    cases.append(("the lesson's eight signs (K = 8)", (pack(a8), pack(w8), 8), int((a8 * w8).sum())))
    return tuple(cases)


def check_xnor_dot(function) -> bool | None:
    """``function(a_bits, w_bits, k)`` -> the dot product of two +-1 vectors of length k given
    as packed integers (bit i = 1 where element i is +1): K - 2 popcount(a XOR w)."""
    expected = {label: want for label, _, want in _dot_cases()}

    def judge(label, result, args, kwargs):
        a_bits, w_bits, k = args
        want = expected[label]
        try:
            got = int(result)
        except Exception:
            return f"expected an integer, got {type(result).__name__}"
        if got != result:
            return f"expected an integer, got {result!r}"
        if got == want:
            return None
        d = bin(a_bits ^ w_bits).count("1")
        if got == d:
            return (f"you returned popcount(a XOR w) = {d}, the number of disagreeing signs; "
                    f"the dot product is K - 2 x popcount = {want}")
        if got == k - d:
            return (f"you returned K - popcount = {got}, the number of agreements; each "
                    f"disagreement also subtracts 1: K - 2 x popcount = {want}")
        if got == -want:
            return (f"you returned {got}, the negative of the dot product {want}: equal bits "
                    "(XOR 0) are agreements, +1 each")
        return f"expected {want} (the sum of the products of the signs), got {got}"

    return run("xnor_dot", function, [(label, args, {}) for label, args, _ in _dot_cases()], judge,
               "K - 2 popcount(a XOR w) equals the sum of products on real signs of LeNet-300-100")


# ------------------------------------------------------------------ 3. ternarize (TWN)


def check_ternarize(function) -> bool | None:
    """``function(weight, c)`` -> alpha * T with TWN's Delta = c * mean|W| over the whole layer,
    T = sign(W) where |W| > Delta else 0, alpha = mean|W| over the kept weights; the oracle is
    ``ternary.twn_ternarize(weight, c)``."""

    def judge(label, result, args, kwargs):
        weight, c = args
        got = _tensor(result, weight)
        if isinstance(got, str):
            return got
        want = ternary.twn_ternarize(weight, c)
        if _close(got, want):
            return None
        delta = ternary.twn_threshold(weight, c)
        zeros, want_zeros = int((got == 0).sum()), int((want == 0).sum())
        if zeros != want_zeros:
            if zeros == 0:
                return "no weight is 0: below the threshold Delta = c mean|W| a ternary weight is 0"
            if zeros == int((weight.abs() <= c * weight.abs().max()).sum()):
                return (f"{zeros:,} zeros where TWN has {want_zeros:,}: your threshold is c max|W|; "
                        "TWN's is Delta = c mean|W| over the whole layer")
            return (f"{zeros:,} zeros where TWN has {want_zeros:,} (Delta = c mean|W| = "
                    f"{delta.item():.5f}; the weights with |W| <= Delta become 0)")
        if (torch.sign(got) != ternary.ternary_codes(weight, delta)).any():
            return "the zeros are in the right places but some signs differ from sign(W)"
        values = torch.unique(got.abs()[got != 0])
        alpha = ternary.twn_scale(weight, delta).item()
        if len(values) > 1 and not torch.allclose(values, values[0].expand_as(values), rtol=1e-4):
            return (f"{len(values):,} different non-zero magnitudes; TWN takes one alpha per "
                    f"layer (the mean of |W| over the kept weights, {alpha:.5f})")
        mine = values[0].item()
        if abs(mine - weight.abs().mean().item()) < 1e-6 * max(mine, 1e-12) + 1e-9:
            return (f"alpha = {mine:.5f} is the mean of |W| over all weights; TWN's alpha is "
                    f"the mean over the kept ones, |W| > Delta: {alpha:.5f}")
        return f"alpha = {mine:.5f}, TWN's (mean of |W| over |W| > Delta) is {alpha:.5f}"

    cases = [(f"{label}, c = {c}", (weight, c), {}) for label, weight in _layers()
             for c in (0.7, 1.2)]
    return run("ternarize", function, cases, judge,
               "TWN's Delta = c mean|W| and alpha over the kept weights on every layer, at "
               "c = 0.7 and 1.2, as ternary.twn_ternarize")
