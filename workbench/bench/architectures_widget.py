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

# as lesson 07 builds the widget (a test holds the notebook's cell to these)
SLIDERS = ("width", "resolution")
# seconds of calls behind each latency figure: lesson 07's WIDGET_RUN_TIME. The latency is
# measured on one thread; the row's ``threads`` is torch's count for the rest of the update.
RUN_TIME = {"smoke": 0.02, "full": 0.05}


def slider_values(control) -> list:
    """The values a numeric slider can take: min, min + step, ... up to max."""
    steps = int((control.max - control.min) / control.step + 1e-9)
    return [round(control.min + control.step * k, 6) for k in range(steps + 1)]


def random_moves(controls: dict, count: int, seed: int = 0) -> list[tuple]:
    """``count`` moves ``(control, value)``, each of a randomly chosen slider to a random value
    of its range other than its current one (an unchanged value runs no update)."""
    values = {name: slider_values(c) for name, c in controls.items()}
    movable = [name for name in controls if len(values[name]) > 1]
    if not movable:
        raise ValueError(f"sliders {list(controls)}: none has two values to move between")
    rng = np.random.default_rng(seed)
    current = {name: c.value for name, c in controls.items()}
    out = []
    while len(out) < count:
        name = movable[int(rng.integers(len(movable)))]
        value = values[name][int(rng.integers(len(values[name])))]
        if value != current[name]:
            out.append((controls[name], value))
            current[name] = value
    return out


def rows(smoke: bool = False) -> list[dict]:
    from ..lessons import explore_architecture
    run_time = RUN_TIME["smoke" if smoke else "full"]
    with contextlib.redirect_stdout(io.StringIO()):
        widget = explore_architecture("mobilenet", list(SLIDERS), min_run_time=run_time)
    moves = random_moves(widget.controls, 6 if smoke else 40)
    timing = timed_moves(widget, moves)
    if timing["updates"] != len(moves):
        raise RuntimeError(f"{len(moves)} moves ran {timing['updates']} updates: a move "
                           "that did not change its slider")
    if smoke:
        timing["met"] = None            # a few moves with short timings: not a measurement
    return [{"bench": "lesson 07 widget update, mobilenet (width, resolution), latency "
                      f"measured for {run_time} s per move", **timing}]
