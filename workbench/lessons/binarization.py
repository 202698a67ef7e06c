"""Lesson 04: binary and ternary networks (operations by precision, widgets)."""
from __future__ import annotations

import dataclasses

import ipywidgets as w
import matplotlib.pyplot as plt
import torch

from .. import METHODS, codec
from ..domains import Choice, Flag, domain_of
from ..measure import html_table, report
from ..method import layers_of
from ..plots import precision_panels, weights_of
from ..widgets import (Explorer, figure_image, interactive_for, knobs, png_of, sliders_for,
                       start_at)
from .common import measured, paper_rows


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
        start_at(controls[n], n, value)
    return interactive_for(explorer, method, controls, fixed, continuous)


def ste_estimators() -> dict:
    """Lesson 04's three straight-through estimators: label -> function of ``binary.core``."""
    from ..binary import core
    return {"identity (sign_ste)": core.sign_ste, "hard-tanh (sign_htanh, BNN)": core.sign_htanh,
            "ApproxSign (sign_approx, Bi-Real)": core.sign_approx}


def ste_gradient_rows(xs) -> list[dict]:
    """For each x: sign(x) and the gradient autograd passes back through each estimator."""
    from ..binary import core
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
        from ..plots import ste_panels
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
    from ..binary import core
    r = row.detach().double().flatten()
    a = torch.as_tensor(alphas, dtype=torch.float64).reshape(-1, 1)
    return (r - a * core.sign(r)).pow(2).sum(1)


class ScaleExplorer:
    """Lesson 04, section 2: one output channel's weights and the error of alpha sign(W) against
    alpha, drawn once; the slider moves +-alpha on the histogram and a point on the curve.
    The line is the least-squares alpha* = mean|W| (``core.ls_scale``)."""

    def __init__(self, weight: torch.Tensor, channel: int = 0, mark_label: str = ""):
        from ..binary import core
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
    from ..binary import core
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
    from ..binary.activations import xnor_scale
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
    from ..binary import bases
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
    from ..binary import bases
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
    from ..binary import ternary
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
    from ..binary import ternary
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
    from ..plots import threshold_sweep
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
    from ..bench import binary_speed
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
        from ..binary import kernels
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
    from ..bench.widgets import LESSON04
    spec = LESSON04[method_id]
    options = {"mark": spec.get("mark"), "mark_label": spec.get("mark_label", ""),
               **spec["fixed"], **settings}
    return explore_binary(METHODS[method_id], base, test, sliders=[spec["knob"]],
                          name="lenet300", **options)


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


def binary_paper_rows(ours: dict) -> list[dict]:
    """Section 8: every id of the catalogue's binary family, with the catalogue's paper target
    and the figure ``papers.QUOTED`` quotes (each a row; "-" when neither), beside ``ours[id]``."""
    from .. import catalogue, papers
    return paper_rows(catalogue.family_ids("binary"), papers.QUOTED, ours, every_id=True)
