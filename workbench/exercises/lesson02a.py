"""Exercises of lesson 02a (quantization: number formats, rounding and codebooks).

``check_to_fixed_point(f)``: ``f(x, word, frac)`` rounds to the nearest point of the fixed-point
grid Q(word, frac) (halves up, as Gupta et al. define it) and saturates at the range's ends;
compared with ``quantize.scalar.fixed_point(x, word, frac, "nearest")`` on real layers.
``check_lloyd_step(f)``: ``f(weights, centroids)`` does ONE iteration of Lloyd's k-means in one
dimension (assign every weight to its nearest centroid, move each centroid to the mean of its
weights) and returns the new centroids, sorted; compared with ``quantize.kmeans.lloyd_1d(...,
max_iter=1)`` on real layers from the three starts of the lesson.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import run


@lru_cache(maxsize=1)
def _layers() -> dict[str, torch.Tensor]:
    from .. import zoo
    lenet300, lenet5 = zoo.pretrained("lenet300"), zoo.pretrained("lenet5")
    return {"lenet300 net.1": lenet300.net[1].weight.detach(),
            "lenet300 net.5": lenet300.net[5].weight.detach(),
            "lenet5 features.0": lenet5.features[0].weight.detach()}


# ------------------------------------------------------------------ fixed point

def _fixed_point_cases():
    layers = _layers()
    step = 2.0 ** -4
    midpoints = (torch.arange(-6, 6, dtype=torch.float32) + 0.5) * step   # exact half steps
    return [("lenet300 net.1 in Q(8, 7)", (layers["lenet300 net.1"], 8, 7), {}),
            ("lenet300 net.1 in Q(8, 9) (its largest weights lie beyond the range)",
             (layers["lenet300 net.1"], 8, 9), {}),
            ("lenet5 features.0 in Q(4, 3)", (layers["lenet5 features.0"], 4, 3), {}),
            ("the half steps (k + 1/2) / 16 in Q(6, 4)", (midpoints, 6, 4), {})]


def _judge_fixed_point(label, got, args, kwargs):
    from ..quantize.scalar import fixed_point, fixed_point_range
    x, word, frac = args
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return f"expected a tensor of shape {tuple(x.shape)}, got {_describe(got)}"
    want = fixed_point(x, word, frac, "nearest")
    got = got.to(want.dtype)
    if torch.equal(got, want):
        return None
    low, high, step = fixed_point_range(word, frac)
    scaled = got / step
    if not torch.equal(scaled, scaled.round()):
        return (f"some values are not on the grid: every value must be a whole multiple of the "
                f"step 2^-{frac} = {step:g}")
    if got.max() > high or got.min() < low:
        return (f"values reach {got.min():.4g} .. {got.max():.4g}, beyond the range "
                f"[{low:g}, {high:g}]: saturate (clamp k to [-2^(word-1), 2^(word-1) - 1])")
    wrong = got != want
    halves = (x / step - torch.floor(x / step)) == 0.5
    if bool(wrong[~halves].sum() == 0):
        return (f"{int(wrong.sum())} values differ, all exact half steps: Gupta et al. round "
                "halves up, floor(x / step + 1/2); torch.round rounds them to the even neighbour")
    i = int(wrong.flatten().nonzero()[0])
    return (f"{int(wrong.sum()):,} of {x.numel():,} values differ, e.g. x = "
            f"{float(x.flatten()[i]):.6g}: expected {float(want.flatten()[i]):.6g}, got "
            f"{float(got.flatten()[i]):.6g}")


def check_to_fixed_point(function) -> bool | None:
    """Compare ``function(x, word, frac)`` with the library's round-to-nearest fixed point."""
    return run("to_fixed_point", function, _fixed_point_cases(), _judge_fixed_point,
               "on the grid, saturated at the ends, halves rounded up: the library's values "
               "on every case")


# ------------------------------------------------------------------ one Lloyd step

def _lloyd_cases():
    from ..quantize.kmeans import init_centroids
    layers = _layers()
    return [(f"{name}, k={k}, {init} start", (w, init_centroids(w, k, init)), {})
            for name, k, init in (("lenet300 net.1", 8, "linear"),
                                  ("lenet300 net.5", 4, "density"),
                                  ("lenet5 features.0", 16, "random"))
            for w in (layers[name],)]


def _judge_lloyd(label, got, args, kwargs):
    from ..quantize.kmeans import lloyd_1d
    weights, centroids = args
    want = lloyd_1d(weights, centroids, max_iter=1)
    try:
        got = torch.as_tensor(got, dtype=torch.float64).flatten()
    except Exception:
        return f"expected a tensor of {len(centroids)} centroids, got {_describe(got)}"
    if got.numel() != want.numel():
        return f"expected {want.numel()} centroids, got {got.numel()}"
    if torch.isnan(got).any():
        return "some centroids are NaN: a mean over an empty cluster?"
    got = got.sort().values
    if torch.allclose(got, want, rtol=1e-6, atol=1e-9):
        return None
    if torch.allclose(got, centroids.double().sort().values):
        return "your centroids are the starting ones: move each to the mean of its weights"
    w = weights.detach().double().flatten()
    nearest = (w[:, None] - centroids.double()[None, :]).abs().argmin(1)
    medians = torch.stack([w[nearest == j].median() for j in range(len(centroids))])
    if torch.allclose(got, medians.sort().values, rtol=1e-6, atol=1e-9):
        return "you moved each centroid to the median of its weights; Lloyd's step takes the mean"
    j = int((got - want).abs().argmax())
    return (f"centroid {j} (sorted): expected {float(want[j]):.6g}, got {float(got[j]):.6g} "
            "(assign each weight to its NEAREST centroid, then take the mean per cluster)")


def check_lloyd_step(function) -> bool | None:
    """Compare ``function(weights, centroids)`` with one iteration of the library's k-means."""
    return run("lloyd_step", function, _lloyd_cases(), _judge_lloyd,
               "one assignment and one mean per cluster: the library's centroids on every case")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__}"
