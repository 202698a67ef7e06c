"""``python -m workbench bench architectures_guidelines``: ShuffleNet v2's four practical
guidelines (Ma et al. 2018, section 2, Tables 1-4), each measured on this CPU by a
micro-benchmark that repeats the paper's controlled experiment.

Target (issue 13): "equal channel widths minimize memory access cost; many groups raise it;
fragmentation lowers parallelism; element-wise operations are not free."

The networks are those of ``workbench.guidelines`` (which says how each is built), at batch 1:

- G1 (Table 1): 10 blocks of 1x1 convs c1 -> c2 -> c1, c1:c2 = 1:1, 1:2, 1:6, 1:12;
- G2 (Table 2): 10 1x1 group convs c -> c, g = 1, 2, 4, 8, c grown so that c^2/g is fixed;
- G3 (Table 3): 10 blocks of 1, 2 or 4 1x1 convs in series or in parallel (concatenated);
- G4 (Table 4): 10 ResNet bottleneck units with and without ReLU and shortcut.

Sizes. The paper's maps are 56 x 56, the first stage of an ImageNet network after its 4x stem;
a CIFAR network keeps its first stage at 32 x 32, so every map here is 32 x 32 (a third of the
paper's positions). Widths are the paper's own: two scales per guideline, each a column of its
tables (the ARM columns' "x1" widths, and the GPU columns' "x1" widths, which are the ARM
columns' x4 in Table 1, x2 in Table 2, c = 128 in Table 3; Table 4's c = 64 and 128). Table 2's
ARM width 180 for g = 8 is not a multiple of 8: we use ``group_width`` (184). G4's c is the
unit's outer width with an inner width of c/4 (our reading: the only one under which the
paper's ARM throughputs match those of its Table 3 at a plausible rate of multiply-adds).

Timing: ``timing.compare`` of the guideline's recommended variant (1:1, g = 1, 1-fragment, no
ReLU and no shortcut) against each other variant, interleaved, 1 thread; G3 also on 2 threads,
since it is about parallelism. ``ratio`` is the variant's time over the recommended one's (above
1: the guideline holds), with its interquartile range; ``met`` is True when the ratio is above
1 and ``compare`` calls it significant (spread excludes 1, beyond its 5% tolerance). Beside it,
the paper's ratio from the matching column of its tables (speed of the recommended variant over
that of this one), GPU (GTX 1080Ti, batches/s) and ARM (Snapdragon 810, one thread, images/s).
For G1 and G2 the paper's memory access cost formula, summed over the stack, stands beside the
time. A guideline that does not hold here is reported as measured.
"""
from __future__ import annotations

import torch

from .. import guidelines as G
from ..timing import compare_calls

SIZE = 32           # feature map side: a CIFAR network's first stage
SMOKE_SIZE = 8      # smoke mode: 16 times fewer positions, only to run every line in seconds
SOURCE = ("Ma et al. 2018, ShuffleNet V2, arXiv 1807.11164, section 2, Table {table} "
          "(checked in two transcriptions of the paper's text)")

# The paper's speeds: {variant: (GPU batches/s per column, ARM images/s per column)}.
# Table 1 and 2 columns are the x1, x2, x4 scalings of the listed widths; Tables 3 and 4
# columns are channel counts (GPU c = 128, 256, 512 and ARM c = 64, 128, 256 in Table 3;
# c = 32, 64, 128 on both in Table 4).
PAPER = {
    "G1": {"1:1": ((1480, 723, 232), (76.2, 21.7, 5.3)),
           "1:2": ((1296, 586, 206), (72.9, 20.5, 5.1)),
           "1:6": ((876, 489, 189), (69.1, 17.9, 4.6)),
           "1:12": ((748, 392, 163), (57.6, 15.1, 4.4))},
    "G2": {"g=1": ((2451, 1289, 437), (40.0, 10.2, 2.3)),
           "g=2": ((1725, 873, 341), (35.0, 9.5, 2.2)),
           "g=4": ((1026, 644, 338), (32.9, 8.7, 2.1)),
           "g=8": ((634, 445, 230), (27.8, 7.5, 1.8))},
    "G3": {"1-fragment": ((2446, 1274, 434), (40.2, 10.1, 2.3)),
           "2-fragment-series": ((1790, 909, 336), (38.6, 10.1, 2.2)),
           "4-fragment-series": ((752, 745, 349), (38.4, 10.1, 2.3)),
           "2-fragment-parallel": ((1537, 803, 320), (33.4, 9.1, 2.2)),
           "4-fragment-parallel": ((691, 572, 292), (35.0, 8.4, 2.1))},
    "G4": {"ReLU+shortcut": ((2427, 2066, 1436), (56.7, 16.9, 5.0)),
           "ReLU only": ((2647, 2256, 1735), (61.9, 18.8, 5.2)),
           "shortcut only": ((2672, 2121, 1458), (57.3, 18.2, 5.1)),
           "neither": ((2842, 2376, 1782), (66.3, 20.2, 5.4))},
}
TABLE = {"G1": 1, "G2": 2, "G3": 3, "G4": 4}
GUIDELINE = {"G1": "equal channel widths minimize memory access cost",
             "G2": "excessive group convolution increases memory access cost",
             "G3": "network fragmentation reduces the degree of parallelism",
             "G4": "element-wise operations are not negligible"}
RECOMMENDED = {"G1": "1:1", "G2": "g=1", "G3": "1-fragment", "G4": "neither"}
# the variant whose ratio judges a whole guideline (the paper's most extreme one)
EXTREME = {"G1": ("1:12",), "G2": ("g=8",), "G3": ("4-fragment-series", "4-fragment-parallel"),
           "G4": ("ReLU+shortcut",)}

# The paper's x1 widths (Table 1: (c1, c2); Table 2: c for g = 1, 2, 4, 8).
G1_WIDTHS = {"arm": {"1:1": (32, 32), "1:2": (22, 44), "1:6": (13, 78), "1:12": (9, 108)},
             "gpu": {"1:1": (128, 128), "1:2": (90, 180), "1:6": (52, 312), "1:12": (36, 432)}}
G2_WIDTHS = {"arm": (64, 90, 128, 180), "gpu": (128, 180, 256, 360)}
G4_FLAGS = {"ReLU+shortcut": (True, True), "ReLU only": (True, False),
            "shortcut only": (False, True), "neither": (False, False)}

# Our scales: (label, the paper's GPU column index and name, ARM column index and name).
SCALES = {
    "G1": [("ARM x1 widths", "arm", (0, "x1: (128,128)..(36,432)"), (0, "x1: (32,32)..(9,108)")),
           ("GPU x1 widths", "gpu", (0, "x1: (128,128)..(36,432)"),
            (2, "x4: 4 x (32,32)..(9,108)"))],
    "G2": [("ARM x1 widths", "arm", (0, "x1: c=128..360"), (0, "x1: c=64..180")),
           ("GPU x1 widths", "gpu", (0, "x1: c=128..360"), (1, "x2: c=128..360"))],
    "G3": [("c=64", 64, (0, "c=128"), (0, "c=64")), ("c=128", 128, (0, "c=128"), (1, "c=128"))],
    "G4": [("c=64", 64, (1, "c=64"), (1, "c=64")), ("c=128", 128, (2, "c=128"), (2, "c=128"))],
}


def g1_networks(widths: str, size: int) -> dict:
    return {v: G.balance_stack(c1, c2, size) for v, (c1, c2) in G1_WIDTHS[widths].items()}


def g2_networks(widths: str, size: int) -> dict:
    out = {}
    for g, c in zip((1, 2, 4, 8), G2_WIDTHS[widths]):
        c = c if c % g == 0 else G.group_width(G2_WIDTHS[widths][0], g)
        out[f"g={g}"] = G.group_stack(c, g, size)
    return out


def g3_networks(c: int, size: int) -> dict:
    out = {"1-fragment": G.fragment_stack(c, 1, "series", size)}
    for arrangement in G.ARRANGEMENTS:
        for n in (2, 4):
            out[f"{n}-fragment-{arrangement}"] = G.fragment_stack(c, n, arrangement, size)
    return out


def g4_networks(c: int, size: int) -> dict:
    return {v: G.bottleneck_stack(c, relu, shortcut, size)
            for v, (relu, shortcut) in G4_FLAGS.items()}


BUILD = {"G1": g1_networks, "G2": g2_networks, "G3": g3_networks, "G4": g4_networks}


def paper_ratio(guideline: str, variant: str, platform: int, column: int) -> float:
    """Speed of the recommended variant over that of ``variant`` in one column of the paper's
    table (``platform`` 0: GPU, 1: ARM): how many times slower ``variant`` ran there."""
    table = PAPER[guideline]
    return round(table[RECOMMENDED[guideline]][platform][column]
                 / table[variant][platform][column], 3)


def widths_of(model) -> str:
    convs = [m for m in model.modules() if hasattr(m, "kernel_size")][:2]
    return ", ".join(f"{m.in_channels}->{m.out_channels}" + (f" g={m.groups}" if m.groups > 1
                                                             else "") for m in convs)


@torch.no_grad()
def compare_stacks(a, b, threads: int, pairs: int):
    """``timing.compare_calls`` of two stacks on one image each: their input widths may differ
    (c1 of G1, the series width of G3), so ``timing.compare``'s one input does not fit."""
    xa, xb = (torch.randn(1, *m.input_shape, generator=torch.Generator().manual_seed(0))
              for m in (a, b))
    a.eval(), b.eval()
    return compare_calls(lambda: a(xa), lambda: b(xb), threads=threads, pairs=pairs, batch=1)


def verdict(c, recommended: str) -> str:
    """``c`` (recommended variant as A) said of the other variant: how many times slower or
    faster than the recommended one, or no measurable change."""
    lo, hi = c.spread
    if not c.significant:
        return c.display
    if c.speedup > 1:
        return f"{c.speedup:.2f}x slower than {recommended} (IQR {lo:.2f}-{hi:.2f})"
    return (f"{1 / c.speedup:.2f}x faster than {recommended} (ratio {c.speedup:.2f}, "
            f"IQR {lo:.2f}-{hi:.2f})")


def _base_row(guideline, scale, variant, model, rec_model, threads) -> dict:
    macs, rec_macs = G.macs(model), G.macs(rec_model)
    row = {"guideline": guideline, "scale": scale, "variant": variant,
           "first_convs": widths_of(model), "threads": threads, "batch": 1,
           "map": "x".join(map(str, model.input_shape[1:])), "macs": macs, "macs_vs_rec": round(macs / rec_macs, 3),
           "memory_access": None, "memory_access_vs_rec": None}
    if guideline in ("G1", "G2"):
        mem, rec_mem = G.stack_memory_access(model), G.stack_memory_access(rec_model)
        row.update(memory_access=round(mem), memory_access_vs_rec=round(mem / rec_mem, 3))
    return row


def scale_rows(guideline: str, scale: tuple, threads: int, pairs: int, size: int) -> list[dict]:
    label, arg, (gpu_col, gpu_name), (arm_col, arm_name) = scale
    nets = BUILD[guideline](arg, size)
    rec = RECOMMENDED[guideline]
    rows, rec_times = [], []
    for variant, model in nets.items():
        if variant == rec:
            continue
        c = compare_stacks(nets[rec], model, threads, pairs)
        rec_times.append(c.a_ms)
        rows.append({**_base_row(guideline, label, variant, model, nets[rec], threads),
                     # both times from this comparison; the ratio is the median of its pairs'
                     # ratios, not the ratio of these medians
                     "time_ms": round(c.b_ms, 3), "rec_time_ms": round(c.a_ms, 3),
                     "ratio": c.speedup,
                     "ratio_iqr": list(c.spread), "display": verdict(c, rec),
                     "paper_gpu_ratio": paper_ratio(guideline, variant, 0, gpu_col),
                     "paper_arm_ratio": paper_ratio(guideline, variant, 1, arm_col),
                     "paper": f"GPU {gpu_name}; ARM {arm_name}; "
                              + SOURCE.format(table=TABLE[guideline]),
                     "met": c.speedup > 1 and c.significant, "load_avg": c.load_avg})
    rec_row = {**_base_row(guideline, label, rec, nets[rec], nets[rec], threads),
               # its median over the comparisons it took part in
               "time_ms": round(sorted(rec_times)[len(rec_times) // 2], 3),
               "rec_time_ms": None, "ratio": 1.0,
               "ratio_iqr": None, "display": "(recommended: the reference of the ratios)",
               "paper_gpu_ratio": 1.0, "paper_arm_ratio": 1.0, "paper": "-", "met": None,
               "load_avg": rows[-1]["load_avg"]}
    return [rec_row, *rows]


def summary_rows(rows: list[dict]) -> list[dict]:
    """One row per guideline: does its most extreme variant run measurably slower than the
    recommended one at every scale, on one thread?"""
    out = []
    for guideline, statement in GUIDELINE.items():
        judged = [r for r in rows if r["guideline"] == guideline and r["threads"] == 1
                  and r["variant"] in EXTREME[guideline]]
        met = None if any(r["met"] is None for r in judged) else all(r["met"] for r in judged)
        out.append({"guideline": guideline, "scale": "all", "variant": "summary",
                    "target": f"{statement}: {', '.join(EXTREME[guideline])} measurably "
                              f"slower than {RECOMMENDED[guideline]} (1 thread, every scale)",
                    "ratios": [r["ratio"] for r in judged], "met": met})
    return out


def rows(smoke: bool = False) -> list[dict]:
    """Full: both scales of every guideline on 32 x 32 maps, 30 interleaved pairs per
    comparison; G3 also on 2 threads. Smoke: the smaller scale only, on 8 x 8 maps, 1 thread
    (on cores shared with other work a 2-thread call waits for a descheduled thread, which
    takes a minute), 4 pairs: seconds, the figures judge nothing and ``met`` is None."""
    pairs, size = (4, SMOKE_SIZE) if smoke else (30, SIZE)
    out = []
    for guideline, scales in SCALES.items():
        for scale in scales[:1] if smoke else scales:
            for threads in (1, 2) if guideline == "G3" and not smoke else (1,):
                out += scale_rows(guideline, scale, threads, pairs, size)
    out += summary_rows(out)
    for row in out:
        row["bench"] = "architectures_guidelines"
        row["setting"] = "smoke" if smoke else "full"
        if smoke:
            row["met"] = None
    return out
