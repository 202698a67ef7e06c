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

Times are per call, from ``workbench.timing.compare_calls`` on 1 and on 2 threads (fixed for
the measurement and recorded): at each sparsity the CSR and the dense product are warmed, then
timed in interleaved pairs of short blocks (30 pairs, 6 with ``--smoke``), so that a busy spell
of the machine hits both alike. ``csr_ms`` and ``dense_ms`` are each kernel's median call,
``ratio`` is the median over the pairs of dense / CSR (above 1: CSR is faster), ``ratio_iqr`` the
interquartile range of those per-pair ratios, ``significant`` False when that range includes 1
or the ratio is within 5% of 1 ("no measurable change"), ``load_avg`` the machine's 1-minute
load when the comparison ended. The summary row per case and thread count: whether the dense
time is flat (the dense product at the highest sparsity against the same product at 0, timed
the same way: the target is "no measurable change"), and the crossover, the lowest measured
sparsity from which CSR is measurably faster (significant, ratio above 1) at every higher
sparsity measured, with a log-linear interpolation of the median ratio to 1 between the grid
point below it and the crossover when the ratio below was under 1.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F

from .. import timing

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


def crossover(points: list[tuple[float, float, bool]]) -> tuple[float | None, float | None]:
    """(grid sparsity, interpolated sparsity) from which every point (sparsity, ratio,
    significant) is significant with ratio > 1. The interpolation, where the log of the median
    ratio crosses 0 between the point below and the crossover, is there only when the ratio
    below was under 1 (else None: above 1 there, but not measurably)."""
    winning = None
    for i in range(len(points) - 1, -1, -1):
        if not (points[i][2] and points[i][1] > 1):
            break
        winning = i
    if winning is None:
        return None, None
    if winning == 0:
        return points[0][0], points[0][0]
    (s0, r0, _), (s1, r1, _) = points[winning - 1], points[winning]
    if r0 >= 1:
        return s1, None
    t = -math.log(r0) / (math.log(r1) - math.log(r0))      # where log(ratio) crosses 0
    return s1, round(s0 + t * (s1 - s0), 3)


def case_rows(case: str, weight: torch.Tensor, x: torch.Tensor, source: str,
              sparsities, threads: int, pairs: int) -> tuple[list[dict], dict]:
    """One row per sparsity (the CSR product against the dense one, interleaved), and the
    dense product at the highest sparsity against at 0 (``timing.Comparison``)."""
    envs = []
    for sparsity in sparsities:
        w = pruned(weight, sparsity)
        with warnings.catch_warnings():     # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            env = {"w": w, "w_csr": w.to_sparse_csr()}
        # the CSR product must be the same product before it is timed
        assert torch.allclose(env["w_csr"] @ x, w @ x, atol=1e-4)
        envs.append(env)
    rows = []
    for sparsity, env in zip(sparsities, envs):
        c = timing.compare_calls(lambda w=env["w_csr"], x=x: w @ x,
                                 lambda w=env["w"], x=x: w @ x, threads=threads, pairs=pairs)
        rows.append({"bench": "unstructured sparsity speed", "case": case, "weights": source,
                     "threads": threads, "sparsity": sparsity,
                     "nonzeros": int(env["w"].count_nonzero()),
                     "csr_ms": round(c.a_ms, 4), "dense_ms": round(c.b_ms, 4),
                     "ratio": c.speedup, "ratio_iqr": list(c.spread),
                     "significant": c.significant, "csr_faster": c.significant and c.speedup > 1,
                     "display": c.display, "pairs": c.pairs, "load_avg": c.load_avg})
    flat = timing.compare_calls(lambda w=envs[-1]["w"], x=x: w @ x,
                                lambda w=envs[0]["w"], x=x: w @ x, threads=threads, pairs=pairs)
    return rows, flat


def summary(case: str, rows: list[dict], flat: timing.Comparison) -> dict:
    """Flatness of the dense time (``flat``: dense at the highest sparsity against at 0) and
    the crossover, from the interleaved comparisons."""
    grid, interpolated = crossover([(r["sparsity"], r["ratio"], r["significant"])
                                    for r in rows])
    return {"bench": "unstructured sparsity speed: summary", "case": case,
            "threads": rows[0]["threads"], "max_sparsity": rows[-1]["sparsity"],
            "dense_at_0_over_at_max": flat.speedup, "dense_flat_iqr": list(flat.spread),
            "dense_at_max_vs_at_0": flat.display,
            "target_dense": "no measurable change",
            "dense_flat": not flat.significant, "met": not flat.significant,
            "crossover_sparsity": grid, "crossover_interpolated": interpolated,
            "target_crossover": "measured: where CSR starts to win",
            "csr_speedup_at_max": rows[-1]["ratio"],
            "csr_speedup_at_max_iqr": rows[-1]["ratio_iqr"],
            "csr_at_max": rows[-1]["display"], "pairs": flat.pairs,
            # other work on the cores makes several threads wait for each other: say how busy
            "load_avg": flat.load_avg, "cpus": flat.cpus}


def rows(smoke: bool = False) -> list[dict]:
    sparsities = SMOKE_SPARSITIES if smoke else SPARSITIES
    pairs = 6 if smoke else timing.PAIRS
    cases = [("lenet300 fc1 300x784 @ 784x64", lenet300_first_layer()),
             ("vgg_small conv 64->64 16x16 im2col 64x576 @ 576x256", vgg_conv_im2col())]
    detail, summaries = [], []
    for case, (weight, x, source) in cases:
        for threads in THREADS:
            measured, flat = case_rows(case, weight, x, source, sparsities, threads, pairs)
            detail += measured
            summaries.append(summary(case, measured, flat))
    return detail + summaries
