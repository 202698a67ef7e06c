"""``python -m workbench bench latency_zoo``: do the zoo table's latencies agree with a direct
benchmark of the same checkpoints?

The survey's zoo table times each trained network with ``report(..., threads=1)`` (warm-up
passes, then blocks of calls timed by ``timing.time_model``, on the network as decoded from
its file). Before the latency issue it timed the first network of a process cold, and gave
LeNet-5 thirty times its real time. Here each checkpoint is timed both ways in one process:

- ``report``: exactly what the survey's zoo table shows (``measure.report``);
- ``direct``: a plain ``torch.utils.benchmark.Timer("model(x)")`` of the checkpoint as loaded
  from the zoo, ``blocked_autorange(min_run_time=1)``, as a user would time it by hand.

The two alternate (report first, then direct first, ``ROUNDS`` times), so neither is always
the cold one or always the one after a busy spell; each side's figure is the median over its
rounds, its spread the largest interquartile range of its rounds. They *agree* when the two
medians differ by less than the sum of their spreads, or by less than ``AGREE`` of the smaller
(two medians taken seconds apart on a shared machine drift by a few percent even when nothing
is wrong; the failure this guards against was a factor of 30). One thread, fixed and recorded
with the machine's load. On a busy machine (a 1-minute load above the number of cores) the
spreads swell until anything "agrees": such a row says ``busy`` and leaves ``met`` empty.
"""
from __future__ import annotations

import os
import statistics

import torch
from torch.utils import benchmark

from .. import zoo
from ..measure import input_shape_of, report

AGREE = 0.10
ROUNDS = 3
THREADS = 1


def direct_ms(model, shape, batch: int, min_run_time: float) -> tuple[float, float]:
    """(median, IQR) in ms of a plain torch.utils.benchmark run, as a user would do it."""
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m = benchmark.Timer("model(x)", globals={"model": model.eval(), "x": x},
                            num_threads=THREADS).blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3, m.iqr * 1e3


def report_ms(model) -> dict[int, tuple[float, float]]:
    r = report(model, latency=True, threads=THREADS)
    return {1: (r.latency_ms_b1, r.latency_iqr_ms_b1), 64: (r.latency_ms_b64, r.latency_iqr_ms_b64)}


def agree(a: tuple[float, float], b: tuple[float, float]) -> bool:
    (ma, sa), (mb, sb) = a, b
    return abs(ma - mb) <= max(sa + sb, AGREE * min(ma, mb))


def compare_one(name: str, rounds: int, min_run_time: float) -> list[dict]:
    model = zoo.pretrained(name)
    shape = input_shape_of(model)
    seen = {b: {"report": [], "direct": []} for b in (1, 64)}
    for i in range(rounds):
        order = ("report", "direct") if i % 2 == 0 else ("direct", "report")
        for side in order:
            if side == "report":
                for b, figure in report_ms(model).items():
                    seen[b]["report"].append(figure)
            else:
                for b in (1, 64):
                    seen[b]["direct"].append(direct_ms(model, shape, b, min_run_time))
    load = os.getloadavg()[0]
    busy = load > os.cpu_count()
    rows = []
    for b, sides in seen.items():
        fig = {side: (statistics.median(m for m, _ in runs), max(s for _, s in runs))
               for side, runs in sides.items()}
        rows.append({"bench": "latency_zoo", "model": name, "batch": b, "threads": THREADS,
                     "report_ms": round(fig["report"][0], 4),
                     "report_iqr_ms": round(fig["report"][1], 4),
                     "direct_ms": round(fig["direct"][0], 4),
                     "direct_iqr_ms": round(fig["direct"][1], 4),
                     "ratio": round(fig["report"][0] / fig["direct"][0], 3),
                     "target": f"within the spreads or {AGREE:.0%}",
                     "met": None if busy else agree(fig["report"], fig["direct"]),
                     "busy": busy, "rounds": rounds, "load_avg": round(load, 2),
                     "cpus": os.cpu_count()})
    return rows


def rows(smoke: bool = False) -> list[dict]:
    names = [n for n in zoo.RECIPES if n in zoo.manifest()]
    if smoke:
        names = [n for n in names if zoo.dataset_of(n) == "mnist"][:1]
    out = []
    for name in names:
        out += compare_one(name, rounds=2 if smoke else ROUNDS,
                           min_run_time=0.2 if smoke else 1.0)
    return out
