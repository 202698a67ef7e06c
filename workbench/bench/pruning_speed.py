"""``python -m workbench bench pruning_speed``: does unstructured sparsity make a layer faster?

Two matrix products, timed at weight sparsity 0 to 0.99 (magnitude pruning), each as

- a dense matmul of the pruned weight matrix, zeros and all (``w @ x``): a dense kernel does
  the same work whatever the values, so its time should stay flat;
- a torch.sparse CSR matmul (``w.to_sparse_csr() @ x``), whose work shrinks with the nonzeros
  but pays for indices and irregular memory access.

Cases: LeNet-300-100's first layer (300 x 784, the zoo's trained weights when there, so the
sparsity pattern is the real one) on a batch of 64; and a VGG-small 3x3 convolution (64 -> 64
channels on 16 x 16, the fourth conv) as its im2col matmul, (64 x 576) @ (576 x 256) per image
(only the matmul is timed: the im2col unfold is the same for both).

Times are per call, from torch.utils.benchmark (``blocked_autorange``) at 1 and 2 threads, the
kernels at all sparsities taking turns over several rounds: ``*_ms`` is the median block,
``*_best_ms`` the fastest. ``ratio`` is dense / CSR (above 1: CSR is faster). The summary row
per case and thread count is computed from the fastest blocks, the kernels' own cost (on busy
cores the medians carry other processes' time; the crossover from the medians is beside it):
how flat the dense time stays (at the highest sparsity over at 0), and the crossover, the
lowest measured sparsity from which CSR is faster at every higher sparsity measured, with a
log-linear interpolation of the ratio between the grid points around it.
"""
from __future__ import annotations

import math
import os
import statistics
import warnings

import torch
import torch.nn.functional as F
from torch.utils import benchmark

SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
SMOKE_SPARSITIES = (0.0, 0.9, 0.99)
THREADS = (1, 2)


def lenet300_first_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(W 300x784, X 784x64, where W came from). Input values do not change the time."""
    from .. import zoo
    if "lenet300" in zoo.manifest():
        weight, source = zoo.pretrained("lenet300").net[1].weight.detach().clone(), "zoo"
    else:
        g = torch.Generator().manual_seed(seed)
        weight, source = torch.randn(300, 784, generator=g) * 784 ** -0.5, "random"
    x = torch.randn(784, 64, generator=torch.Generator().manual_seed(seed + 1))
    return weight, x, source


def vgg_conv_im2col(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(W 64x576, im2col columns 576x256 of one 64 x 16 x 16 feature map, where W came from)."""
    from .. import zoo
    if "vgg_small" in zoo.manifest():
        conv = zoo.pretrained("vgg_small").features[10]          # 64 -> 64 at 16 x 16
        weight, source = conv.weight.detach().reshape(conv.out_channels, -1).clone(), "zoo"
    else:
        g = torch.Generator().manual_seed(seed)
        weight, source = torch.randn(64, 576, generator=g) * 576 ** -0.5, "random"
    feature_map = torch.randn(1, 64, 16, 16, generator=torch.Generator().manual_seed(seed + 1))
    columns = F.unfold(feature_map, 3, padding=1)[0]             # (576, 256)
    return weight, columns.contiguous(), source


def pruned(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    from ..prune.magnitude import magnitude_mask
    return weight * magnitude_mask(weight, sparsity)


def crossover(points: list[tuple[float, float]]) -> tuple[float | None, float | None]:
    """(grid sparsity, interpolated sparsity) from which ratio > 1 at every higher point."""
    winning = None
    for i in range(len(points) - 1, -1, -1):
        if points[i][1] <= 1:
            break
        winning = i
    if winning is None:
        return None, None
    if winning == 0:
        return points[0][0], points[0][0]
    (s0, r0), (s1, r1) = points[winning - 1], points[winning]
    t = -math.log(r0) / (math.log(r1) - math.log(r0))      # where log(ratio) crosses 0
    return s1, round(s0 + t * (s1 - s0), 3)


def case_rows(case: str, weight: torch.Tensor, x: torch.Tensor, source: str,
              sparsities, threads: int, rounds: int, min_run_time: float) -> list[dict]:
    envs = []
    for sparsity in sparsities:
        w = pruned(weight, sparsity)
        with warnings.catch_warnings():     # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            env = {"w": w, "w_csr": w.to_sparse_csr(), "x": x}
        # the CSR product must be the same product before it is timed
        assert torch.allclose(env["w_csr"] @ x, w @ x, atol=1e-4)
        envs.append(env)
    # Every kernel at every sparsity takes its turn in each round, so that a busy spell of the
    # machine is spread over the whole table instead of spoiling one row.
    blocks = {(i, kind): [] for i in range(len(envs)) for kind in ("dense", "csr")}
    for _ in range(rounds):
        for (i, kind), times in blocks.items():
            stmt = "w @ x" if kind == "dense" else "w_csr @ x"
            timer = benchmark.Timer(stmt=stmt, globals=envs[i], num_threads=threads)
            times += timer.blocked_autorange(min_run_time=min_run_time).times
    rows = []
    for i, (sparsity, env) in enumerate(zip(sparsities, envs)):
        (dense, dense_best), (csr, csr_best) = (
            (statistics.median(blocks[i, k]) * 1e3, min(blocks[i, k]) * 1e3)
            for k in ("dense", "csr"))
        rows.append({"bench": "unstructured sparsity speed", "case": case, "weights": source,
                     "threads": threads, "sparsity": sparsity,
                     "nonzeros": int(env["w"].count_nonzero()), "dense_ms": round(dense, 4),
                     "csr_ms": round(csr, 4), "ratio": round(dense / csr, 3),
                     "dense_best_ms": round(dense_best, 4), "csr_best_ms": round(csr_best, 4),
                     "ratio_best": round(dense_best / csr_best, 3)})
    return rows


def summary(case: str, rows: list[dict]) -> dict:
    """Flatness and crossover from the fastest blocks (the kernels' own cost: on busy cores the
    medians carry other processes' time), the crossover from the medians beside it."""
    grid, interpolated = crossover([(r["sparsity"], r["ratio_best"]) for r in rows])
    median_grid, median_interpolated = crossover([(r["sparsity"], r["ratio"]) for r in rows])
    flat = rows[-1]["dense_best_ms"] / rows[0]["dense_best_ms"]
    dense = [r["dense_best_ms"] for r in rows]
    return {"bench": "unstructured sparsity speed: summary", "case": case,
            "threads": rows[0]["threads"], "max_sparsity": rows[-1]["sparsity"],
            "dense_at_max_over_at_0": round(flat, 3),
            "target_dense": "no gain: 0.8 to 1.25",
            "dense_flat": 0.8 <= flat <= 1.25,
            "dense_max_over_min": round(max(dense) / min(dense), 3),
            "crossover_sparsity": grid, "crossover_interpolated": interpolated,
            "target_crossover": "measured: where CSR starts to win",
            "crossover_from_medians": median_grid,
            "csr_speedup_at_max": rows[-1]["ratio_best"],
            # other work on the cores makes several threads wait for each other: say how busy
            "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def rows(smoke: bool = False) -> list[dict]:
    sparsities = SMOKE_SPARSITIES if smoke else SPARSITIES
    rounds, min_run_time = (1, 0.02) if smoke else (8, 0.03)
    cases = [("lenet300 fc1 300x784 @ 784x64", lenet300_first_layer()),
             ("vgg_small conv 64->64 16x16 im2col 64x576 @ 576x256", vgg_conv_im2col())]
    detail, summaries = [], []
    for case, (weight, x, source) in cases:
        for threads in THREADS:
            measured = case_rows(case, weight, x, source, sparsities, threads, rounds,
                                 min_run_time)
            detail += measured
            summaries.append(summary(case, measured))
    return detail + summaries
