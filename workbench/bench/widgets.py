"""``python -m workbench bench widgets``: how long one slider move of ``explore`` takes, from the
slider's new value to the redrawn table and plot (the whole ipywidgets callback), for
prune.magnitude on LeNet-300-100 with 2,000 test images. Target: p95 under 0.5 s.
``time_updates`` is the measurement, shared by the benches of other methods' widgets.
"""
from __future__ import annotations

import contextlib
import io
import os
import statistics

import matplotlib
import numpy as np
import torch


def time_updates(method_cls, base, test, values, name: str = "base", **fixed) -> dict:
    """Move the first slider of ``explore(method_cls, base, test, **fixed)`` through ``values``
    (each move runs the real callback) and time the updates: p50, p95, max and target."""
    matplotlib.use("Agg")   # headless: the figure is drawn, then closed, as in a notebook
    from ..widgets import explore
    with contextlib.redirect_stdout(io.StringIO()):   # outside Jupyter, display() prints
        widget = explore(method_cls, base, test, name=name, **fixed)
        slider = widget.kwargs_widgets[0]
        explorer = widget.explorer
        explorer.seconds.clear()
        for value in values:
            slider.value = value                      # triggers the real callback
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
    return [{"bench": "widget update, prune.magnitude, lenet300, 2000 images", **timing}]
