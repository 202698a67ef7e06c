"""Sliders built from a method's own declared ranges: ``explore(Magnitude, base, test)``.

``explore`` takes a method class (its fields are the knobs) or a method object, e.g. a
``pipeline.Hybrid`` whose steps' knobs are named ``"<step id>.<field>"``
(``"quant.kmeans.k"``): the ranges come from each step's own ``sliders``, the other settings
from the object. The widget updates once on creation, so a headless notebook run (nbval,
papermill) exercises the callback too, then on every move, in place: one table and one figure
(a PNG of fixed size) whose contents are replaced, so the page neither blanks nor jumps.
Moves are computed in a background thread, and the moves that arrive meanwhile collapse into
one (the last), so a drag ends on its last value once. Methods that train or need data update
on release (``continuous_update=False``); cheap ones while dragging.

The background thread shares the process with the cells the student runs meanwhile: torch's
global random state and thread count among them. A cell that needs reproducible random numbers
or a timing should run when the widget is idle (``widget.wait()`` waits for it).
"""
from __future__ import annotations

import dataclasses
import html
import io
import threading
import time
import traceback

import ipywidgets as w
from matplotlib.figure import Figure

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
    """The state behind one widget: the base model, its report, the trail of visited points,
    and the view it keeps and updates in place (a table, a line of ratios, one figure drawn to
    a PNG image of fixed size), so the page neither blanks nor jumps on a move.

    Subclasses change what is shown by overriding ``rows`` (the table) and ``draw`` (the two
    panels); ``compute`` may add fields to ``trail[-1]``."""

    figsize = (10, 3.4)      # inches; drawn at ``dpi``: every update the same size in pixels
    dpi = 96
    # fixed margins: matplotlib's constrained layout measures every label before each
    # drawing, which took longer than the rest of an update
    margins = {"left": 0.075, "right": 0.925, "bottom": 0.2, "top": 0.92, "wspace": 0.3}

    def __init__(self, method, base, test, data=None, name: str = "base", mark=None,
                 mark_label: str = "", **fixed):
        self.method, self.base, self.test, self.data, self.fixed = \
            method, base, test, data, fixed
        self.mark, self.mark_label = mark, mark_label
        self.base_report = report(base, test, name=name, latency=False)  # computed once
        self.base_weights = weights_of(base)
        self.init_view()

    def init_view(self):
        """The trail, the view (table, ratios, figure) and the background update's state: what
        every explorer has, whatever it computes."""
        self.trail: list[dict] = []
        self.seconds: list[float] = []
        self.fig = Figure(figsize=self.figsize, dpi=self.dpi)
        self.table, self.ratios, self.plot = w.HTML(), w.HTML(), figure_image(self.fig)
        self.table.add_class("wb-table")
        self._lock, self._pending, self._worker, self.error = threading.Lock(), None, None, None

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

    def rows(self, model, result) -> list[dict]:
        """The table: the base and the compressed network."""
        keep = ("name", "accuracy", "nonzeros", "bytes", "gzip_bytes", "macs", "effective_macs")
        return [{k: r.row()[k] for k in keep} for r in (self.base_report, result)]

    def draw(self, left, right, model, knob: str):
        """Left: the weights before and after; right: accuracy against the knob over the
        points visited, with the base and the paper's setting (``mark``) as lines."""
        weight_histogram(left, self.base_weights, weights_of(model))
        trail = sorted(self.trail, key=lambda r: r[knob])
        right.plot([r[knob] for r in trail], [r["accuracy"] for r in trail], "o-", ms=3)
        right.axhline(self.base_report.accuracy, color="0.5", ls="--", label="base")
        if self.mark is not None:
            right.axvline(self.mark, color="k", ls=":",
                          label=self.mark_label or f"{knob} = {self.mark}")
        right.set_xlabel(knob)
        right.set_ylabel(f"accuracy ({len(self.test)} test images)")
        right.legend(fontsize=8)

    def update(self, **values):
        """Compute at ``values`` and update the view in place."""
        start = time.perf_counter()
        model, result, ratios = self.compute(**values)
        self.table.value = scrolled(html_table(self.rows(model, result)))
        self.ratios.value = scrolled(ratio_line(ratios))
        self.fig.clear()
        self.draw(*self.fig.subplots(1, 2, gridspec_kw=self.margins), model, next(iter(values)))
        self.plot.value = png_of(self.fig)
        self.seconds.append(time.perf_counter() - start)

    def request(self, values: dict):
        """A slider moved: update to ``values`` in a background thread. Values that arrive
        while an update runs replace each other, so a drag ends with one update, at its last
        value, and the kernel stays free to receive the moves."""
        with self._lock:
            self._pending = dict(values)
            if self._worker is None:
                self._worker = threading.Thread(target=self._drain, daemon=True)
                self._worker.start()

    def _drain(self):
        try:
            while True:
                with self._lock:
                    values, self._pending = self._pending, None
                    if values is None:         # under the lock: a move now starts a worker
                        self._worker = None
                        return
                try:
                    self.update(**values)
                except Exception as error:      # shown in the widget: a thread cannot raise
                    self.error = error
                    self.table.value = (f"<pre style='color:#a00'>update at {values} failed:\n"
                                        f"{html.escape(traceback.format_exc())}</pre>")
        finally:            # died of something else: the next move starts a new worker
            with self._lock:
                if self._worker is threading.current_thread():
                    self._worker = None

    def wait(self, timeout: float = 600.0):
        """Block until the pending updates are drawn (tests, scripts); re-raise an update's
        error."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                worker = self._worker
            if worker is None or not worker.is_alive():
                break
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive() and time.monotonic() >= deadline:
                raise TimeoutError(f"the widget's update did not finish in {timeout} s")
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def ratio_line(ratios: dict) -> str:
    """"ratios to base" with the figures that were measured (none of latency's Nones)."""
    shown = ", ".join(f"{k} {v}" for k, v in ratios.items() if k != "name" and v is not None)
    return f"<b>ratios to base</b> (x smaller / fewer): {shown}"


def scrolled(html_text: str) -> str:
    """One line that scrolls sideways when wider than the page, rather than being cut or
    wrapped (a wrapped line would change the widget's height, and the page would jump)."""
    return f'<div style="overflow-x: auto; white-space: nowrap">{html_text}</div>'


def figure_image(fig: Figure) -> w.Image:
    """An image widget of ``fig``'s size in pixels, to be filled with ``png_of(fig)``."""
    width, height = (round(v * fig.dpi) for v in fig.get_size_inches())
    image = w.Image(format="png", layout=w.Layout(width=f"{width}px", height=f"{height}px"))
    image.add_class("wb-plot")
    return image


def png_of(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    return buffer.getvalue()


def sliders_for(method, names=None, continuous: bool = True) -> dict[str, w.Widget]:
    """Sliders for the declared ranges of ``method`` (default: its first knob)."""
    declared = knobs(method)
    names = list(names) if names else list(declared)[:1]
    unknown = [n for n in names if n not in declared]
    if unknown:
        label = method.__name__ if isinstance(method, type) else method.id
        raise ValueError(f"{label} declares sliders {sorted(declared)}; got {unknown}")
    return {n: _slider(n, *declared[n][3:], *declared[n][:3], continuous) for n in names}


def start_at(control, name: str, value):
    """Set a control's starting value, refusing one outside its range or options (ipywidgets
    would clamp it to the nearest end without a word)."""
    options = getattr(control, "options", None)
    if options is not None:
        if value not in options:
            raise ValueError(f"{name}={value!r}: allowed: {', '.join(map(repr, options))}")
    else:
        low, high = control.min, control.max
        if isinstance(control, w.FloatLogSlider):        # its min and max are exponents
            low, high = control.base ** low, control.base ** high
        if not low <= value <= high:
            raise ValueError(f"{name}={value}: allowed is {low:g} to {high:g}, the slider's range")
    control.value = value


def _slider(name: str, value, low, high, step, continuous: bool):
    """An IntSlider for a count (low, high and step all ints, e.g. k), else a FloatSlider."""
    # ipywidgets needs keyword names without dots; the description shows the full name.
    if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step)):
        return w.IntSlider(value=int(value), min=low, max=high, step=step, description=name,
                           continuous_update=continuous)
    return w.FloatSlider(value=value, min=low, max=high, step=step, description=name,
                         continuous_update=continuous, readout_format=".3f")


def explore(method, base, test, data=None, sliders=None, name: str = "base",
            continuous: bool | None = None, mark=None, mark_label: str = "", **fixed):
    """An interactive widget: move the sliders, watch accuracy, bytes and MACs change.

    ``method``: a method class, or a method object (a ``pipeline.Hybrid``: sliders named
    ``"<step id>.<field>"``). ``sliders`` names the knobs to expose (default: the first
    declared one); ``fixed`` sets other hyperparameters, e.g. ``explore(Magnitude, m, t,
    scope="global")``, or a slider's starting value (``sparsity=0.5``, within its range).
    ``continuous``: update while a slider is dragged (default: unless the method needs data at
    its starting settings, i.e. trains or samples). ``mark``: the
    paper's setting of the first knob, drawn as a line labelled ``mark_label``.
    The returned widget (``ExploreWidget``) has ``.explorer`` (trail of visited points, update
    times) and ``.wait()``.
    """
    controls = sliders_for(method, sliders, continuous=True)
    for knob in [n for n in controls if n in fixed]:    # a slider's starting value
        start_at(controls[knob], knob, fixed.pop(knob))
    explorer = Explorer(method, base, test, data, name, mark, mark_label, **fixed)
    return interactive_for(explorer, method, controls, fixed, continuous)


class ExploreWidget(w.VBox):
    """The widget ``explore`` returns: the controls, then the explorer's table, ratios and
    figure, updated in place. ``explorer`` holds the trail and the update times; ``wait()``
    blocks until the moves made so far are drawn (moves update in a background thread)."""

    def __init__(self, explorer: Explorer, controls: dict):
        self.explorer, self.controls = explorer, controls
        self.kwargs_widgets = list(controls.values())       # as ipywidgets.interactive names them
        super().__init__([*controls.values(), explorer.table, explorer.ratios, explorer.plot])
        self.add_class("wb-explore")
        for control in controls.values():
            control.observe(lambda change: explorer.request(self.values()), names="value")

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def wait(self, timeout: float = 600.0):
        self.explorer.wait(timeout)


def interactive_for(explorer, method, controls: dict, fixed: dict, continuous: bool | None):
    """The widget that calls ``explorer.update`` with the controls' values, once now (so a
    headless run of the notebook draws it and exercises the code) and on every move;
    ``continuous`` None: update while dragging unless the method needs data at its start."""
    start = configure(method, {n: c.value for n, c in controls.items()}, fixed)
    continuous = (not start.tags().needs_data) if continuous is None else continuous
    for control in controls.values():
        control.continuous_update = continuous
    widget = ExploreWidget(explorer, controls)
    explorer.update(**widget.values())
    return widget
