"""``python -m workbench bench widgets``: how long one slider move of ``explore`` takes, from the
slider's new value to the redrawn table and plot (the whole update: compute, table, figure
drawn to its PNG), for
prune.magnitude on LeNet-300-100 with 2,000 test images. Target: p95 under 0.5 s.
``time_updates`` makes such a widget and times it; ``timed_moves``, the timing of any
``ExploreWidget``, is shared by the benches of other widgets (``bench architectures_widget``).

Lesson 04's widgets (issue 10: every widget of the lesson for a method that does not retrain
updates within 0.5 s, p95) are rows too: ``LESSON04`` holds their settings, which the notebook
imports, so that the bench times what the lesson shows (``lessons.explore_binary`` on
LeNet-300-100, the same 2,000 test images). So is lesson 05's rank widget (``LESSON05``,
``lessons.explore_rank`` of ``lowrank.svd``; issue 11: p95 under 0.5 s).
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics

import matplotlib
import numpy as np
import torch

# Lesson 04, the methods that do not retrain: method id -> the widget's knob, the values the
# bench moves it through (a drop-down alternates), the paper's setting drawn as a line, and
# the fixed settings (ABC-Net and sketching binarize LeNet-300-100's first and last layers too:
# with them float, 88% of its weights would stay float; TWN's epochs=0 ternarizes without
# training).
LESSON04 = {
    "binary.sign": {"knob": "per_channel", "values": [False, True], "fixed": {}},
    "binary.abc": {"knob": "M", "values": [1, 2, 3, 4, 5],
                   "fixed": {"quantize_ends": True, "epochs": 0}},
    "ternary.twn": {"knob": "c", "values": [round(0.1 * i, 2) for i in range(1, 21)],
                    "mark": 0.7, "mark_label": "TWN's c = 0.7", "fixed": {"epochs": 0}},
    "binary.sketch": {"knob": "tensors", "values": [1, 2, 3, 4, 5, 6],
                      "fixed": {"quantize_ends": True}},
}

# Lesson 05's rank widget (issue 11: p95 under 0.5 s): ``lessons.explore_rank`` of
# ``lowrank.svd`` on LeNet-300-100, fc1 and fc2 at the slider's rank (the 10 x 100 head would not
# shrink), fc1's spectrum drawn; the line is the rank at which fc1 alone has half its MACs,
# 784 * 300 / (2 * (784 + 300)).
LESSON05 = {
    "lowrank.svd": {"knob": "rank", "values": list(range(1, 129)), "layer": "net.1",
                    "mark": 108, "mark_label": "fc1 at half its MACs (k = 108)",
                    "fixed": {"layers": ("net.1", "net.3")}},
}


def time_updates(method_cls, base, test, values, name: str = "base", make=None,
                 **fixed) -> dict:
    """Move the first slider of ``explore(method_cls, base, test, **fixed)`` through ``values``
    (each move runs the real callback) and time the updates: p50, p95, max and target.
    ``make``: another function with ``explore``'s signature (e.g. ``lessons.explore_binary``)."""
    matplotlib.use("Agg")   # headless: the figure is drawn, then closed, as in a notebook
    from ..widgets import explore
    with contextlib.redirect_stdout(io.StringIO()):   # outside Jupyter, display() prints
        widget = (make or explore)(method_cls, base, test, name=name, **fixed)
    slider = widget.kwargs_widgets[0]
    return timed_moves(widget, [(slider, value) for value in values])


def timed_moves(widget, moves) -> dict:
    """Set each ``(control, value)`` of ``moves`` on ``widget`` (an ``ExploreWidget``, made by
    ``explore`` or a ``lessons.explore_*``), one move at a time, and time the updates it runs:
    p50, p95, max and target. The update that built the widget is not counted."""
    explorer = widget.explorer
    explorer.seconds.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        for control, value in moves:
            control.value = value                     # triggers the real callback,
            widget.wait()                             # in the widget's thread: one at a time
    seconds = sorted(explorer.seconds)
    p95 = float(np.percentile(seconds, 95))
    return {"updates": len(seconds), "p50_s": round(statistics.median(seconds), 4),
            "p95_s": round(p95, 4), "max_s": round(seconds[-1], 4), "target_p95_s": 0.5,
            "met": p95 < 0.5, "threads": torch.get_num_threads(),
            "load_avg_1min": round(os.getloadavg()[0], 1)}   # wall times depend on it


def rows(smoke: bool = False) -> list[dict]:
    from .. import data, zoo
    from ..prune import Magnitude

    test = data.mnist("test").subset(2000, seed=0)
    values = np.random.default_rng(0).uniform(0.0, 0.99, 10 if smoke else 60).round(2)
    timing = time_updates(Magnitude, zoo.pretrained("lenet300"), test,
                          [float(v) for v in values], name="lenet300")
    out = [{"bench": "widget update, prune.magnitude, lenet300, 2000 images", **timing}]
    return out + lesson04_rows(smoke, test) + lesson05_rows(smoke, test)


def lesson04_values(spec: dict, count: int, seed: int = 0) -> list:
    """``count`` moves of a lesson-04 widget: random picks of its values, never the same value
    twice in a row (an unchanged value runs no callback)."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        value = spec["values"][int(rng.integers(len(spec["values"])))]
        if not out or value != out[-1]:
            out.append(value)
    return out


def lesson_rows(smoke: bool, test, specs: dict, widget) -> list[dict]:
    """A lesson's widgets (``specs``: method id -> settings, as the lesson builds them), on
    LeNet-300-100: ``widget(method, base, test, spec, **settings)`` makes one."""
    from .. import METHODS, zoo
    base = zoo.pretrained("lenet300")
    out = []
    for method_id, spec in specs.items():
        values = lesson04_values(spec, 6 if smoke else 40)
        # the slider starts at values[0]: the creation update is not among the timed ones
        timing = time_updates(METHODS[method_id], base, test, values[1:], name="lenet300",
                              make=lambda *a, spec=spec, **k: widget(*a, spec=spec, **k),
                              **{spec["knob"]: values[0], **spec["fixed"]})
        out.append({"bench": f"widget update, {method_id} ({spec['knob']}), lenet300, "
                             f"{len(test)} images", **timing})
    return out


def lesson04_rows(smoke: bool, test) -> list[dict]:
    """Lesson 04's widgets for the methods that do not retrain."""
    from ..lessons import explore_binary
    return lesson_rows(smoke, test, LESSON04, lambda *a, spec, **k: explore_binary(
        *a, sliders=[spec["knob"]], mark=spec.get("mark"), **k))


def lesson05_rows(smoke: bool, test) -> list[dict]:
    """Lesson 05's rank widget."""
    from ..lessons import explore_rank
    return lesson_rows(smoke, test, LESSON05, lambda *a, spec, **k: explore_rank(
        *a, layer=spec["layer"], sliders=[spec["knob"]], mark=spec["mark"],
        mark_label=spec["mark_label"], **k))
