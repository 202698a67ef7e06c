"""``python -m workbench bench architectures_widget``: lesson 07's width-multiplier widget,
``lessons.explore_architecture("mobilenet", ["width", "resolution"])`` as the lesson builds it,
moved through random settings of both sliders. Each update rebuilds MobileNet, counts its
params and MACs, times it at batch 1 on one thread and redraws the figure. Target (issue 13):
p95 of one update under 0.5 s. ``bench widgets --browser`` times the same widget in a real
browser, from key press to the finished plot.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

from .widgets import timed_moves

SLIDERS = ("width", "resolution")
# seconds of calls behind each latency figure, as lesson 07 sets WIDGET_RUN_TIME
RUN_TIME = {"smoke": 0.02, "full": 0.05}


def random_moves(controls: dict, count: int, seed: int = 0) -> list[tuple]:
    """``count`` moves, each of a randomly chosen slider to a random value of its range
    different from its current one (an unchanged value runs no update)."""
    rng = np.random.default_rng(seed)
    current = {name: c.value for name, c in controls.items()}
    out = []
    while len(out) < count:
        name = list(controls)[int(rng.integers(len(controls)))]
        c = controls[name]
        steps = int(round((c.max - c.min) / c.step))
        value = round(c.min + c.step * int(rng.integers(steps + 1)), 6)
        if value != current[name]:
            out.append((c, value))
            current[name] = value
    return out


def rows(smoke: bool = False) -> list[dict]:
    from ..lessons import explore_architecture
    run_time = RUN_TIME["smoke" if smoke else "full"]
    with contextlib.redirect_stdout(io.StringIO()):
        widget = explore_architecture("mobilenet", list(SLIDERS), min_run_time=run_time)
    moves = random_moves(widget.controls, 6 if smoke else 40)
    timing = timed_moves(widget, moves)
    if smoke:
        timing["met"] = None            # a few moves with short timings: not a measurement
    return [{"bench": "lesson 07 widget update, mobilenet (width, resolution), latency "
                      f"measured for {run_time} s per move", **timing}]
