"""Sliders built from a method's own declared ranges: ``explore(Magnitude, base, test)``.

``explore`` takes a method class (its fields are the knobs) or a method object, e.g. a
``pipeline.Hybrid`` whose steps' knobs are named ``"<step id>.<field>"``
(``"quant.kmeans.k"``): the ranges come from each step's own ``sliders``, the other settings
from the object. Built on ``ipywidgets.interactive``, which calls the update once on creation,
so a headless notebook run (nbval, papermill) exercises the callback too. Methods that train
or need data update on release (``continuous_update=False``); cheap ones while dragging.
"""
from __future__ import annotations

import dataclasses
import time

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import HTML, display

from .measure import html_table, report
from .method import Method
from .plots import weight_histogram, weights_of
from .train import quiet


def knobs(method) -> dict[str, tuple]:
    """Slider name -> (low, high, step, current value) of a method class or object; a chain's
    step knobs are ``"<step id>.<field>"``."""
    if isinstance(method, type):
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING
                    else f.default_factory() for f in dataclasses.fields(method)}
        return {n: (*r, defaults[n]) for n, r in method.sliders.items()}
    if hasattr(method, "steps_settings"):
        out = {}
        for step in method.methods():
            for n, r in step.sliders.items():
                out[f"{step.id}.{n}"] = (*r, getattr(step, n))
        return out
    return {n: (*r, getattr(method, n)) for n, r in method.sliders.items()}


def configure(method, values: dict, fixed: dict | None = None) -> Method:
    """The method with the slider ``values`` (and ``fixed`` settings) in effect."""
    fixed = fixed or {}
    if isinstance(method, type):
        return method(**fixed, **values)
    if not hasattr(method, "steps"):
        return dataclasses.replace(method, **fixed, **values)
    steps = [(mid, dict(settings)) for mid, settings in method.steps]
    for name, value in values.items():
        mid, _, field = name.rpartition(".")
        matches = [s for s in steps if s[0] == mid]
        if len(matches) != 1:
            raise ValueError(f"slider {name!r}: the chain has {len(matches)} {mid} steps; "
                             "allowed: a step id that occurs once")
        matches[0][1][field] = value
    return dataclasses.replace(method, **fixed, steps=tuple(steps))


class Explorer:
    """The state behind one widget: the base model, its report, the trail of visited points."""

    def __init__(self, method, base, test, data=None, name: str = "base", **fixed):
        self.method, self.base, self.test, self.data, self.fixed = \
            method, base, test, data, fixed
        self.base_report = report(base, test, name=name, latency=False)  # computed once
        self.base_weights = weights_of(base)
        self.trail: list[dict] = []
        self.seconds: list[float] = []

    def compute(self, **values):
        """Apply the method with ``values`` and measure: (model, report, ratios)."""
        method = configure(self.method, values, self.fixed)
        with quiet():
            model = method.apply(self.base, self.data if method.tags().needs_data else None)
        result = report(model, self.test, name=method.id, latency=False)
        ratios = result.compare(self.base_report)
        self.trail.append({**values, "accuracy": result.accuracy, "bytes": result.bytes,
                           "macs": result.macs, "effective_macs": result.effective_macs})
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


def sliders_for(method, names=None, continuous: bool = True) -> dict[str, w.Widget]:
    """Sliders for the declared ranges of ``method`` (default: its first knob)."""
    declared = knobs(method)
    names = list(names) if names else list(declared)[:1]
    unknown = [n for n in names if n not in declared]
    if unknown:
        label = method.__name__ if isinstance(method, type) else method.id
        raise ValueError(f"{label} declares sliders {sorted(declared)}; got {unknown}")
    return {n: _slider(n, *declared[n][3:], *declared[n][:3], continuous) for n in names}


def _slider(name: str, value, low, high, step, continuous: bool):
    """An IntSlider for a count (low, high and step all ints, e.g. k), else a FloatSlider."""
    # ipywidgets needs keyword names without dots; the description shows the full name.
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)):
        return w.IntSlider(value=int(value), min=low, max=high, step=step, description=name,
                           continuous_update=continuous)
    return w.FloatSlider(value=value, min=low, max=high, step=step, description=name,
                         continuous_update=continuous, readout_format=".3f")


def explore(method, base, test, data=None, sliders=None, name: str = "base",
            continuous: bool | None = None, **fixed):
    """An interactive widget: move the sliders, watch accuracy, bytes and MACs change.

    ``method``: a method class, or a method object (a ``pipeline.Hybrid``: sliders named
    ``"<step id>.<field>"``). ``sliders`` names the knobs to expose (default: the first
    declared one); ``fixed`` sets other hyperparameters, e.g. ``explore(Magnitude, m, t,
    scope="global")``. ``continuous``: update while a slider is dragged (default: unless the
    method needs data at its starting settings, i.e. trains or samples).
    The returned widget has ``.explorer`` (trail of visited points, update times).
    """
    explorer = Explorer(method, base, test, data, name, **fixed)
    controls = sliders_for(method, sliders, continuous=True)
    return interactive_for(explorer, method, controls, fixed, continuous)


def interactive_for(explorer, method, controls: dict, fixed: dict, continuous: bool | None):
    """The ipywidgets ``interactive`` that calls ``explorer.update`` with the controls' values;
    ``continuous`` None: update while dragging unless the method needs data at its start."""
    start = configure(method, {n: c.value for n, c in controls.items()}, fixed)
    continuous = (not start.tags().needs_data) if continuous is None else continuous
    for control in controls.values():
        control.continuous_update = continuous
    # interactive() passes each control as a keyword: names with dots go through a map.
    keys = {f"knob{i}": n for i, n in enumerate(controls)}
    widget = w.interactive(lambda **kw: explorer.update(**{keys[k]: v for k, v in kw.items()}),
                           **{k: controls[n] for k, n in keys.items()})
    widget.explorer = explorer
    return widget
