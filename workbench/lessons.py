"""Small helpers the lessons share, so that a notebook narrates and calls the library.

``configured(method_id, smoke, **lesson)``: a method with the lesson's settings, or its smoke
settings in a smoke run. ``measured(method, base, test, data)``: apply it (quietly) and return
the network with one table row (bits, real file bytes, accuracy, seconds).
Lesson 04: ``precision(model, data)``, the operations per image by precision;
``explore_binary``, ``explore`` with those operations, the share of zero weights and on/off
knobs (a Flag or Choice field becomes a drop-down).
Lesson 05: ``explore_rank``, ``explore`` with a layer's singular value spectrum and the rank
kept.
Lesson 06: ``explore_temperature``, a teacher's soft targets for one image against T;
``student_pair`` / ``width_sweep`` / ``explore_width``, a student trained alone and with its
teacher, against its width; ``fsp_comparison`` and ``hint_stage`` / ``hint_pair``, what FSP
and FitNets make the student match.
"""
from __future__ import annotations

import dataclasses
import time

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import HTML, display
from tqdm.auto import tqdm

from . import METHODS, codec
from .domains import Choice, Flag, domain_of
from .measure import count_params, html_table, report
from .method import Method, layers_of
from .plots import (
    entropy_against_temperature,
    precision_panels,
    soft_target_bars,
    spectrum_panels,
    weights_of,
    width_curves,
)
from .train import evaluate, quiet
from .widgets import Explorer, figure_image, interactive_for, knobs, png_of, sliders_for


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

    def compute(self, **values):
        model, result, ratios = super().compute(**values)
        self.trail[-1]["zeros"] = float((weights_of(model) == 0).float().mean())
        return model, result, ratios

    def rows(self, model, result) -> list[dict]:
        rows = []
        for r, zeros in ((self.base_report, 0.0), (result, self.trail[-1]["zeros"])):
            row = r.row(by_precision=True)
            rows.append({"name": row["name"], "accuracy": row["accuracy"],
                         "bytes": row["bytes"], "zero weights %": round(100 * zeros, 1),
                         **{label: row[key] if key != "ops" or row[key] is not None
                            else row["macs"] for key, label in PRECISION_COLUMNS.items()}})
        return rows

    def draw(self, left, right, model, knob: str):
        precision_panels(left, right, self.base_weights, weights_of(model), self.trail, knob,
                         self.base_report.accuracy, self.mark, self.mark_label)


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

    def __init__(self, *args, layer: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer = layer
        weight = self.base.get_submodule(layer).weight.detach()
        self.spectrum = torch.linalg.svdvals(weight.flatten(1).double()).float()  # once

    def kept_rank(self, model) -> int:
        """The rank the method gave ``self.layer`` (its full rank if it left it dense)."""
        module = model.get_submodule(self.layer)
        config = getattr(module, "config", {})
        return int(config.get("rank", len(self.spectrum)))

    def compute(self, **values):
        model, result, ratios = super().compute(**values)
        self.trail[-1]["rank"] = self.kept_rank(model)
        return model, result, ratios

    def rows(self, model, result) -> list[dict]:
        keep = ("name", "accuracy", "params", "bytes", "macs")
        rows = [{k: r.row()[k] for k in keep} for r in (self.base_report, result)]
        rows[1][f"rank of {self.layer}"] = self.kept_rank(model)
        return rows

    def draw(self, left, right, model, knob: str):
        spectrum_panels(left, right, self.spectrum, self.kept_rank(model), self.layer,
                        self.trail, knob, self.base_report, self.mark, self.mark_label)


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


# ------------------------------------------------------------------ lesson 06: distillation

def entropy_bits(probabilities: torch.Tensor) -> float:
    """Shannon entropy (bits) of one probability vector; 0 log 0 counts as 0."""
    p = probabilities.double()
    return float(-(p * torch.log2(p.clamp_min(1e-300))).sum())


def _image_of(data, index: int) -> np.ndarray:
    """Image ``index`` of ``data`` as matplotlib draws it (H x W, or H x W x 3)."""
    image = data.images[index].permute(1, 2, 0).numpy()
    return image[..., 0] if image.shape[-1] == 1 else image


class TemperatureExplorer:
    """The state behind ``explore_temperature``: one image's logits from the teacher and a
    figure drawn once (the image, the soft-target bars, their entropy against T) whose bars
    and marker are moved for each T. ``trail`` keeps every T shown with its probabilities."""

    def __init__(self, teacher, data, index: int, mark: float | None = None,
                 mark_label: str = "", low: float = 1.0, high: float = 100.0):
        from .distill.losses import soft_targets
        self.soft_targets = soft_targets
        self.label = int(data.labels[index])
        was_training = teacher.training
        teacher.eval()
        with torch.no_grad():
            self.logits = teacher(data.normalize(data.images[index:index + 1]))[0].double()
        teacher.train(was_training)
        grid = np.geomspace(low, high, 200)
        bits = [entropy_bits(soft_targets(self.logits, t)) for t in grid]
        self.fig, (pic, self.bar_ax, curve) = plt.subplots(
            1, 3, figsize=(11, 3.2), width_ratios=(1, 2.6, 2.2), layout="constrained")
        plt.close(self.fig)        # shown by ``update`` only, never twice
        pic.imshow(_image_of(data, index), cmap="gray")
        pic.set_title(f"test image {index}, label {self.label}", fontsize=8)
        pic.axis("off")
        self.bars = soft_target_bars(self.bar_ax, self.probabilities(low), self.label)
        self.marker = entropy_against_temperature(curve, grid, bits, mark, mark_label)
        self.trail: list[dict] = []
        # only bar heights, a marker and a title change: lay the figure out once (with room
        # for the title), not per move
        self.bar_ax.set_title("T", fontsize=9)
        self.fig.draw_without_rendering()
        self.fig.set_layout_engine("none")
        self.plot = figure_image(self.fig)

    def probabilities(self, temperature: float) -> torch.Tensor:
        """The teacher's soft targets for the image at ``temperature``."""
        return self.soft_targets(self.logits, temperature)

    def update(self, temperature: float):
        p = self.probabilities(temperature)
        for bar, height in zip(self.bars, p.tolist()):
            bar.set_height(height)
        bits = entropy_bits(p)
        self.marker.set_data([temperature], [bits])
        wrong = p.clone()
        wrong[self.label] = -1
        runner_up = int(wrong.argmax())
        self.bar_ax.set_title(f"T = {temperature:.3g}: p(true class) = {p[self.label]:.3f}, "
                              f"next: class {runner_up} with {p[runner_up]:.3g}", fontsize=9)
        self.trail.append({"temperature": temperature, "probabilities": p, "bits": bits})
        self.plot.value = png_of(self.fig)


def explore_temperature(teacher, data, index: int, mark: float | None = None,
                        mark_label: str = "", low: float = 1.0, high: float = 100.0,
                        value: float = 1.0):
    """A slider T (log scale, ``low`` to ``high``) and a teacher's soft targets
    ``softmax(logits / T)`` for image ``index`` of ``data``, redrawn in place while dragging
    (one forward pass at creation, none per move); ``mark`` draws the paper's T. The returned
    widget has ``.explorer`` (its ``trail``)."""
    explorer = TemperatureExplorer(teacher, data, index, mark, mark_label, low, high)
    slider = w.FloatLogSlider(value=value, base=10, min=np.log10(low), max=np.log10(high),
                              step=0.01, description="T", continuous_update=True,
                              readout_format=".3g")
    slider.observe(lambda change: explorer.update(change["new"]), names="value")
    explorer.update(value)              # cheap (no forward pass): on the move, not in a thread
    widget = w.VBox([slider, explorer.plot])
    widget.add_class("wb-explore")
    widget.explorer, widget.kwargs_widgets = explorer, [slider]
    return widget


def student_pair(method, teacher, train, test, width: int, alone: dict | None = None,
                 progress: bool = False) -> dict:
    """The student of ``width`` trained twice by a distillation ``method`` from the same
    initialization (the method's seed): with the teacher (the method's settings) and alone,
    i.e. with ``alone`` changed (default ``{"weight": 0.0}``: the same loss without its soft
    term, so the hard labels only). Test accuracy of both and the student's parameters."""
    import dataclasses as dc
    arms = {"alone": dc.replace(method, width=width, **(alone or {"weight": 0.0})),
            "kd": dc.replace(method, width=width)}
    row = {"width": width}
    for name in tqdm(arms, desc=f"width {width}", disable=not progress, leave=False):
        with quiet():
            student = arms[name].apply(teacher, train)
        row[name] = round(evaluate(student, test), 4)
    row["params"] = count_params(student)[0]
    return row


def width_sweep(method, teacher, train, test, widths, alone: dict | None = None,
                progress: bool = True) -> list[dict]:
    """``student_pair`` at each of ``widths`` (a progress bar over the widths)."""
    return [student_pair(method, teacher, train, test, width, alone)
            for width in tqdm(list(widths), desc="widths", disable=not progress)]


class WidthExplorer:
    """The state behind ``explore_width``: the trained points (``rows``, by width), a slider
    over ``widths``, a button that trains the chosen width, and one figure redrawn in place."""

    def __init__(self, method, teacher, train, test, rows, widths, teacher_accuracy=None,
                 teacher_label: str = "teacher", alone: dict | None = None):
        self.method, self.teacher, self.train_data, self.test = method, teacher, train, test
        self.rows = {r["width"]: r for r in rows}
        self.teacher_accuracy, self.teacher_label, self.alone = \
            teacher_accuracy, teacher_label, alone
        self.teacher_params = count_params(teacher)[0]
        options = sorted({*widths, *self.rows})
        start = max(self.rows) if self.rows else options[0]
        self.slider = w.SelectionSlider(options=options, value=start, description="width",
                                        continuous_update=True)
        self.button = w.Button(description="train this width", icon="play")
        self.out, self.table_view = w.Output(), w.HTML()      # out: the training's progress
        self.fig, self.ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
        plt.close(self.fig)
        self.plot = figure_image(self.fig)
        self.slider.observe(lambda change: self.show(), names="value")
        self.button.on_click(lambda _: self.train_chosen())

    def train(self, width: int) -> dict:
        """Train the student of ``width`` alone and with the teacher; keep the point."""
        self.rows[width] = student_pair(self.method, self.teacher, self.train_data, self.test,
                                        width, self.alone, progress=True)
        return self.rows[width]

    def train_chosen(self):
        with self.out:
            self.train(self.slider.value)
        self.show()

    def table(self, width: int) -> list[dict]:
        row = self.rows.get(width)
        if row is None:
            return [{"width": width, "status": "not trained yet: press 'train this width'"}]
        return [{"width": width, "params": row["params"],
                 "x fewer than the teacher": round(self.teacher_params / row["params"], 1),
                 "accuracy alone": row["alone"], "accuracy with the teacher": row["kd"],
                 "gain (points)": round(100 * (row["kd"] - row["alone"]), 2)}]

    def show(self):
        width = self.slider.value
        self.ax.clear()
        width_curves(self.ax, list(self.rows.values()), self.teacher_accuracy, width,
                     self.teacher_label)
        self.table_view.value = html_table(self.table(width))
        self.plot.value = png_of(self.fig)


def explore_width(method, teacher, train, test, rows, widths, teacher_accuracy=None,
                  teacher_label: str = "teacher", alone: dict | None = None):
    """Student width against accuracy, alone and with the teacher: the points of ``rows``
    (from ``width_sweep``), a slider over ``widths`` that shows a point's figures, and a
    button that trains the chosen width with ``method`` (``student_pair``) and adds it.
    The returned widget has ``.explorer``."""
    explorer = WidthExplorer(method, teacher, train, test, rows, widths, teacher_accuracy,
                             teacher_label, alone)
    explorer.show()
    widget = w.VBox([w.HBox([explorer.slider, explorer.button]), explorer.table_view,
                     explorer.plot, explorer.out])
    widget.add_class("wb-explore")
    widget.explorer = explorer
    return widget


@torch.no_grad()
def fsp_comparison(method, teacher, students: dict, data, images: int = 64):
    """What ``distill.fsp`` matches: the stages ``method.stages`` pairs (teacher's names),
    each network's FSP matrices averaged over ``images`` images of ``data`` (teacher first,
    then ``students``, label -> network of one architecture), and per stage the FSP loss of
    each student to the teacher (the method's own ``fsp_loss``, per image, no projection:
    the students must have the teacher's widths there, as the method's default student has)."""
    from .distill.hints import fsp_matrices
    from .distill.hints_tensors import fsp_loss
    x = data.subset(min(images, len(data)), seed=0).tensors()[0]
    first = next(iter(students.values()))
    t_stages, s_stages = method.stages(first, teacher, data.shape)
    per_image = {"teacher": fsp_matrices(teacher.eval(), t_stages, x)}
    for label, student in students.items():
        per_image[label] = fsp_matrices(student.eval(), s_stages, x)
    rows = [{"stage (teacher / student)": f"{t} / {s}",
             "matrix": "x".join(map(str, per_image["teacher"][i].shape[1:])),
             **{f"FSP loss, {label}": round(float(fsp_loss([per_image["teacher"][i]],
                                                             [per_image[label][i]])), 4)
                for label in students}}
            for i, (t, s) in enumerate(zip(t_stages, s_stages))]
    means = {label: [m.mean(0) for m in mats] for label, mats in per_image.items()}
    return t_stages, means, rows


def hint_stage(method, teacher, data) -> dict:
    """FitNets' stage 1 alone, with ``method``'s own pieces (``distill.fitnets``): a fresh
    student, the hint and guided layers it picks, its regressor, trained by ``train_hints``
    for ``method.hint_epochs``. Returns the student, the regressor and the layer names.
    The teacher is a frozen copy: the caller's network is untouched."""
    from .distill.losses import frozen
    from .method import clone_model
    teacher = frozen(clone_model(teacher))
    student = method.make_student(teacher, data)
    hint, guided = method.layers(student, teacher, data.shape)
    regressor = method.regressor(student, teacher, data.shape, hint, guided)
    if method.hint_epochs:
        with quiet():
            method.train_hints(student, teacher, data, regressor, hint, guided)
    return {"student": student, "regressor": regressor, "hint": hint, "guided": guided}


@torch.no_grad()
def hint_pair(teacher, stage: dict, data, index: int):
    """(the teacher's hint, the student's regressed guided layer) for image ``index`` of
    ``data`` (C x H x W each, both at the regressor's output size), networks in eval mode."""
    from .distill.hints_tensors import hint_target, run_until
    x = data.normalize(data.images[index:index + 1])
    student, regressor = stage["student"].eval(), stage["regressor"].eval()
    features, _ = run_until(student, stage["guided"], x)
    regressed = regressor(features)
    target, _ = run_until(teacher.eval(), stage["hint"], x)
    return hint_target(target, regressed.shape[-2:])[0], regressed[0]


# ------------------------------------------------------------------ lesson 01a / 01b: pruning

def compared(method_id: str, smoke: bool = False, same: dict | None = None, **lesson) -> Method:
    """``configured``, except that ``same`` (the knobs a comparison holds equal, e.g. the
    share of channels kept) wins over the method's smoke settings too."""
    method = configured(method_id, smoke, **lesson, **(same or {}))
    return dataclasses.replace(method, **(same or {}))


def kept_weights(model) -> torch.Tensor:
    """Which weights of the Conv2d and Linear layers are nonzero, as one flat bool tensor."""
    return torch.cat([(m.weight != 0).flatten() for _, m in layers_of(model)])


def fc_params(model) -> int:
    """Weights and biases of the Linear layers."""
    return sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, torch.nn.Linear))


def sensitivity_plot(scan: list[dict], base_accuracy: float, images: int, title: str):
    """One line per layer of ``prune.layer_sensitivity``'s rows: accuracy against the sparsity
    of that layer alone, with the unpruned accuracy dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for layer in dict.fromkeys(r["layer"] for r in scan):
        rows = [r for r in scan if r["layer"] == layer]
        ax.plot([r["sparsity"] for r in rows], [r["accuracy"] for r in rows], "o-", ms=3,
                label=f"{layer} ({rows[0]['weights']:,} weights)")
    ax.axhline(base_accuracy, color="0.5", ls="--", label="unpruned")
    ax.set_xlabel("sparsity of this one layer")
    ax.set_ylabel(f"accuracy ({images:,} test images)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)


def storage_row(model, formats: dict, tensor: str = "net.1.weight") -> dict:
    """The real file bytes of ``model`` in each of ``formats`` (name -> codec formats), the
    bytes its nonzero values alone take in fp32, and how the relative-index file (the last
    format) stores ``tensor``: format, index bits, fillers."""
    blobs = {name: codec.encode(model, formats=f) for name, f in formats.items()}
    header = codec.read_header(list(blobs.values())[-1])
    entry = next(t for t in header["tensors"] if t["name"] == tensor)
    nonzeros = count_params(model)[1]
    return {**{name: len(blob) for name, blob in blobs.items()},
            "values only (4 B x nonzeros)": 4 * nonzeros,
            f"bytes per nonzero, {list(formats)[-1]}":
                round(len(list(blobs.values())[-1]) / nonzeros, 2),
            f"{tensor}: format": entry["format"], "index bits": entry.get("index_bits"),
            "fillers": entry.get("fillers")}


def storage_plot(storage: list[dict], names, xlabel: str):
    """File size (log scale) against sparsity, one line per format; the values alone dotted."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for name in [*names, "values only (4 B x nonzeros)"]:
        ax.plot([r["sparsity"] for r in storage], [r[name] / 1e3 for r in storage],
                "k:" if name.startswith("values") else "o-", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("file size (kB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)


class StorageExplorer(Explorer):
    """``widgets.Explorer`` for lesson 01a's storage section: the base pruned by magnitude,
    its real file in each of ``formats`` (``storage_row``) as a table and as bars (left), and
    every format's bytes against the sparsities visited (right), ``mark`` as a line."""

    def __init__(self, *args, formats: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.formats = formats

    def compute(self, **values):
        model, result, ratios = super().compute(**values)
        self.trail[-1].update(storage_row(model, self.formats))
        return model, result, ratios

    def rows(self, model, result) -> list[dict]:
        return [{"sparsity": self.trail[-1]["sparsity"], "accuracy": result.accuracy,
                 **{k: v for k, v in self.trail[-1].items()
                    if k not in ("sparsity", "accuracy", "bytes", "macs", "effective_macs")}}]

    def draw(self, left, right, model, knob: str):
        names = [*self.formats, "values only (4 B x nonzeros)"]
        sizes = [self.trail[-1][n] / 1e3 for n in names]
        left.barh(range(len(names)), sizes, color=[f"C{i}" for i in range(len(self.formats))]
                  + ["0.6"], alpha=0.6)
        for i, (label, size) in enumerate(zip(names, sizes)):     # labels inside the axes
            left.text(min(sizes) * 0.3, i, f"{label}: {size:,.0f} kB", va="center", fontsize=8)
        left.set_xscale("log")
        left.set_xlim(min(sizes) * 0.25, max(sizes) * 1.5)
        left.set_yticks([])
        left.set_xlabel("file size (kB, log scale)")
        trail = sorted(self.trail, key=lambda r: r[knob])
        for i, name in enumerate(names):
            right.plot([r[knob] for r in trail], [r[name] / 1e3 for r in trail],
                       "k:" if i == len(self.formats) else "o-", ms=3, label=name)
        if self.mark is not None:
            right.axvline(self.mark, color="k", ls="--", lw=0.8,
                          label=self.mark_label or f"{knob} = {self.mark}")
        right.set_yscale("log")
        right.set_xlabel(knob)
        right.set_ylabel("file size (kB)")
        right.legend(fontsize=7)


def explore_storage(base, test, formats: dict, name: str = "base", mark=None,
                    mark_label: str = "", sparsity: float = 0.9):
    """A ``sparsity`` slider (``Magnitude``): ``base`` pruned to it and written in each of
    ``formats`` (name -> codec formats): the bytes of every file, as a table, as bars, and
    against the sparsities visited; ``mark`` draws the paper's sparsity. The returned widget
    has ``.explorer`` like ``explore``'s."""
    from .prune.magnitude import Magnitude
    explorer = StorageExplorer(Magnitude, base, test, None, name, mark, mark_label,
                               formats=formats)
    controls = sliders_for(Magnitude, ["sparsity"], True)
    controls["sparsity"].value = sparsity
    return interactive_for(explorer, Magnitude, controls, {}, None)


def speedup(model, base, pairs: int, batch: int = 64):
    """How many times faster ``model`` runs than ``base`` (both as shipped), batch ``batch``,
    one thread, interleaved in ``pairs`` pairs (``measure.compare_latency``)."""
    from .measure import compare_latency
    return compare_latency(model, base, batch=batch, threads=1, pairs=pairs)


def speed_columns(c) -> dict:
    """A timing comparison as table columns: the model's median ms, the speed-up, in words."""
    return {"ms (b64)": round(c.a_ms, 1), "speed-up": c.speedup, "vs dense": c.display}


def sparse_speed_plot(detail: list[dict]) -> list[dict]:
    """The rows of bench ``pruning_speed`` at one thread: per case, the dense and the CSR
    product's median ms against sparsity (log scale). Returns, per case, how much the dense
    product's time moved between the first and the last sparsity of the plot (each point
    is its own timing run, so this drift is the machine's, see the interleaved check)."""
    cases = list(dict.fromkeys(r["case"] for r in detail))
    fig, axes = plt.subplots(1, len(cases), figsize=(11, 3.6), layout="constrained")
    drift = []
    for ax, case in zip(np.atleast_1d(axes), cases):
        rows = [r for r in detail if r["case"] == case]
        for kind in ("dense", "csr"):
            ax.plot([r["sparsity"] for r in rows], [r[f"{kind}_ms"] for r in rows], "o-",
                    ms=3, label=f"{kind} ({rows[0]['weights']} weights)")
        ax.set_yscale("log")
        ax.set_title(case, fontsize=9)
        ax.set_xlabel("weight sparsity")
        ax.set_ylabel("ms per product (1 thread)")
        ax.legend(fontsize=8)
        drift.append({"case": case, "dense ms at 0": rows[0]["dense_ms"],
                      f"dense ms at {rows[-1]['sparsity']}": rows[-1]["dense_ms"],
                      "last / first (separate runs)":
                          round(rows[-1]["dense_ms"] / rows[0]["dense_ms"], 2)})
    plt.show()
    plt.close(fig)
    return drift


def speed_vs_macs_plot(points: dict):
    """Measured speed-up (median, IQR bars) against how many times fewer (effective) MACs,
    log-log, one series per label of ``points`` (label -> [(MACs x, Comparison)]), with the
    diagonal where time would fall with the MACs; prints each point in words."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2), layout="constrained")
    for label, xy in points.items():
        ax.errorbar([x for x, _ in xy], [c.speedup for _, c in xy], fmt="o", capsize=2,
                    label=label, yerr=[[c.speedup - c.spread[0] for _, c in xy],
                                       [c.spread[1] - c.speedup for _, c in xy]])
    top = max(x for xy in points.values() for x, _ in xy)
    ax.plot([1, top], [1, top], "k:", label="speed-up = MAC reduction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs x fewer (effective)")
    ax.set_ylabel("measured speed-up (median, IQR), batch 64, 1 thread")
    ax.set_title("VGG-small: fewer MACs vs less time", fontsize=10)
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)
    for label, xy in points.items():
        for x_macs, c in xy:
            print(f"{label}: {x_macs:.2f}x fewer MACs, {c.display} "
                  f"(latency ratio / MAC ratio = {x_macs / c.speedup:.2f})")


# ------------------------------------------------------------------ lesson 02: quantization

# the smoke settings that size data or training; a smoke run takes only these from a method
SMOKE_SIZE_KNOBS = ("epochs", "calibration", "images", "samples", "sweeps")


def configured_sized(method_id: str, smoke: bool = False, **lesson) -> Method:
    """``METHODS[method_id]`` with the lesson's settings. In a smoke run the method's
    ``smoke`` settings apply only where they size the data or the training
    (``SMOKE_SIZE_KNOBS``) and the lesson does not set them: the knobs a comparison is about
    (``k``, ``subvector``, ``max_bits``, ...) stay the lesson's."""
    if method_id not in METHODS:
        raise ValueError(f"unknown method {method_id!r}; allowed: {sorted(METHODS)}")
    cls = METHODS[method_id]
    sizes = {k: v for k, v in (cls.smoke if smoke else {}).items() if k in SMOKE_SIZE_KNOBS}
    return cls(**{**sizes, **lesson})


def sqnr_rows(weight: torch.Tensor, words=range(2, 13)) -> list[dict]:
    """Fixed point at each word length (best fraction length) on ``weight``: the step, the
    SQNR in dB, the share of weights clipped at the range's ends and the rounding error's
    spread in units of step / sqrt(12) (1 for uniform noise)."""
    from .quantize import scalar
    rows = []
    for word in words:
        frac = scalar.best_frac(weight, word)
        step = 2.0 ** -frac
        err = scalar.fixed_point(weight, word, frac) - weight
        rows.append({"bits": word, "frac": frac, "step": step,
                     "SQNR dB": round(10 * torch.log10(weight.pow(2).sum()
                                                       / err.pow(2).sum()).item(), 2),
                     "clipped %": round(100 * float((err.abs() > step / 2).float().mean()), 4),
                     "error std / (step/sqrt 12)": round(err.std().item() / (step / 12 ** 0.5),
                                                         3)})
    return rows


def sqnr_panels(left, right, rows: list[dict], weight: torch.Tensor, word: int = 8) -> None:
    """Left: SQNR against bits with the 6 dB-per-bit line through the last point. Right: the
    rounding errors at ``word`` bits that stay within half a step (the clipped ones, counted in
    the title, lie far outside and are not drawn)."""
    from .quantize import scalar
    bits = [r["bits"] for r in rows]
    left.plot(bits, [r["SQNR dB"] for r in rows], "o-", label="measured")
    left.plot(bits, [rows[-1]["SQNR dB"] + scalar.KAPPA * (b - bits[-1]) for b in bits], "k:",
              label=f"{scalar.KAPPA} dB per bit")
    left.set(xlabel="bits (fixed point, best fraction length)", ylabel="SQNR (dB)")
    left.legend(fontsize=8)
    frac = scalar.best_frac(weight, word)
    step = 2.0 ** -frac
    err = (scalar.fixed_point(weight, word, frac) - weight).flatten()
    inside = err.abs() <= step / 2
    right.hist(err[inside].numpy() / step, bins=40, color="C1")
    right.set_xlabel(f"rounding error at {word} bits, in steps of 2^-{frac}")
    clipped = err[~inside]
    note = (f"\n{len(clipped)} clipped, errors up to {clipped.abs().max():.3f} (not drawn)"
            if len(clipped) else "")
    right.set_title(f"{word} bits: {int(inside.sum()):,} errors within half a step{note}",
                    fontsize=9)


def kmeans_start_panels(axes, weight: torch.Tensor, k: int, layer: str) -> None:
    """One panel per k-means start (``kmeans.INITS``) on the histogram of ``weight``: the
    starting centroids (dotted) and where Lloyd's iterations took them (solid)."""
    from .quantize import kmeans
    for ax, init in zip(axes, kmeans.INITS):
        start = kmeans.init_centroids(weight, k, init)
        codebook, indices = kmeans.kmeans_codebook(weight, k, init)
        counts, _, _ = ax.hist(weight.flatten().numpy(), bins=200, color="0.75", log=True)
        top = counts.max()
        ax.vlines(start.numpy(), 1, top, colors="C1", linestyles=":", label="start")
        ax.vlines(codebook.numpy(), 1, top, colors="C0", label="after k-means")
        mse = (codebook[indices] - weight).pow(2).mean().item()
        ax.set_title(f"{layer}, {init} start: MSE {mse:.4e}", fontsize=9)
    axes[0].legend(fontsize=8)


def kmeans_init_rows(model, ks=(4, 8, 16, 32)) -> list[dict]:
    """Per layer and k, the weight MSE after k-means from each start and the largest distance
    between the codebooks the starts end on (0: they converged to the same codebook)."""
    from .quantize import kmeans
    rows = []
    for name, module in layers_of(model):
        weight = module.weight.detach()
        for k in ks:
            books = {init: kmeans.kmeans_codebook(weight, k, init) for init in kmeans.INITS}
            row = {"layer": name, "weights": weight.numel(), "k": k}
            for init, (codebook, indices) in books.items():
                row[f"MSE {init}"] = f"{(codebook[indices] - weight).pow(2).mean().item():.4e}"
            values = [c for c, _ in books.values()]
            row["largest centroid gap"] = (
                f"{max(float((a - values[0]).abs().max()) for a in values):.1e}"
                if all(len(v) == len(values[0]) for v in values) else "different k")
            rows.append(row)
    return rows


def integer_layer(layer, x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
                  x_scale: float, x_zp: int, y_scale: float, y_zp: int) -> dict:
    """A Linear layer of ``quant.int8`` on integers, Jacob et al.'s way, with the library's
    kernels and with ONNX Runtime's QLinearConv on the same integers: the uint8 input codes,
    the int32 accumulators, the multiplier (M0, shift) and both uint8 outputs."""
    from .quantize import int8
    xq = int8.quantize_tensor(x, x_scale, x_zp)
    bias_q = int8.quantize_bias(layer.bias.detach(), x_scale, w_scale)
    acc = int8.int8_linear(xq, x_zp, wq, 0, bias_q)
    m0, shift = int8.quantize_multiplier(x_scale * w_scale.double() / y_scale)
    yq = int8.requantize(acc, m0, shift, y_zp)
    out, inp = wq.shape
    ort = int8.ort_qlinear_conv(xq.view(-1, inp, 1, 1), x_scale, x_zp, wq.view(out, inp, 1, 1),
                                w_scale, 0, bias_q, y_scale, y_zp).view(-1, out)
    return {"xq": xq, "acc": acc, "m0": m0, "shift": shift, "yq": yq, "ort": ort}


def output_qparams(y: torch.Tensor) -> tuple[float, int]:
    """(scale, zero point) of uint8 codes covering ``y``'s range (min-max, as calibration)."""
    scale = float(y.max() - y.min()) / 255
    return scale, int(round(-float(y.min()) / scale))


def onnx_speed(name: str, train, test, method, pairs: int, block_time: float,
               latency_s: float):
    """Real int8 speed of zoo network ``name``: fp32 and ``method``'s int8 (ONNX Runtime's
    static quantizer, calibrated on ``method.calibration_images(train)``) timed interleaved
    in ONNX Runtime (batch 64, one thread), and PyTorch fp32 beside them. Returns (rows with
    accuracy on ``test``, ONNX bytes and ms; the ``timing.Comparison`` int8 vs fp32)."""
    from . import zoo
    from .measure import latency_ms
    from .quantize import int8
    net = zoo.pretrained(name)
    blobs = {"fp32": int8.to_onnx(net),
             "int8": int8.onnx_int8(method.apply(net, train), method.calibration_images(train))}
    speed = int8.compare_onnx(blobs["int8"], blobs["fp32"], batch=64, threads=1, pairs=pairs,
                              block_time=block_time)
    ms = {"fp32": speed.b_ms, "int8": speed.a_ms}
    rows = [{"model": name, "runtime": f"ONNX Runtime {kind}",
             "accuracy": round(int8.onnx_accuracy(blob, test), 4), "ONNX bytes": len(blob),
             "ms (batch 64, 1 thread)": round(ms[kind], 2)} for kind, blob in blobs.items()]
    torch_ms = latency_ms(net, net.input_shape, batch=64, threads=1, min_run_time=latency_s)
    rows.append({"model": name, "runtime": "PyTorch fp32",
                 "accuracy": round(evaluate(net, test), 4), "ONNX bytes": None,
                 "ms (batch 64, 1 thread)": round(torch_ms, 2)})
    return rows, speed


def paper_rows(ids, quoted: dict, ours: dict) -> list[dict]:
    """"Paper vs ours" for catalogue ``ids``: the catalogue's ``paper_target`` (or, when it
    has none, ``quoted[id]`` = (the source's words, source)) beside ``ours[id]``; ids with
    neither are left out."""
    from . import catalogue
    rows = []
    for entry in map(catalogue.by_id, ids):
        if not (entry.paper_target or entry.id in quoted):
            continue
        paper, source = ((entry.paper_target, "catalogue") if entry.paper_target
                         else quoted[entry.id])
        rows.append({"id": entry.id, "reference": entry.reference, "paper": paper,
                     "source": source,
                     "ours (this notebook)": ours.get(entry.id, "not measured in this lesson")})
    return rows


# ------------------------------------------------------------------ lessons 00 and 03: tour, Deep Compression

def one_shot_vs_han(models: dict, reports: dict, test) -> list[dict]:
    """Lesson 00's paper-vs-ours rows: each MNIST network of ``models`` that Han et al. 2015
    prune (``plots.HAN_2015``), pruned one-shot by magnitude to the share of weights they keep,
    beside their retrained error; ``reports`` holds the base networks' reports on ``test``."""
    from .plots import HAN_2015
    from .prune import Magnitude
    rows = []
    for name, paper in HAN_2015.items():
        if name not in models:
            continue
        ours = report(Magnitude(sparsity=1 - paper["kept"]).apply(models[name]), test,
                      latency=False)
        rows.append({"model": name, "weights kept": f"{paper['kept']:.0%}",
                     "paper: base err %": round(100 * paper["base_error"], 2),
                     "paper: pruned + retrained err %": round(100 * paper["error"], 2),
                     "ours: base err %": round(100 * (1 - reports[name].accuracy), 2),
                     "ours: one-shot err %": round(100 * (1 - ours.accuracy), 2),
                     "ours: nonzeros kept": f"{ours.nonzeros / ours.params:.1%}",
                     "test images": ours.test_images})
    return rows


def latency_lines(r) -> list[str]:
    """The interleaved latency comparisons of report ``r`` (made with ``latency_vs=``), one
    sentence per batch size with how they were timed."""
    return [f"batch {key.removeprefix('b')}: {c['display']} ({c['pairs']} interleaved pairs, "
            f"{c['threads']} thread(s), load average {c['load_avg']:.1f} on {c['cpus']} CPUs)"
            for key, c in (r.latency_vs or {}).items()]


def paper_stage_bytes(model_name: str) -> dict:
    """Lesson 03: the bytes of Han et al. 2016's dense, quantized (pruning + quantization) and
    Huffman-coded files of ``model_name`` (``reproduce.PAPER``: dense KB, final KB and the
    P+Q rate of the total row); the paper gives no bytes for pruning alone."""
    from .reproduce import PAPER
    paper = PAPER[model_name]
    dense = paper["kb"][0] * 1000
    return {"dense": dense, "quantized": paper["layers"][-1][7] / 100 * dense,
            "huffman": paper["kb"][1] * 1000}


def stage_factors(model_name: str, stage_rows: list[dict]) -> dict:
    """Lesson 03: the factor each stage adds (bytes before / bytes after) in our run
    (``reproduce.tables``' stage rows) and what Huffman coding adds in the paper (its P+Q rate
    over its P+Q+H rate, total row of ``reproduce.PAPER``)."""
    from .reproduce import PAPER
    size = {row["stage"]: row["bytes"] for row in stage_rows}
    total = PAPER[model_name]["layers"][-1]
    return {"pruning": size["dense"] / size["pruned"],
            "quantization": size["pruned"] / size["quantized"],
            "huffman": size["quantized"] / size["huffman"],
            "paper_huffman": total[7] / total[8],
            "paper_rates_pct": (total[7], total[8])}


def chain_at(chain, base, test, points: list[dict], dense_bytes: int) -> list[dict]:
    """Lesson 03: ``chain`` (a ``pipeline.Hybrid``, knobs named as ``explore`` names them,
    e.g. ``"quant.kmeans.k"``) applied to ``base`` at each of ``points`` and measured with
    ``measured``: the knobs, the file's bytes, x smaller than ``dense_bytes``, accuracy."""
    from .widgets import configure
    rows = []
    for values in points:
        _, row = measured(configure(chain, values), base, test)
        rows.append({**values, "file bytes": row["file bytes"],
                     "x": round(dense_bytes / row["file bytes"], 1),
                     "file bits/weight": row["file bits/weight"],
                     "accuracy": row["accuracy"], "test images": len(test)})
    return rows


def accuracy_at(curves: dict, models: dict, test, sparsity: float) -> dict:
    """Lesson 00: each swept network's accuracy at ``sparsity`` (one-shot magnitude pruning),
    from the sweep's ``curves`` when it is a sweep point, else measured here on ``test``."""
    from .prune import Magnitude
    out = {}
    for name, rows in curves.items():
        swept = {row["sparsity"]: row["accuracy"] for row in rows}
        out[name] = swept[sparsity] if sparsity in swept else report(
            Magnitude(sparsity=sparsity).apply(models[name]), test, latency=False).accuracy
    return out


def stream_panels(dense, shared, layer: str):
    """Lesson 03: a figure of ``layer``'s weights before (``dense``) and after sharing
    (``shared``) with the shared values as lines, and the histograms of the two streams Deep
    Compression Huffman-codes (codebook indices, gaps); returns (figure, streams)."""
    from .plots import symbol_histogram, weight_histogram
    weight = shared.get_submodule(layer).weight.detach()
    streams = codec.deep_compression_streams(weight)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    weight_histogram(axes[0], weights_of(dense), weight.flatten())
    axes[0].set_title(f"{layer}: {len(streams['codebook']) - 1} shared values", fontsize=9)
    for c in streams["codebook"]:
        axes[0].axvline(float(c), color="C3", lw=0.3)
    symbol_histogram(axes[1], streams["indices"], len(streams["codebook"]),
                     "codebook index of each entry")
    symbol_histogram(axes[2], streams["gaps"], 2 ** streams["index_bits"],
                     f"relative index (gap), {streams['index_bits']} bits")
    return fig, streams


# ------------------------------------------------------------------ lesson 04 widgets
# (and the longer cells of lesson 04, so that the notebook narrates)

def ste_estimators() -> dict:
    """Lesson 04's three straight-through estimators: label -> function of ``binary.core``."""
    from .binary import core
    return {"identity (sign_ste)": core.sign_ste, "hard-tanh (sign_htanh, BNN)": core.sign_htanh,
            "ApproxSign (sign_approx, Bi-Real)": core.sign_approx}


def ste_gradient_rows(xs) -> list[dict]:
    """For each x: sign(x) and the gradient autograd passes back through each estimator."""
    from .binary import core
    x = torch.tensor([float(v) for v in xs], dtype=torch.float64)
    rows = [{"x": v, "sign(x)": s} for v, s in zip(x.tolist(), core.sign(x).tolist())]
    for label, fn in zip(("ste", "htanh", "approx"), ste_estimators().values()):
        xg = x.clone().requires_grad_(True)
        fn(xg).sum().backward()
        for row, g in zip(rows, xg.grad.tolist()):
            row[f"grad {label}"] = g
    return rows


def _fixed_figure(figsize=(10, 3.2)):
    """A figure of fixed size and margins (no layout engine: redrawn in place, same pixels)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=96)
    fig.subplots_adjust(left=0.07, right=0.97, bottom=0.17, top=0.88, wspace=0.28)
    return fig


class SteExplorer:
    """Lesson 04, section 1: the STE panels drawn once, a vertical line at the slider's x moved
    on each update, and a table of sign(x) and each estimator's gradient at x."""

    def __init__(self, mark: float | None = None, mark_label: str = ""):
        from .plots import ste_panels
        self.fig = _fixed_figure((11, 3.4))
        left, right = self.fig.subplots(1, 2)
        ste_panels(left, right, ste_estimators())
        if mark is not None:
            right.axvline(mark, color="k", ls=":", lw=1, label=mark_label or f"x = {mark}")
            right.legend(fontsize=7)
        self.cursors = [ax.axvline(0.0, color="C3", lw=1) for ax in (left, right)]
        self.table, self.plot, self.trail = w.HTML(), figure_image(self.fig), []

    def update(self, x: float):
        row = ste_gradient_rows([x])[0]
        for line in self.cursors:
            line.set_xdata([x, x])
        self.table.value = html_table([row])
        self.plot.value = png_of(self.fig)
        self.trail.append(row)


def _widget(explorer, controls: list, *parts):
    box = w.VBox([*controls, *parts])
    box.add_class("wb-explore")
    box.explorer, box.kwargs_widgets = explorer, controls
    return box


def explore_ste(x: float = 0.5, mark: float | None = None, mark_label: str = ""):
    """A slider x in [-2, 2]: the sign and the three straight-through gradients at x, as a table
    and as a line on the panels of ``plots.ste_panels``; ``mark`` draws the paper's point."""
    explorer = SteExplorer(mark, mark_label)
    slider = w.FloatSlider(value=x, min=-2.0, max=2.0, step=0.05, description="x",
                           continuous_update=True, readout_format=".2f")
    slider.observe(lambda change: explorer.update(change["new"]), names="value")
    explorer.update(x)
    return _widget(explorer, [slider], explorer.table, explorer.plot)


def scale_errors(row: torch.Tensor, alphas) -> torch.Tensor:
    """||row - alpha sign(row)||^2 for each alpha (float64)."""
    from .binary import core
    r = row.detach().double().flatten()
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1, 1)
    return (r - a * core.sign(r)).pow(2).sum(1)


class ScaleExplorer:
    """Lesson 04, section 2: one output channel's weights and the error of alpha sign(W) against
    alpha, drawn once; the slider moves +-alpha on the histogram and a point on the curve.
    The line is the least-squares alpha* = mean|W| (``core.ls_scale``)."""

    def __init__(self, weight: torch.Tensor, channel: int = 0, mark_label: str = ""):
        from .binary import core
        self.row = weight[channel].detach().double().flatten()
        self.best = float(core.ls_scale(weight.detach())[channel].flatten()[0])
        self.best_error = float(scale_errors(self.row, [self.best])[0])
        self.high = 3 * self.best
        grid = torch.linspace(0, self.high, 301, dtype=torch.float64)
        self.fig = _fixed_figure()
        left, right = self.fig.subplots(1, 2)
        left.hist(self.row.numpy(), bins=80, color="0.6")
        left.set_xlabel(f"weights of output channel {channel}")
        for s in (1, -1):
            left.axvline(s * self.best, color="k", ls=":", lw=1)
        self.spikes = [left.axvline(0.0, color="C3", lw=1.5) for _ in range(2)]
        right.plot(grid.numpy(), scale_errors(self.row, grid).numpy(), color="C0")
        right.axvline(self.best, color="k", ls=":", label=mark_label or "alpha* = mean|W|")
        (self.point,) = right.plot([], [], "o", color="C3", label="the slider's alpha")
        right.set_xlabel("alpha")
        right.set_ylabel("||W - alpha sign(W)||^2")
        right.legend(fontsize=8)
        self.table, self.plot, self.trail = w.HTML(), figure_image(self.fig), []

    def update(self, alpha: float):
        error = float(scale_errors(self.row, [alpha])[0])
        for line, s in zip(self.spikes, (1, -1)):
            line.set_xdata([s * alpha, s * alpha])
        self.point.set_data([alpha], [error])
        row = {"alpha": alpha, "error": error, "alpha* = mean|W|": self.best,
               "error at alpha*": self.best_error,
               "extra error %": 100 * (error / self.best_error - 1)}
        self.table.value = html_table([{k: round(v, 2 if k.endswith("%") else 5)
                                        for k, v in row.items()}])
        self.plot.value = png_of(self.fig)
        self.trail.append(row)


def explore_scale(weight: torch.Tensor, channel: int = 0, alpha: float | None = None,
                  mark_label: str = ""):
    """A slider over the scale alpha of ``weight[channel]`` (0 to 3 alpha*): the error of
    alpha sign(W), the signs' +-alpha on the weights' histogram, alpha* as the line."""
    explorer = ScaleExplorer(weight, channel, mark_label)
    start = explorer.best / 2 if alpha is None else alpha
    slider = w.FloatSlider(value=start, min=0.0, max=explorer.high, step=explorer.high / 300,
                           description="alpha", continuous_update=True, readout_format=".4f")
    slider.observe(lambda change: explorer.update(change["new"]), names="value")
    explorer.update(start)
    return _widget(explorer, [slider], explorer.table, explorer.plot)


def scale_checks(weight: torch.Tensor, channel: int = 0) -> dict:
    """Section 2's checks: the grid minimum of the error of channel ``channel`` against the
    library's scale and the closed form, and per-channel against per-layer scales."""
    from .binary import core
    row = weight[channel].detach().double()
    alphas = torch.linspace(0, 3 * float(row.abs().mean()), 301, dtype=torch.float64)
    errors = scale_errors(row, alphas)
    return {"grid minimum alpha": round(float(alphas[errors.argmin()]), 5),
            "grid step": float(f"{float(alphas[1]):.2e}"),
            "core.ls_scale": round(float(core.ls_scale(weight)[channel].flatten()[0]), 5),
            "grid minimum error": round(float(errors.min()), 5),
            "closed form ||W||^2 - ||W||_1^2/n": round(
                float(row.pow(2).sum() - row.abs().sum() ** 2 / row.numel()), 5),
            "error, scale per channel": round(float((weight - core.binarize(weight, True))
                                                    .pow(2).sum()), 3),
            "error, scale per layer": round(float((weight - core.binarize(weight, False))
                                                  .pow(2).sum()), 3)}


def xnor_k_difference(seed: int = 0) -> float:
    """XNOR-Net's K from ``binary.activations.xnor_scale`` (box filter of the channel mean)
    against the mean |x| over each 3x3 receptive field taken directly: the largest difference,
    on a random 16-channel 8x8 input."""
    from .binary.activations import xnor_scale
    images = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(seed))
    fields = torch.nn.functional.unfold(images.abs(), 3, padding=1)
    return float((xnor_scale(images, 3, 1, 1) - fields.mean(1).view(2, 1, 8, 8)).abs().max())


def sign_sweep(nets: dict, test, base: dict):
    """Section 3: ``binary.sign`` per channel, per layer, and (networks with convolutions)
    ``scope="all"``: (rows with the file ratio and the operations by precision, models)."""
    from torch import nn
    rows, models = [], {}
    for name, net in nets.items():
        dense_bytes = len(codec.encode(net))
        has_conv = any(isinstance(m, nn.Conv2d) for m in net.modules())
        for settings in (dict(per_channel=True), dict(per_channel=False), dict(scope="all")):
            if settings.get("scope") == "all" and not has_conv:
                continue                                      # an MLP has no convolution
            model, row = measured(METHODS["binary.sign"](**settings), net, test,
                                  label=f"{name}: binary.sign")
            models[name, tuple(settings.items())] = model
            rows.append({**row, "float accuracy": base[name].accuracy,
                         "x smaller than float file": round(dense_bytes / row["file bytes"], 1),
                         **precision(model, test)})
    return rows, models


def abc_sweep(net, test, ms=range(1, 6), layer: str = "net.1") -> list[dict]:
    """Section 4: ``binary.abc`` (every layer, no training) at each M: its row, the relative
    error of ``layer`` and its number of distinct values."""
    from .binary import bases
    weight = net.get_submodule(layer).weight.detach()
    rows = []
    for m in ms:
        model, row = measured(METHODS["binary.abc"](M=m, quantize_ends=True, epochs=0), net, test)
        approx = model.get_submodule(layer).weight.detach()
        rows.append({**row, "fc1 relative error": round(bases.relative_error(weight, approx), 4),
                     "fc1 distinct values": len(torch.unique(approx))})
    return rows


def sketch_sweep(weight: torch.Tensor, tensors=range(1, 7)) -> list[dict]:
    """Section 4: the relative error of network sketching, direct and refined, per count."""
    from .binary import bases
    rows = []
    for j in tensors:
        row = {"tensors": j}
        for mode in ("direct", "refined"):
            approx = bases.sketch_filters(weight, j, refined=mode == "refined")[0]
            row[f"{mode}: relative error"] = round(bases.relative_error(weight, approx), 4)
        rows.append(row)
    return rows


def bases_error_plot(sketch_rows: list[dict], abc_rows: list[dict]):
    """Relative error of fc1 against the number of binary tensors: sketching (both modes)
    and ABC-Net, log scale."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2), layout="constrained")
    for mode in ("direct", "refined"):
        ax.plot([r["tensors"] for r in sketch_rows],
                [r[f"{mode}: relative error"] for r in sketch_rows], "o-", label=mode)
    ax.plot(range(1, len(abc_rows) + 1), [r["fc1 relative error"] for r in abc_rows], "s--",
            label="ABC-Net (whole layer)")
    ax.set_yscale("log")
    ax.set_xlabel("binary tensors (bits per weight)")
    ax.set_ylabel("||W - approx|| / ||W||, fc1")
    ax.legend(fontsize=8)
    plt.show()


def optimal_threshold_rows(nets: dict, c: float = 0.7) -> list[dict]:
    """Section 5: each layer's exact optimal TWN threshold as c = delta*/E|W|, the error at
    ``c`` over the optimal error, and the share of zeros at ``c``."""
    from .binary import ternary
    rows = []
    for name, net in nets.items():
        for layer_name, layer in layers_of(net):
            wgt = layer.weight.detach()
            delta, err = ternary.optimal_threshold(wgt)
            mean_abs = wgt.abs().mean()
            rows.append({"layer": f"{name} {layer_name}", "weights": wgt.numel(),
                         "optimal c = delta*/E|W|": round(float(delta / mean_abs), 3),
                         f"error at {c} / optimal error": round(
                             float(ternary.ternary_error(wgt, c * mean_abs) / err), 4),
                         f"zeros at {c} %": round(100 * float((wgt.abs() <= c * mean_abs)
                                                              .float().mean()), 1)})
    return rows


def twn_sweep(net, test, cs) -> list[dict]:
    """Section 5: ``ternary.twn`` without training at each c: accuracy, zeros, file bytes."""
    from .binary import ternary
    rows = []
    for c in cs:
        model, row = measured(METHODS["ternary.twn"](c=c, epochs=0), net, test)
        rows.append({"c": c, "accuracy": row["accuracy"],
                     "zeros": round(ternary.zero_fraction(model), 3),
                     "file bytes": row["file bytes"]})
    return rows


def twn_sweep_plot(rows: list[dict], optimal: list[float], mark: float = 0.7,
                   mark_label: str = "TWN's c = 0.7"):
    """``plots.threshold_sweep`` of a ``twn_sweep`` with the layers' optima, shown."""
    from .plots import threshold_sweep
    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    threshold_sweep(ax, rows, "c", mark=mark, mark_label=mark_label, optimal=optimal)
    ax.set_title("LeNet-300-100, ternary, no training", fontsize=10)
    plt.show()


def trained_sweep(cases, nets: dict, test, train, base: dict, make, epochs: int,
                  own_epochs=("binary.ebp",)):
    """Section 6: each (network, method id, settings) of ``cases`` built by ``make(method_id,
    **settings, epochs=epochs)`` (the methods of ``own_epochs``, EBP trained from scratch,
    keep their own), trained and measured: (rows, models); cases the library cannot run are
    printed and skipped."""
    rows, models = [], {}
    for net_name, method_id, settings in cases:
        if method_id not in METHODS:
            print(f"{method_id}: not in the library yet")
            continue
        method = make(method_id, **settings,
                      **({} if method_id in own_epochs else {"epochs": epochs}))
        if not method.supports(nets[net_name]):
            print(f"{method_id} does not support {net_name}: {method.requires}")
            continue
        label = f"{net_name}: {method_id}" + "".join(f" {k}={v}" for k, v in settings.items())
        model, row = measured(method, nets[net_name], test, train, label=label)
        models[label] = model
        rows.append({"method": label, "accuracy": row["accuracy"],
                     "float accuracy": base[net_name].accuracy, "file bytes": row["file bytes"],
                     "file bits/weight": row["file bits/weight"], **precision(model, test),
                     "seconds": row["seconds"]})
    return rows, models


def speed_sweep(smoke: bool, pairs: int) -> list[dict]:
    """Section 7.2: our numpy XNOR-popcount kernel against torch's float layer (batch 1 and
    64), and OpenVINO's BinaryConvolution against its float Convolution on a 3x3 conv of
    VGG-small (batch 1; and 64 unless ``smoke``), one thread, ``pairs`` timing pairs."""
    from .bench import binary_speed
    rows = []
    for case in binary_speed.numpy_cases(smoke=smoke):
        for batch in (1, 64):
            r = binary_speed.numpy_row(case, batch, pairs=pairs)
            rows.append({"kernel": "numpy xnor-popcount vs torch float",
                         "layer": f"{r['case']} {r['shape']}", "batch": batch,
                         "binary ms": r["numpy_binary_ms"], "float ms": r["torch_float_ms"],
                         "binary vs float": r["display"], "bit-exact": r["exact"]})
    conv = binary_speed.vgg_convs(32)[3]
    for batch in ((1,) if smoke else (1, 64)):
        r = binary_speed.openvino_row(conv, batch, threads=1, pairs=pairs)
        rows.append({"kernel": f"OpenVINO BinaryConvolution ({r['primitive_binary']}) vs "
                               "Convolution", "layer": f"{r['case']} {r['shape']}",
                     "batch": batch, "binary ms": r["binary_ms"], "float ms": r["float_ms"],
                     "binary vs float": r["display"],
                     "bit-exact": r["exact_numpy"] and r["exact_float"]})
    return rows


class XnorExplorer:
    """Lesson 04, section 7.1: two rows of +-1 toggles; each flip recomputes
    ``kernels.xnor_dot_explained`` into the same table."""

    def __init__(self, a, w_signs):
        self.buttons = [[w.ToggleButton(value=int(v) > 0, description="+1" if int(v) > 0 else "-1",
                                        layout=w.Layout(width="3.2em")) for v in vec]
                        for vec in (a, w_signs)]
        self.table, self.trail = w.HTML(), []

    def signs(self) -> tuple[list[int], list[int]]:
        return tuple([1 if b.value else -1 for b in row] for row in self.buttons)

    def update(self):
        from .binary import kernels
        a, w_signs = self.signs()
        for row, vec in zip(self.buttons, (a, w_signs)):
            for b, v in zip(row, vec):
                b.description = f"{v:+d}"
        result = kernels.xnor_dot_explained(torch.tensor(a), torch.tensor(w_signs))
        self.table.value = html_table([result])
        self.trail.append({"a": a, "w": w_signs, **result})


def explore_xnor(a, w_signs):
    """Toggles for the signs of two +-1 vectors: the words, XOR, popcount and K - 2 popcount
    beside the sum of products, updated in place on every flip."""
    explorer = XnorExplorer(a, w_signs)
    for row in explorer.buttons:
        for b in row:
            b.observe(lambda change: explorer.update(), names="value")
    explorer.update()
    rows = [w.HBox([w.Label(name, layout=w.Layout(width="2em")), *row])
            for name, row in zip(("a", "w"), explorer.buttons)]
    return _widget(explorer, [b for row in explorer.buttons for b in row], *rows, explorer.table)


def lesson04_widget(method_id: str, base, test, **settings):
    """Lesson 04's ``explore_binary`` of ``method_id`` with its settings from
    ``bench.widgets.LESSON04`` (what ``bench widgets`` times); ``settings`` (e.g. ``mark``,
    ``mark_label``, a knob's starting value) win over them."""
    from .bench.widgets import LESSON04
    spec = LESSON04[method_id]
    options = {"mark": spec.get("mark"), "mark_label": spec.get("mark_label", ""),
               **spec["fixed"], **settings}
    return explore_binary(METHODS[method_id], base, test, sliders=[spec["knob"]],
                          name="lenet300", **options)


BINARY_QUOTED = {   # id: (published figure, source), from the library's FIELD-NOTES
    "binary.bnn": ("CIFAR-10 11.40% err (MNIST 0.96%, 3x4096 MLP, 1000 epochs)",
                   "authors' code README"),
    "binary.xnor": ("CIFAR-10: BWN 9.88%, XNOR 10.17% err; 58x faster convolutions counted in "
                    "high-precision operations", "XNOR-Net sec. 4.2 and abstract"),
    "ternary.twn": ("VGG-7 CIFAR-10 92.56%", "TWN arXiv v3, Table 2"),
}


def trained_ours(trained_rows: list[dict], epochs: int, lenet5_accuracy: float) -> dict:
    """Section 8: "ours" for the trained methods, from section 6's rows (method label ->
    accuracy and error), "not run" where a row is missing."""
    by_label = {r["method"]: r for r in trained_rows}

    def acc(label):
        r = by_label.get(label)
        return f"{r['accuracy']} ({100 * (1 - r['accuracy']):.2f}% err)" if r else "not run"

    return {
        "binary.connect": f"LeNet-300-100, {epochs} epoch(s): det. {acc('lenet300: binary.connect')}, "
                          f"stoch. {acc('lenet300: binary.connect stochastic=True')}",
        "binary.bnn": f"LeNet-300-100, {epochs} epoch(s): {acc('lenet300: binary.bnn')}",
        "binary.lab": f"LeNet-300-100, {epochs} epoch(s): {acc('lenet300: binary.lab')}",
        "binary.horq": f"LeNet-300-100, order 2: {acc('lenet300: binary.horq order=2')}",
        "binary.ebp": f"LeNet-300-100 shape, from scratch: {acc('lenet300: binary.ebp')}",
        "binary.pattern": f"LeNet-5: {acc('lenet5: binary.pattern')}",
        "binary.lbc": f"LeNet-5: {acc('lenet5: binary.lbc')}",
        "ternary.twn": f"LeNet-5: {acc('lenet5: ternary.twn')}, binary weights "
                       f"{acc('lenet5: binary.connect')}, float {lenet5_accuracy}",
        "ternary.ttq": f"LeNet-300-100: {acc('lenet300: ternary.ttq')}"}


def binary_paper_rows(ours: dict, quoted: dict = BINARY_QUOTED) -> list[dict]:
    """Section 8: every id of the catalogue's binary family, with the catalogue's paper target
    and the ``quoted`` figure (each a row; "-" when neither), beside ``ours[id]``."""
    from . import catalogue
    rows = []
    for e in map(catalogue.by_id, catalogue.family_ids("binary")):
        papers = ([(e.paper_target, "catalogue")] if e.paper_target else []) + \
                 ([quoted[e.id]] if e.id in quoted else [])
        for paper, source in papers or [("-", "no figure in the catalogue")]:
            rows.append({"id": e.id, "reference": e.reference, "paper": paper, "source": source,
                         "ours (this notebook)": ours.get(e.id, "not measured in this lesson")})
    return rows


# ---- lesson 06 widgets
# Issue 16: section 2's loss weighting and section 5.2's FSP stages as widgets updated in
# place, and the lesson's longer cells (Hinton's table, the hint figure, the restoring arms,
# paper vs ours) as functions, so that the notebook narrates.

@torch.no_grad()
def kd_logits(teacher, data, images: int = 256, width: int = 800, seed: int = 0):
    """Section 2's inputs: (teacher logits, student logits, labels) of the first ``images``
    images of ``data``; the student a fresh, untrained 2 x ``width`` MLP (seeded)."""
    from .distill.base import build_student
    from .train import seeded
    x = data.normalize(data.images[:images])
    with seeded(seed):
        teacher_logits = teacher.eval()(x)
        student_logits = build_student("mlp", width, 2, tuple(x.shape[1:]))(x)
    return teacher_logits, student_logits, data.labels[:images]


def kd_terms(student_logits, teacher_logits, labels, temperature: float) -> dict:
    """The two terms of the KD loss at ``temperature``, by autograd on the student's logits:
    the soft-target loss ``kd_loss`` (T^2 x KL) and the KL alone, the norms of their gradients,
    and the norm of the hard-label cross-entropy's gradient (at T = 1, whatever T is)."""
    from .distill.losses import kd_loss
    z = student_logits.detach().clone().requires_grad_(True)
    with_t2 = kd_loss(z, teacher_logits, temperature)
    (grad,) = torch.autograd.grad(with_t2, z)
    z = student_logits.detach().clone().requires_grad_(True)
    (hard,) = torch.autograd.grad(torch.nn.functional.cross_entropy(z, labels), z)
    t2 = temperature * temperature
    return {"T": temperature, "KL": with_t2.item() / t2, "T^2 x KL": with_t2.item(),
            "grad KL": grad.norm().item() / t2, "grad T^2 x KL": grad.norm().item(),
            "grad hard": hard.norm().item()}


def soft_share(soft: float, hard: float, weight: float) -> float:
    """The soft term's part of the push: weight |g_soft| / (weight |g_soft| + (1 - weight)
    |g_hard|), gradient norms of the two terms of the KD loss."""
    total = weight * soft + (1 - weight) * hard
    return weight * soft / total if total else 0.0


def kd_gradient_rows(student_logits, teacher_logits, temperatures) -> list[dict]:
    """Section 2's table: the norm of d loss / d student logits without and with T^2 at each
    T, and whether autograd's gradient of the KL term equals the hand formula (q - p) / T / B."""
    from .distill.losses import kd_loss, soft_targets
    rows = []
    for t in temperatures:
        z = student_logits.detach().clone().requires_grad_(True)
        (with_t2,) = torch.autograd.grad(kd_loss(z, teacher_logits, t), z)
        z = student_logits.detach().clone().requires_grad_(True)
        (without,) = torch.autograd.grad(kd_loss(z, teacher_logits, t) / t ** 2, z)
        by_hand = (soft_targets(student_logits, t) - soft_targets(teacher_logits, t)) / t / len(z)
        rows.append({"T": t, "gradient norm, no T^2": f"{without.norm().item():.3e}",
                     "gradient norm, with T^2": f"{with_t2.norm().item():.3e}",
                     "autograd = (q - p) / T": torch.allclose(without, by_hand, atol=1e-9)})
    return rows


class KDWeightExplorer:
    """The state behind ``explore_kd_weighting``: the KD loss's terms on fixed logits over a
    grid of T (computed once), one figure of three panels drawn once (the loss, its gradient,
    the soft term's share of the push at the soft share ``weight``) whose markers and share
    curves move, and a table of the figures at the chosen T and weight. ``trail`` keeps
    every point shown."""

    def __init__(self, teacher_logits, student_logits, labels, mark: float | None = None,
                 mark_label: str = "", low: float = 1.0, high: float = 100.0):
        self.t_logits, self.s_logits, self.labels = teacher_logits, student_logits, labels
        self.grid = np.geomspace(low, high, 61)
        self.curve = [kd_terms(student_logits, teacher_logits, labels, t) for t in self.grid]
        self.trail: list[dict] = []
        self.fig, (loss_ax, grad_ax, self.share_ax) = plt.subplots(
            1, 3, figsize=(12, 3.4), layout="constrained")
        plt.close(self.fig)
        c = {k: [r[k] for r in self.curve] for k in self.curve[0]}
        loss_ax.loglog(self.grid, c["KL"], color="C0", label="KL alone")
        loss_ax.loglog(self.grid, c["T^2 x KL"], color="C1", label="T^2 x KL (kd_loss)")
        loss_ax.set_ylabel("soft-target loss (batch mean)")
        grad_ax.loglog(self.grid, c["grad KL"], color="C0", label="KL alone")
        grad_ax.loglog(self.grid, c["grad T^2 x KL"], color="C1", label="T^2 x KL (kd_loss)")
        grad_ax.loglog(self.grid, c["grad KL"][-1] * (high / self.grid) ** 2, "k:", lw=0.8,
                       label="slope 1/T^2")
        grad_ax.axhline(c["grad hard"][0], color="0.5", ls="--", lw=1, label="hard labels (CE)")
        grad_ax.set_ylabel("norm of d loss / d student logits")
        grad_ax.set_ylim(min(c["grad KL"]) / 2, 2 * max(c["grad T^2 x KL"] + c["grad hard"]))
        (self.share_without,) = self.share_ax.semilogx(self.grid, self.grid * 0, color="C0",
                                                       label="KL alone")
        (self.share_with,) = self.share_ax.semilogx(self.grid, self.grid * 0, color="C1",
                                                    label="T^2 x KL (kd_loss)")
        self.weight_line = self.share_ax.axhline(0, color="0.5", ls="--", lw=1,
                                                 label="the soft share asked for")
        self.share_ax.set_ylim(0, 1)
        self.share_ax.set_ylabel("soft term's share of the push")
        self.markers = []
        for ax, keys in ((loss_ax, ("KL", "T^2 x KL")), (grad_ax, ("grad KL", "grad T^2 x KL")),
                         (self.share_ax, ("without", "with"))):
            if mark is not None:
                ax.axvline(mark, color="k", ls=":", lw=1.2,
                           label=mark_label or f"T = {mark:g}")
            (marker,) = ax.plot([], [], "o", color="C3", ms=6, label="this T")
            self.markers.append((marker, keys))
            ax.set_xlabel("temperature T")
            ax.legend(fontsize=7)
        self.share_ax.set_title(" ", fontsize=9)
        self.fig.draw_without_rendering()
        self.fig.set_layout_engine("none")
        self.table, self.plot = w.HTML(), figure_image(self.fig)
        self.table.add_class("wb-table")
        self._weight = None

    def update(self, temperature: float, weight: float):
        point = kd_terms(self.s_logits, self.t_logits, self.labels, temperature)
        point["weight"] = weight
        point["without"] = soft_share(point["grad KL"], point["grad hard"], weight)
        point["with"] = soft_share(point["grad T^2 x KL"], point["grad hard"], weight)
        if weight != self._weight:          # the share curves depend on the weight only
            self.share_without.set_ydata([soft_share(r["grad KL"], r["grad hard"], weight)
                                          for r in self.curve])
            self.share_with.set_ydata([soft_share(r["grad T^2 x KL"], r["grad hard"], weight)
                                       for r in self.curve])
            self.weight_line.set_ydata([weight, weight])
            self._weight = weight
        for marker, keys in self.markers:
            marker.set_data([temperature] * 2, [point[k] for k in keys])
        self.share_ax.set_title(f"soft share {weight:.2f}, T = {temperature:.3g}: "
                                f"{100 * point['with']:.0f}% with T^2, "
                                f"{100 * point['without']:.0f}% without", fontsize=9)
        self.table.value = html_table([{
            "T": round(temperature, 3), "KL": f"{point['KL']:.3e}",
            "T^2 x KL (kd_loss)": f"{point['T^2 x KL']:.3e}",
            "|grad| KL": f"{point['grad KL']:.3e}", "|grad| T^2 x KL": f"{point['grad T^2 x KL']:.3e}",
            "|grad| hard CE": f"{point['grad hard']:.3e}",
            "soft share of the push, no T^2": round(point["without"], 3),
            "with T^2": round(point["with"], 3)}])
        self.trail.append(point)
        self.plot.value = png_of(self.fig)


def explore_kd_weighting(teacher_logits, student_logits, labels, mark: float | None = None,
                         mark_label: str = "", weight: float = 0.5, temperature: float = 1.0,
                         low: float = 1.0, high: float = 100.0):
    """Sliders T (log scale) and the soft share ``weight`` of the KD loss (1 - weight) CE +
    weight T^2 KL, on fixed logits: the soft-target loss and its gradient against T with and
    without T^2, and the soft term's share of the push, redrawn in place while dragging (no
    forward pass per move). ``mark``: the paper's T. The widget has ``.explorer``."""
    explorer = KDWeightExplorer(teacher_logits, student_logits, labels, mark, mark_label,
                                low, high)
    t_slider = w.FloatLogSlider(value=temperature, base=10, min=np.log10(low),
                                max=np.log10(high), step=0.01, description="T",
                                continuous_update=True, readout_format=".3g")
    w_slider = w.FloatSlider(value=weight, min=0.0, max=1.0, step=0.05,
                             description="soft share", continuous_update=True)
    for slider in (t_slider, w_slider):
        slider.observe(lambda change: explorer.update(t_slider.value, w_slider.value),
                       names="value")
    explorer.update(temperature, weight)
    widget = w.VBox([w.HBox([t_slider, w_slider]), explorer.table, explorer.plot])
    widget.add_class("wb-explore")
    widget.explorer, widget.kwargs_widgets = explorer, [t_slider, w_slider]
    return widget


class FSPExplorer:
    """The state behind ``explore_fsp``: every network's FSP matrices per stage and image
    (computed once, on ``images`` test images), a stage menu and an image slider, and one
    figure (the image, the teacher's matrix, each student's) redrawn in place."""

    def __init__(self, method, teacher, students: dict, data, images: int = 16):
        from .distill.hints import fsp_matrices
        self.data = data.subset(min(images, len(data)), seed=0)
        x = self.data.tensors()[0]
        first = next(iter(students.values()))
        self.stages, s_stages = method.stages(first, teacher, data.shape)
        with torch.no_grad():
            self.matrices = {"teacher": fsp_matrices(teacher.eval(), self.stages, x)}
            for label, student in students.items():
                self.matrices[label] = fsp_matrices(student.eval(), s_stages, x)
        self.students = list(students)
        self.trail: list[dict] = []
        panels = 1 + len(self.matrices)
        self.fig, self.axes = plt.subplots(1, panels, figsize=(3 * panels, 3.2),
                                           width_ratios=(0.8, *[1] * (panels - 1)))
        plt.close(self.fig)
        self.fig.subplots_adjust(left=0.03, right=0.98, bottom=0.12, top=0.82, wspace=0.3)
        self.table, self.plot = w.HTML(), figure_image(self.fig)
        self.table.add_class("wb-table")

    def distance(self, label: str, stage: int, image: int | None = None) -> float:
        """||G_teacher - G_label||_F^2 at ``stage``: for one image, or the mean over all
        (the method's ``fsp_loss`` of that stage)."""
        d = (self.matrices[label][stage] - self.matrices["teacher"][stage]).pow(2).sum((1, 2))
        return float(d.mean() if image is None else d[image])

    def update(self, stage: int, image: int):
        picture, *axes = self.axes
        picture.clear()
        picture.imshow(_image_of(self.data, image), cmap="gray")
        picture.set_title(f"test image {image}, label {int(self.data.labels[image])}", fontsize=8)
        picture.axis("off")
        shown = {label: m[stage][image].numpy() for label, m in self.matrices.items()}
        limit = max(float(np.abs(m).max()) for m in shown.values()) or 1.0
        for ax, (label, matrix) in zip(axes, shown.items()):
            ax.clear()
            ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest",
                      aspect="auto")
            ax.set_title(label if label == "teacher" else
                         f"{label}\n|G_t - G|^2 = {self.distance(label, stage, image):.3g}",
                         fontsize=8)
            ax.set_xlabel("output channel", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[0].set_ylabel(f"input channel of {self.stages[stage]}", fontsize=7)
        self.fig.suptitle(f"{self.stages[stage]}: {matrix.shape[0]} x {matrix.shape[1]} FSP "
                          f"matrices of this image, colours from -{limit:.3g} to {limit:.3g}",
                          fontsize=9)
        rows = [{"student": label, "stage": self.stages[stage],
                 "FSP distance, this image": round(self.distance(label, stage, image), 4),
                 f"mean over the {len(self.data)} images": round(self.distance(label, stage), 4)}
                for label in self.students]
        self.table.value = html_table(rows)
        self.trail.append({"stage": stage, "image": image, "rows": rows})
        self.plot.value = png_of(self.fig)


def explore_fsp(method, teacher, students: dict, data, images: int = 16):
    """FSP matrices (``distill.fsp``'s stage pairs) of the teacher and of ``students`` (label
    -> network of the method's student architecture) for one test image and one stage, chosen
    by a menu and a slider; the matrices are computed once, a move only redraws. The widget
    has ``.explorer``."""
    explorer = FSPExplorer(method, teacher, students, data, images)
    stage = w.Dropdown(options=[(name, i) for i, name in enumerate(explorer.stages)], value=0,
                       description="stage")
    image = w.IntSlider(value=0, min=0, max=len(explorer.data) - 1, description="image",
                        continuous_update=True)
    for control in (stage, image):
        control.observe(lambda change: explorer.update(stage.value, image.value),
                        names="value")
    explorer.update(0, 0)
    widget = w.VBox([w.HBox([stage, image]), explorer.table, explorer.plot])
    widget.add_class("wb-explore")
    widget.explorer, widget.kwargs_widgets = explorer, [stage, image]
    return widget


def hinton_errors(teacher, pair: dict, test) -> dict:
    """Section 3: test errors of the teacher and of ``student_pair``'s two students
    (accuracies on ``test``), as counts out of ``len(test)``."""
    from .bench.distillation_kd import errors
    return {"teacher": errors(teacher, test),
            **{k: round((1 - pair[k]) * len(test)) for k in ("alone", "kd")}}


def hinton_rows(ours: dict, images: int, soft_weight: float) -> list[dict]:
    """Section 3's table: Hinton et al.'s test errors on MNIST's 10,000 images as error rates
    (the library's ``bench.distillation_kd.PAPER_MNIST``) beside ours (``hinton_errors``) on
    ``images`` test images, in the same unit."""
    from .bench.distillation_kd import PAPER_MNIST
    from .papers import MNIST_TEST_IMAGES
    names = {"teacher": "teacher 784-1200-1200-10 (dropout, jittered)",
             "alone": "student 784-800-800-10 alone",
             "kd": f"student with KD (T = 20, soft share {soft_weight})"}
    return [{"network": names[k], "our errors": f"{ours[k]} of {images:,}",
             "our error %": round(100 * ours[k] / images, 2),
             "paper errors": f"{PAPER_MNIST[k]} of {MNIST_TEST_IMAGES:,}",
             "paper error %": round(100 * PAPER_MNIST[k] / MNIST_TEST_IMAGES, 2)}
            for k in names]


def hinton_summary(ours: dict, images: int) -> str:
    """The share of the student's errors KD removed, ours and the paper's."""
    from .bench.distillation_kd import PAPER_MNIST
    removed = 1 - ours["kd"] / max(ours["alone"], 1)
    paper = 1 - PAPER_MNIST["kd"] / PAPER_MNIST["alone"]
    done = (f"removed {100 * removed:.0f}% of" if removed >= 0
            else f"added {-100 * removed:.0f}% to")
    return (f"errors out of {images:,} test images; KD {done} the student's errors (paper: "
            f"removed {100 * paper:.0f}%; issue 12's target: 25% or more)")


def hint_figure(teacher, stages: dict, data, index: int):
    """Section 5.1's figure: six channels of the teacher's hint for image ``index`` and the
    regressed guided layer of each ``hint_stage`` result in ``stages`` (label -> stage)."""
    from .plots import hint_maps
    maps = {}
    for label, stage in stages.items():
        hint, maps[label] = hint_pair(teacher, stage, data, index)
    fig, axes = plt.subplots(1 + len(stages), 6, figsize=(10, 5), layout="constrained")
    hint_maps(axes, {"teacher's hint": hint, **maps})
    return fig


def hint_loss_rows(teacher, stages: dict, test) -> list[dict]:
    """The hint loss (``distill.hints.hint_error``) of each ``hint_stage`` result on ``test``."""
    from .distill.hints import hint_error
    return [{"student": label, "hint loss on the test images": round(hint_error(
                s["student"], teacher, s["regressor"], s["guided"], s["hint"], test), 4)}
            for label, s in stages.items()]


def restore_comparison(steps_of, base, test, train, teacher: str) -> list[dict]:
    """Section 6: ``pipeline.hybrid`` with ``steps_of(None)`` (labels only) and
    ``steps_of(teacher)`` (every retraining with the teacher), each applied to ``base`` and
    measured on ``test``, then the dense ``base`` itself."""
    hybrid = METHODS["pipeline.hybrid"]
    rows = []
    for label, kd in (("labels only", None), (f"with the dense {teacher} as teacher", teacher)):
        _, row = measured(hybrid(steps=steps_of(kd)), base, test, data=train, label=label)
        rows.append({"retraining": label, "accuracy": row["accuracy"],
                     "error %": round(100 * (1 - row["accuracy"]), 2),
                     "file bytes": row["file bytes"], "seconds": row["seconds"]})
    accuracy = evaluate(base, test)
    rows.append({"retraining": f"dense {teacher} (the start)", "accuracy": round(accuracy, 4),
                 "error %": round(100 * (1 - accuracy), 2), "file bytes": len(codec.encode(base))})
    return rows


def distill_paper_rows(hinton: dict, images: int, fitnets: dict, fsp: list[dict],
                       restore: list[dict], settings: dict, quoted: dict) -> list[dict]:
    """Section 7: the papers' figures beside ours. Hinton et al.'s from
    ``bench.distillation_kd.PAPER_MNIST``, Romero et al.'s MNIST steps from ``papers.FACTS``,
    the others from the lesson's own quotes, ``quoted["fitnets teacher"]`` (text) and
    ``quoted["CIFAR-10 FitNet1"]`` (text, source); ``hinton``: our
    errors (``hinton_errors``), ``fitnets``: label -> our error %, ``fsp`` and ``restore``:
    the rows of sections 5.2 and 6, ``settings``: id -> how ours were trained."""
    from .bench.distillation_kd import PAPER_MNIST, PAPER_SOURCE
    from .papers import MNIST_TEST_IMAGES, facts
    fit = {f.label: f for f in facts("distill.fitnets")}
    pct = lambda n, of: f"{100 * n / of:.2f}%"      # noqa: E731
    rows = [
        {"id": "distill.kd", "experiment": "MNIST 784-800-800-10 student, alone -> KD (T = 20)",
         "paper": f"{pct(PAPER_MNIST['alone'], MNIST_TEST_IMAGES)} -> "
                  f"{pct(PAPER_MNIST['kd'], MNIST_TEST_IMAGES)} error (teacher "
                  f"{pct(PAPER_MNIST['teacher'], MNIST_TEST_IMAGES)}; "
                  f"{PAPER_MNIST['alone']} -> {PAPER_MNIST['kd']} errors of {MNIST_TEST_IMAGES:,})",
         "source": PAPER_SOURCE,
         "ours": f"{pct(hinton['alone'], images)} -> {pct(hinton['kd'], images)} (teacher "
                 f"{pct(hinton['teacher'], images)}; {hinton['alone']} -> {hinton['kd']} errors "
                 f"of {images:,}), {settings['distill.kd']}"},
        {"id": "distill.fitnets", "experiment": "MNIST ~30K-parameter student, alone -> KD -> hints",
         "paper": f"{fit['KD'].baseline:.2f}% -> {fit['KD'].value:.2f}% -> {fit['hints'].value:.2f}%"
                  f" error ({quoted['fitnets teacher']})", "source": fit["hints"].source,
         "ours": f"{fitnets['alone']}% -> {fitnets['KD']}% -> {fitnets['hints + KD']}% "
                 f"(LeNet-5 teacher, {settings['distill.fitnets']})"},
        {"id": "distill.fitnets", "experiment": "CIFAR-10 FitNet1",
         "paper": quoted["CIFAR-10 FitNet1"][0], "source": quoted["CIFAR-10 FitNet1"][1],
         "ours": "not run (needs a wider teacher)"},
        {"id": "distill.fsp", "experiment": "CIFAR-10 ResNet-8 student of ResNet-20",
         "paper": "-", "source": "not checked at the source: none printed",
         "ours": " / ".join(f"{r['student (ResNet-8, widths 16-32-64)']}: {r['accuracy']}"
                            for r in fsp)},
        {"id": "kd_teacher", "experiment": "LeNet-5 pruned 95% + 2-bit shared weights",
         "paper": "-", "source": "no published figure (issue 12's own comparison)",
         "ours": " / ".join(f"{r['retraining']}: {r['error %']}%" for r in restore[:2])}]
    return rows


# ------------------------------------------------------------------ lesson 07: architectures

def layer_kind(module) -> str:
    """What kind of layer a Conv2d / Linear is, as lesson 07 sorts them: "linear", "1x1",
    "3x3" (any full k x k), "3x3 depthwise" (one filter per channel), "1x1 grouped" ..."""
    if isinstance(module, torch.nn.Linear):
        return "linear"
    kernel = "x".join(map(str, module.kernel_size))
    if module.groups > 1 and module.groups == module.in_channels:
        return f"{kernel} depthwise"
    return f"{kernel} grouped" if module.groups > 1 else kernel


def where_macs_go(networks: dict) -> list[dict]:
    """Per network (name -> built model with ``input_shape``) and kind of layer (``layer_kind``):
    the layers' weights and MACs per image as ``measure.layer_table`` counts them, with their
    share of the network's MACs and weights."""
    from .measure import layer_table
    out = []
    for name, model in networks.items():
        table = layer_table(model, tuple(model.input_shape))
        total_macs, total_params = sum(r["macs"] for r in table), sum(r["params"] for r in table)
        kinds: dict[str, list] = {}
        for r in table:
            kinds.setdefault(layer_kind(model.get_submodule(r["layer"])), []).append(r)
        for kind, rows in sorted(kinds.items(), key=lambda kv: -sum(r["macs"] for r in kv[1])):
            macs, params = sum(r["macs"] for r in rows), sum(r["params"] for r in rows)
            out.append({"network": name, "layers": f"{len(rows)} x {kind}", "weights": params,
                        "% of weights": round(100 * params / total_params, 1), "MACs": macs,
                        "% of MACs": round(100 * macs / total_macs, 1)})
    return out


@torch.no_grad()
def output_sizes(model, names) -> dict[str, tuple[int, int]]:
    """(height, width) of the output of each named module on one zero image of
    ``model.input_shape``."""
    from .hooks import probe
    sizes = {}
    probe(model, tuple(model.input_shape),
          {n: lambda m, i, out, name: sizes.__setitem__(name, tuple(out.shape[-2:]))
           for n in names})
    return sizes


def separable_blocks(model) -> list[tuple[str, str]]:
    """(depthwise, pointwise) layer names of every depthwise conv followed by a 1x1 conv in
    ``model`` (MobileNet's blocks, in order)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    return [(a, b) for (a, ma), (b, mb) in zip(convs, convs[1:])
            if layer_kind(ma).endswith("depthwise") and layer_kind(mb) == "1x1"]


def separable_table(model) -> list[dict]:
    """Each depthwise separable block of ``model``: its widths and output map, the MACs
    ``measure.layer_table`` counts for its two layers, the formula h*w*c_in*(k*k + c_out), a
    full k x k convolution's h*w*c_in*c_out*k*k, and their ratio beside 1/c_out + 1/k^2."""
    from .measure import layer_table
    counted = {r["layer"]: r["macs"] for r in layer_table(model, tuple(model.input_shape))}
    pairs = separable_blocks(model)
    sizes = output_sizes(model, [dw for dw, _ in pairs])
    rows = []
    for dw, pw in pairs:
        conv, point = model.get_submodule(dw), model.get_submodule(pw)
        (h, w), k, c_in, c_out = sizes[dw], conv.kernel_size[0], conv.in_channels, \
            point.out_channels
        standard = h * w * c_in * c_out * k * k
        library = counted[dw] + counted[pw]
        rows.append({"block": dw.rsplit(".", 1)[0], "c_in -> c_out": f"{c_in} -> {c_out}",
                     "stride": conv.stride[0], "map": f"{h}x{w}",
                     "depthwise MACs": counted[dw], "pointwise MACs": counted[pw],
                     "h w c_in (k^2 + c_out)": h * w * c_in * (k * k + c_out),
                     "formula = counted": h * w * c_in * (k * k + c_out) == library,
                     "full conv MACs": standard, "separable / full": round(library / standard, 4),
                     "1/c_out + 1/k^2": round(1 / c_out + 1 / k ** 2, 4)})
    return rows


def fire_table(model) -> list[dict]:
    """Each Fire module of a SqueezeNet: its widths, the weights of its three convolutions
    (``measure.layer_table``), and those of one full 3x3 convolution with the same input and
    output widths, which the module replaces."""
    from .measure import layer_table
    from .models.squeeze import Fire
    params = {r["layer"]: r["params"] for r in layer_table(model, tuple(model.input_shape))}
    rows = []
    for name, fire in model.named_modules():
        if not isinstance(fire, Fire):
            continue
        squeeze = fire.squeeze[0]
        e1 = fire.expand1[0].out_channels if fire.expand1 is not None else 0
        e3 = fire.expand3[0].out_channels if fire.expand3 is not None else 0
        weights = sum(v for k, v in params.items() if k.startswith(name + "."))
        full = squeeze.in_channels * (e1 + e3) * 9
        rows.append({"module": name, "c_in": squeeze.in_channels,
                     "squeeze s": squeeze.out_channels, "expand e1 (1x1)": e1,
                     "expand e3 (3x3)": e3, "conv weights": weights,
                     "full 3x3 conv c_in -> e1+e3": full, "x fewer": round(full / weights, 1)})
    return rows


def _has_checkpoint(name: str, knobs: dict) -> dict | None:
    """The zoo's manifest entry of ``name`` when ``knobs`` are those its checkpoint was trained
    at (the constructor's defaults), else None."""
    from .arch.networks import _same, zoo_defaults
    from .zoo import manifest
    defaults = zoo_defaults(name)
    if any(not _same(v, defaults.get(k)) for k, v in knobs.items()):
        return None
    return manifest().get(name)


def accuracy_note(name: str, knobs: dict) -> str:
    """The test accuracy of the zoo's checkpoint at ``knobs``, or why there is none."""
    entry = _has_checkpoint(name, knobs)
    if entry is not None:
        return f"{100 * entry['test_acc']:.2f}% (zoo checkpoint, full test set)"
    from .arch.networks import _same, zoo_defaults
    defaults = zoo_defaults(name)
    changed = {k: v for k, v in knobs.items() if not _same(v, defaults.get(k))}
    if not changed:
        return f"not trained yet: python -m workbench zoo train {name}"
    trained_at = ", ".join(f"{k}={defaults[k]}" for k in changed)
    return f"not trained (the zoo has {name} only at {trained_at})"


def architecture_figures(name: str, knobs: dict, min_run_time: float = 0.05) -> dict:
    """Params, MACs (``measure.layer_table``, what ``report`` sums) and measured time per image
    (``timing.time_model``, batch 1, one thread, warm) of ``models.build(name, **knobs)``, with
    the accuracy of a committed checkpoint at those knobs (``accuracy_note``). No training."""
    from .measure import layer_table
    from .models import build
    from .timing import time_model
    model = build(name, **knobs).eval()
    shape = tuple(model.input_shape)
    macs = sum(r["macs"] for r in layer_table(model, shape))
    timed = time_model(model, shape, batch=1, threads=1, min_run_time=min_run_time, warmup=2)
    return {**knobs, "params": sum(p.numel() for p in model.parameters()), "MACs": macs,
            "ms (batch 1, 1 thread)": round(timed.median_ms, 3),
            "IQR ms": round(timed.iqr_ms, 3), "accuracy": accuracy_note(name, knobs)}


class ArchitectureExplorer(Explorer):
    """The state behind ``explore_architecture``: one zoo network rebuilt at the sliders'
    knobs on every move (never trained), its figures in a table, and one figure redrawn in
    place: MACs and params against the first knob, measured time against MACs, over the points
    visited. Moves are computed in a background thread (``Explorer.request``)."""

    def __init__(self, name: str, fixed: dict | None = None, min_run_time: float = 0.05):
        import threading

        from matplotlib.figure import Figure
        self.name, self.fixed, self.min_run_time = name, dict(fixed or {}), min_run_time
        self.trail, self.seconds = [], []
        self.fig = Figure(figsize=self.figsize, dpi=self.dpi)
        self.table, self.ratios, self.plot = w.HTML(), w.HTML(), figure_image(self.fig)
        self.table.add_class("wb-table")
        self._lock, self._pending, self._worker, self.error = threading.Lock(), None, None, None

    def compute(self, **values) -> dict:
        row = architecture_figures(self.name, {**self.fixed, **values}, self.min_run_time)
        self.trail.append(row)
        return row

    def draw(self, left, right, knob: str):
        """Left: MACs and params against ``knob`` at the other knobs' current values; right:
        time against MACs of every setting visited (its last measurement)."""
        points = {}
        for r in self.trail:
            points[tuple(str(r[k]) for k in self.knob_names)] = r
        now = self.trail[-1]
        rows = sorted((r for r in points.values()
                       if all(r[k] == now[k] for k in self.knob_names if k != knob)),
                      key=lambda r: r[knob])
        left.plot([r[knob] for r in rows], [r["MACs"] / 1e6 for r in rows], "o-", ms=3,
                  label="MACs (millions)")
        left.plot([r[knob] for r in rows], [r["params"] / 1e6 for r in rows], "s--", ms=3,
                  label="params (millions)")
        left.set_xlabel(knob)
        left.set_yscale("log")
        left.legend(fontsize=8)
        right.plot([r["MACs"] / 1e6 for r in points.values()],
                   [r["ms (batch 1, 1 thread)"] for r in points.values()], "o", ms=4)
        right.plot([now["MACs"] / 1e6], [now["ms (batch 1, 1 thread)"]], "o", color="C3", ms=7)
        right.set_xlabel("MACs per image (millions)")
        right.set_ylabel("ms per image (batch 1, 1 thread)")
        right.set_title(f"{self.name}: points visited (red: now)", fontsize=9)

    def update(self, **values):
        from html import escape

        from .widgets import scrolled
        start = time.perf_counter()
        self.knob_names = list(values)
        last = self.trail[-1] if self.trail else {}
        moved = [k for k in values if k in last and last[k] != values[k]]
        self.knob = moved[0] if moved else getattr(self, "knob", next(iter(values)))
        row = self.compute(**values)
        self.table.value = scrolled(html_table([row]))
        self.ratios.value = scrolled(f"<b>accuracy</b>: {escape(row['accuracy'])}")
        self.fig.clear()
        self.draw(*self.fig.subplots(1, 2, gridspec_kw=self.margins), self.knob)
        self.plot.value = png_of(self.fig)
        self.seconds.append(time.perf_counter() - start)


def explore_architecture(name: str, sliders=None, values: dict | None = None,
                         min_run_time: float = 0.05, **fixed):
    """Sliders over a zoo network's knobs (``sliders``: knob names, ranges from its
    ``arch.*`` method's declared ``sliders``; or a dict knob -> list of allowed values), and
    its params, MACs and measured latency updated on every move, with accuracy only where a
    committed checkpoint exists at those knobs (no training). ``values`` sets the sliders'
    starting values; ``fixed`` other constructor knobs. The widget has ``.explorer``."""
    from .arch.networks import METHODS as ARCH
    from .widgets import ExploreWidget
    method = next(m for m in ARCH if m.network == name)
    if isinstance(sliders, dict):
        controls = {k: w.SelectionSlider(options=list(v), description=k) for k, v in
                    sliders.items()}
    else:
        controls = sliders_for(method, sliders, continuous=True)
    for knob, value in (values or {}).items():
        controls[knob].value = value
    explorer = ArchitectureExplorer(name, fixed, min_run_time)
    widget = ExploreWidget(explorer, controls)
    explorer.update(**widget.values())
    return widget


def zoo_rows(min_run_time: float = 0.3, warmup: int = 5) -> list[dict]:
    """The zoo's trained CIFAR-10 networks (``zoo.manifest()``) with accuracy (the manifest's,
    full test set), params, MACs (``measure.report``), time per batch of 1 and of 64 on one
    thread (``timing.time_model``) and nanoseconds per MAC at batch 64; whether each compact one
    dominates ``vgg_small`` or ``resnet20`` (``bench.architectures_zoo.dominated``)."""
    from .bench.architectures_zoo import REFERENCES, cifar_networks, dominated
    from .timing import time_model
    from .zoo import manifest, pretrained
    entries, rows = manifest(), []
    for name in [n for n in cifar_networks() if n in entries]:
        model = pretrained(name)
        r = report(model, latency=False)
        row = {"model": name, "accuracy": entries[name]["test_acc"], "params": r.params,
               "macs": r.macs, "bytes": r.bytes}
        for batch in (1, 64):
            t = time_model(model, tuple(model.input_shape), batch=batch, threads=1,
                           min_run_time=min_run_time, warmup=warmup)
            row[f"ms_b{batch}_t1"] = round(t.median_ms, 3)
        row["ns_per_mac_b64_t1"] = round(row["ms_b64_t1"] * 1e6 / (64 * r.macs), 3)
        rows.append(row)
    refs = [r for r in rows if r["model"] in REFERENCES]
    for r in rows:
        r["dominates"] = "(reference)" if r in refs else ", ".join(dominated(r, refs)) or "-"
    return rows


def missing_networks() -> list[dict]:
    """The zoo's CIFAR-10 networks without a checkpoint yet, with the command that trains
    each."""
    from .bench.architectures_zoo import cifar_networks
    from .zoo import manifest
    entries = manifest()
    return [{"network": n, "status": f"not trained yet: python -m workbench zoo train {n}"}
            for n in cifar_networks() if n not in entries]


def pareto_front(rows: list[dict], cost: str) -> list[dict]:
    """The rows no other row beats: none with at least the accuracy at a lower ``cost``
    (sorted by ``cost``)."""
    front, best = [], -1.0
    for r in sorted(rows, key=lambda r: (r[cost], -r["accuracy"])):
        if r["accuracy"] > best:
            front.append(r)
            best = r["accuracy"]
    return front


def pareto_panels(axes, rows: list[dict], references=("vgg_small", "resnet20")) -> None:
    """Test accuracy against params (left) and MACs (right), log axes, each network named,
    the references as squares, the Pareto front of each panel as a line."""
    for ax, cost, label in zip(axes, ("params", "macs"), ("parameters", "MACs per image")):
        for r in rows:
            ref = r["model"] in references
            ax.plot(r[cost], 100 * r["accuracy"], "s" if ref else "o",
                    color="0.3" if ref else "C0", ms=6)
            ax.annotate(r["model"], (r[cost], 100 * r["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = pareto_front(rows, cost)
        ax.plot([r[cost] for r in front], [100 * r["accuracy"] for r in front], "-",
                color="C1", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)


def paper_claims(rows: list[dict]) -> list[dict]:
    """One row per section-F method: the paper (catalogue), what it reports on (the zoo's
    TARGETS), the published figure the library holds (``papers``: none for these, said so),
    and our CIFAR-10 figures from ``rows`` (``zoo_rows``), or that it is not trained yet."""
    from . import catalogue, papers
    from .arch.networks import METHODS as ARCH
    from .zoo import TARGETS
    ours = {r["model"]: r for r in rows}
    out = []
    for method in ARCH:
        entry, name = catalogue.by_id(method.id), method.network
        fact = papers.pick(method.id, name)
        r = ours.get(name)
        out.append({"id": method.id, "paper": entry.reference,
                    "what the paper reports on": TARGETS[name]["paper"],
                    "paper's figure (workbench.papers)": papers.paper_text(fact) if fact
                    else papers.no_figure(method.id),
                    "ours (CIFAR-10)": "not trained yet" if r is None else
                    f"{100 * r['accuracy']:.2f}%, {r['params'] / 1e3:.0f}k params, "
                    f"{r['macs'] / 1e6:.1f}M MACs, {r['ms_b1_t1']:.1f} ms/image"})
    return out


def guideline_rows(size: int, pairs: int) -> list[dict]:
    """ShuffleNet v2's four guidelines, each measured by ``bench.architectures_guidelines`` at
    its smaller scale on ``size`` x ``size`` maps, one thread, ``pairs`` interleaved pairs:
    the variants' MACs and memory access cost relative to the recommended one, their time, and
    how much slower than the recommended variant each ran (the paper's ratios: the bench)."""
    from .bench import architectures_guidelines as G
    keep = ("guideline", "variant", "first_convs", "macs_vs_rec", "memory_access_vs_rec",
            "time_ms", "display")
    out = []
    for guideline, scales in G.SCALES.items():
        out += [{k: r[k] for k in keep}
                for r in G.scale_rows(guideline, scales[0], threads=1, pairs=pairs, size=size)]
    return out
