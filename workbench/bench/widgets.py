"""``python -m workbench bench widgets``: how long one slider move of ``explore`` takes, from the
slider's new value to the redrawn table and plot (the whole ipywidgets callback), for
prune.magnitude on LeNet-300-100 with 2,000 test images. Target: p95 under 0.5 s.
"""
from __future__ import annotations

import contextlib
import io
import statistics

import matplotlib
import numpy as np
import torch


def rows(smoke: bool = False) -> list[dict]:
    matplotlib.use("Agg")   # headless: the figure is drawn, then closed, as in a notebook
    from .. import data, zoo
    from ..prune import Magnitude
    from ..widgets import explore

    test = data.mnist("test").subset(2000, seed=0)
    widget = explore(Magnitude, zoo.pretrained("lenet300"), test, name="lenet300")
    slider = widget.kwargs_widgets[0]
    values = np.random.default_rng(0).uniform(0.0, 0.99, 10 if smoke else 60).round(2)
    explorer = widget.explorer
    explorer.seconds.clear()
    with contextlib.redirect_stdout(io.StringIO()):   # outside Jupyter, display() prints
        for value in values:
            slider.value = float(value)               # triggers the real callback
    seconds = sorted(explorer.seconds)
    p95 = float(np.percentile(seconds, 95))
    return [{"bench": "widget update, prune.magnitude, lenet300, 2000 images",
             "updates": len(seconds), "p50_s": round(statistics.median(seconds), 4),
             "p95_s": round(p95, 4), "max_s": round(seconds[-1], 4), "target_p95_s": 0.5,
             "met": p95 < 0.5, "threads": torch.get_num_threads()}]
