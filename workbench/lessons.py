"""Small helpers the lessons share, so that a notebook narrates and calls the library.

``configured(method_id, smoke, **lesson)``: a method with the lesson's settings, or its smoke
settings in a smoke run. ``measured(method, base, test, data)``: apply it (quietly) and return
the network with one table row (bits, real file bytes, accuracy, seconds).
Lesson 04: ``precision(model, data)``, the operations per image by precision;
``explore_binary``, ``explore`` with those operations, the share of zero weights and on/off
knobs (a Flag or Choice field becomes a drop-down).
Lesson 05: ``explore_rank``, ``explore`` with a layer's singular value spectrum and the rank
kept.
"""
from __future__ import annotations

import dataclasses
import time

import ipywidgets as w
import matplotlib.pyplot as plt
import torch
from IPython.display import HTML, display

from . import METHODS, codec
from .domains import Choice, Flag, domain_of
from .measure import html_table, report
from .method import Method, layers_of
from .plots import precision_panels, spectrum_panels, weights_of
from .train import evaluate, quiet
from .widgets import Explorer, interactive_for, knobs, sliders_for


def configured(method_id: str, smoke: bool = False, **lesson) -> Method:
    """``METHODS[method_id]`` with the lesson's settings, the smoke ones winning in smoke runs
    (smoke runs shrink data and epochs, never the knobs a comparison is about)."""
    if method_id not in METHODS:
        raise ValueError(f"unknown method {method_id!r}; allowed: {sorted(METHODS)}")
    cls = METHODS[method_id]
    return cls(**{**lesson, **(cls.smoke if smoke else {})})


def weight_count(model) -> int:
    """Weights of the Conv2d and Linear layers (what bits per weight are counted over)."""
    return sum(m.weight.numel() for _, m in layers_of(model))


def measured(method: Method, base, test, data=None, label: str | None = None):
    """(network, row): ``method`` applied to ``base`` without progress bars, and its figures."""
    start = time.perf_counter()
    with quiet():
        model = method.apply(base, data if method.tags().needs_data else None)
    seconds = time.perf_counter() - start
    blob = codec.encode(model)
    bits = method.tags().bits_per_weight
    row = {"method": label or method.id,
           "settings": ", ".join(f"{k}={v}" for k, v in method.settings().items()),
           "bits (nominal)": None if bits is None else round(bits, 3),
           "file bytes": len(blob),
           "file bits/weight": round(8 * len(blob) / weight_count(base), 2),
           "accuracy": round(evaluate(model, test), 4), "seconds": round(seconds, 1)}
    return model, row


def formats(model) -> list[dict]:
    """How each weight tensor of ``model`` is stored in its file (format, bytes, k or bits)."""
    header = codec.read_header(codec.encode(model))
    return [{"tensor": t["name"], "format": t["format"], "bytes": t["nbytes"],
             "k / bits": t.get("k") or t.get("bits") or t.get("code_bits"),
             "stored as": t.get("stored_dtype", t["dtype"])}
            for t in header["tensors"] if t["name"].endswith("weight")]


SMOKE_BANNER = ("<p><b>Smoke run</b>: small subsets and few epochs, to check that the cell "
                "runs; these figures are not the lesson's results.</p>")


def show(rows: list[dict], smoke: bool = False) -> None:
    """A table of dicts in the notebook, under a banner in a smoke run."""
    display(HTML((SMOKE_BANNER if smoke else "") + html_table(rows)))


def weight_ratio(report) -> float:
    """Compression as Han et al. and Guo et al. count it: dense weights over nonzero weights
    of the Conv2d and Linear layers (biases are never pruned)."""
    return sum(row["params"] for row in report.layers) / sum(row["nonzeros"]
                                                             for row in report.layers)


def kept_by_layer(report) -> str:
    """The percentage of weights each layer keeps, "66.0 / 12.0 / ..."."""
    return " / ".join(f"{100 * row['nonzeros'] / row['params']:.1f}" for row in report.layers)


PRECISION_COLUMNS = {"float_macs": "float MACs", "binary_ops": "binary ops",
                     "add_ops": "add ops", "ops": "ops (binary/64 + float)"}


def precision(model, data=None) -> dict:
    """Operations per image by precision, as ``measure.report`` counts them (its docstring
    states the convention), with the real inputs of a few of ``data``'s images."""
    sample = None if data is None else data.subset(min(32, len(data)), seed=0)
    r = report(model, sample, latency=False)
    return {label: getattr(r, key) for key, label in PRECISION_COLUMNS.items()}


def zero_share(model) -> float:
    """Share of the stored weights (``plots.weights_of``) that are exactly 0."""
    flat = weights_of(model)
    return float((flat == 0).float().mean())


class PrecisionExplorer(Explorer):
    """``widgets.Explorer`` for lesson 04: its table shows bytes, the share of zero weights and
    the operations by precision; its right panel the share of zeros beside the accuracy and
    the paper's setting (``mark``) as a line."""

    def __init__(self, *args, mark=None, mark_label: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.mark, self.mark_label = mark, mark_label

    def update(self, **values):
        start = time.perf_counter()
        model, result, ratios = self.compute(**values)
        weights = weights_of(model)
        self.trail[-1]["zeros"] = float((weights == 0).float().mean())
        rows = []
        for r, zeros in ((self.base_report, 0.0), (result, self.trail[-1]["zeros"])):
            row = r.row(by_precision=True)
            rows.append({"name": row["name"], "accuracy": row["accuracy"],
                         "bytes": row["bytes"], "zero weights %": round(100 * zeros, 1),
                         **{label: row[key] if key != "ops" or row[key] is not None
                            else row["macs"] for key, label in PRECISION_COLUMNS.items()}})
        display(HTML(html_table(rows)))
        display(HTML("<b>ratios to base</b> (x smaller / fewer): "
                     + ", ".join(f"{k} {v}" for k, v in ratios.items() if k != "name")))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
        precision_panels(left, right, self.base_weights, weights, self.trail,
                         next(iter(values)), self.base_report.accuracy, self.mark,
                         self.mark_label)
        plt.show()
        plt.close(fig)
        self.seconds.append(time.perf_counter() - start)


def _control(method, name: str, fixed: dict, continuous: bool):
    """A slider for a declared slider; a drop-down for an on/off (Flag) or named (Choice)
    knob of a method class."""
    if name in knobs(method):
        return sliders_for(method, [name], continuous)[name]
    domain = domain_of(method, name) if isinstance(method, type) else None
    if type(domain) not in (Flag, Choice):
        raise ValueError(f"{name!r} is neither a declared slider of {method.__name__} nor an "
                         "on/off or named knob")
    default = fixed.get(name, {f.name: f.default for f in dataclasses.fields(method)}[name])
    options = (False, True) if isinstance(domain, Flag) else domain.options
    return w.Dropdown(options=list(options), value=default, description=name)


def explore_binary(method, base, test, data=None, sliders=None, name: str = "base",
                   mark=None, mark_label: str = "", continuous: bool | None = None, **fixed):
    """``widgets.explore`` for lesson 04 (a method class): the table adds the share of zero
    weights and float MACs, binary ops, add ops and ops; ``sliders`` may also name on/off
    and named knobs (drop-downs) and ``fixed`` give a knob's starting value; ``mark`` draws
    the paper's setting of the first knob.
    The returned widget has ``.explorer`` (trail, update times) like ``explore``'s."""
    names = list(sliders) if sliders else list(knobs(method))[:1]
    first = {n: fixed.pop(n) for n in names if n in fixed}   # a knob's starting value
    explorer = PrecisionExplorer(method, base, test, data, name, mark=mark,
                                 mark_label=mark_label, **fixed)
    controls = {n: _control(method, n, fixed, True) for n in names}
    for n, value in first.items():
        controls[n].value = value
    return interactive_for(explorer, method, controls, fixed, continuous)


class SpectrumExplorer(Explorer):
    """``widgets.Explorer`` for lesson 05's rank widget: the table shows accuracy, parameters,
    bytes and MACs; the left panel the singular values of one layer of the base network with
    the rank the method kept there, the right panel accuracy and MACs against the knob."""

    def __init__(self, *args, layer: str, mark=None, mark_label: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.layer, self.mark, self.mark_label = layer, mark, mark_label
        weight = self.base.get_submodule(layer).weight.detach()
        self.spectrum = torch.linalg.svdvals(weight.flatten(1).double()).float()  # once

    def kept_rank(self, model) -> int:
        """The rank the method gave ``self.layer`` (its full rank if it left it dense)."""
        module = model.get_submodule(self.layer)
        config = getattr(module, "config", {})
        return int(config.get("rank", len(self.spectrum)))

    def update(self, **values):
        start = time.perf_counter()
        model, result, ratios = self.compute(**values)
        rank = self.kept_rank(model)
        self.trail[-1]["rank"] = rank
        keep = ("name", "accuracy", "params", "bytes", "macs")
        rows = [{k: r.row()[k] for k in keep} for r in (self.base_report, result)]
        rows[1][f"rank of {self.layer}"] = rank
        display(HTML(html_table(rows)))
        display(HTML("<b>ratios to base</b> (x smaller / fewer): "
                     + ", ".join(f"{k} {v}" for k, v in ratios.items() if k != "name")))
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
        spectrum_panels(left, right, self.spectrum, rank, self.layer, self.trail,
                        next(iter(values)), self.base_report, self.mark, self.mark_label)
        plt.show()
        plt.close(fig)
        self.seconds.append(time.perf_counter() - start)


def explore_rank(method, base, test, layer: str, data=None, sliders=None, name: str = "base",
                 mark=None, mark_label: str = "", continuous: bool | None = None, **fixed):
    """``widgets.explore`` for lesson 05 (a method class whose layers keep their rank in
    ``config["rank"]``, e.g. ``lowrank.svd``): the singular value spectrum of ``layer`` with
    the rank kept, accuracy and MACs against the knob; ``mark`` draws the paper's setting.
    The returned widget has ``.explorer`` (trail, update times) like ``explore``'s."""
    names = list(sliders) if sliders else list(knobs(method))[:1]
    first = {n: fixed.pop(n) for n in names if n in fixed}
    explorer = SpectrumExplorer(method, base, test, data, name, layer=layer, mark=mark,
                                mark_label=mark_label, **fixed)
    controls = sliders_for(method, names, True)
    for n, value in first.items():
        controls[n].value = value
    return interactive_for(explorer, method, controls, fixed, continuous)
