"""Sliders built from a method's own declared ranges: ``explore(Magnitude, base, test)``.

Built on ``ipywidgets.interactive``, which calls the update once on creation, so a headless
notebook run (nbval, papermill) exercises the callback too. Methods that train or need data
update on release (``continuous_update=False``); cheap ones update while dragging.
"""
from __future__ import annotations

import time
from dataclasses import fields

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import HTML, display

from .measure import html_table, report
from .plots import weight_histogram, weights_of


class Explorer:
    """The state behind one widget: the base model, its report, the trail of visited points."""

    def __init__(self, method_cls, base, test, data=None, name: str = "base", **fixed):
        self.method_cls, self.base, self.test, self.data, self.fixed = \
            method_cls, base, test, data, fixed
        self.base_report = report(base, test, name=name, latency=False)  # computed once
        self.base_weights = weights_of(base)
        self.trail: list[dict] = []
        self.seconds: list[float] = []

    def compute(self, **values):
        """Apply the method with ``values`` and measure: (model, report, ratios)."""
        method = self.method_cls(**self.fixed, **values)
        model = method.apply(self.base, self.data)
        result = report(model, self.test, name=method.id, latency=False)
        ratios = result.compare(self.base_report)
        self.trail.append({**values, "accuracy": result.accuracy, "bytes": result.bytes,
                           "effective_macs": result.effective_macs})
        return model, result, ratios

    def update(self, **values):
        """The widget callback: table of figures and a two-panel plot."""
        start = time.perf_counter()
        model, result, ratios = self.compute(**values)
        rows = [self.base_report.row(), result.row()]
        keep = ("name", "accuracy", "nonzeros", "bytes", "gzip_bytes", "macs", "effective_macs")
        display(HTML(html_table([{k: r[k] for k in keep} for r in rows])))
        display(HTML("<b>ratios to base</b> (x smaller / fewer): "
                     + ", ".join(f"{k} {v}" for k, v in ratios.items() if k != "name")))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
        weight_histogram(left, self.base_weights, weights_of(model))
        knob = next(iter(values))
        trail = sorted(self.trail, key=lambda r: r[knob])
        right.plot([r[knob] for r in trail], [r["accuracy"] for r in trail], "o-", ms=3)
        right.axhline(self.base_report.accuracy, color="0.5", ls="--", label="base")
        right.set_xlabel(knob)
        right.set_ylabel(f"accuracy ({len(self.test)} test images)")
        right.legend(fontsize=8)
        plt.show()
        plt.close(fig)
        self.seconds.append(time.perf_counter() - start)


def sliders_for(method_cls, names=None, continuous: bool = True) -> dict[str, w.FloatSlider]:
    """FloatSliders for the declared ranges of ``method_cls`` (default: its first knob)."""
    declared = method_cls.sliders
    names = list(names) if names else list(declared)[:1]
    unknown = [n for n in names if n not in declared]
    if unknown:
        raise ValueError(f"{method_cls.__name__} declares sliders {sorted(declared)}; "
                         f"got {unknown}")
    defaults = {f.name: f.default for f in fields(method_cls)}
    return {n: _slider(n, defaults[n], *declared[n], continuous) for n in names}


def _slider(name: str, value, low, high, step, continuous: bool):
    """An IntSlider for a count (low, high and step all ints, e.g. k), else a FloatSlider."""
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)):
        return w.IntSlider(value=int(value), min=low, max=high, step=step, description=name,
                           continuous_update=continuous)
    return w.FloatSlider(value=value, min=low, max=high, step=step, description=name,
                         continuous_update=continuous, readout_format=".3f")


def explore(method_cls, base, test, data=None, sliders=None, name: str = "base",
            continuous: bool | None = None, **fixed):
    """An interactive widget: move the sliders, watch accuracy, bytes and MACs change.

    ``sliders`` names the knobs to expose (default: the method's first declared one);
    ``fixed`` sets the other hyperparameters, e.g. ``explore(Magnitude, m, t, scope="global")``.
    ``continuous``: update while a slider is dragged (default: unless the method needs data,
    i.e. trains or samples; pass False for any method slower than a fraction of a second).
    The returned widget has ``.explorer`` (trail of visited points, update times).
    """
    explorer = Explorer(method_cls, base, test, data, name, **fixed)
    continuous = (not method_cls.needs_data) if continuous is None else continuous
    controls = sliders_for(method_cls, sliders, continuous=continuous)
    widget = w.interactive(explorer.update, **controls)
    widget.explorer = explorer
    return widget
