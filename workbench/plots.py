"""The figures shared by the notebooks, the widgets and the survey report."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator
import numpy as np
import torch

from .codec import plain_state_dict

# Published points: Han et al. 2015 ("Learning both weights and connections", Table 1):
# fraction of weights kept and test error after pruning *and retraining*.
HAN_2015 = {
    "lenet300": {"kept": 0.08, "error": 0.0159, "base_error": 0.0164,
                 "label": "Han et al. 2015: 12x, 1.59% err (pruned + retrained)"},
    "lenet5": {"kept": 0.08, "error": 0.0077, "base_error": 0.0080,
               "label": "Han et al. 2015: 12x, 0.77% err (pruned + retrained)"},
}


NOT_WEIGHTS = ("bias", "running_mean", "running_var")


def weights_of(model) -> torch.Tensor:
    """The stored weights of a model as one flat tensor: every Conv2d / Linear weight (masks
    folded in) and what a replaced layer stores instead (hashed buckets, a circulant's row,
    DCT coefficients); no biases, no norm parameters or statistics, no integer indices."""
    state = plain_state_dict(model)
    return torch.cat([v.flatten() for k, v in state.items()
                      if v.is_floating_point() and not k.endswith(NOT_WEIGHTS)
                      and (v.dim() > 1 or not k.endswith("weight"))])


def weight_histogram(ax, before: torch.Tensor, after: torch.Tensor, bins: int = 120):
    """Histogram of the base weights and of the compressed model's nonzero weights.

    Takes flat weight tensors (see ``weights_of``); counts are binned with numpy and drawn as
    steps, which is several times faster than ``ax.hist`` for a live widget.
    """
    before, after = before.numpy(), after.numpy()
    edges = np.linspace(before.min(), before.max(), bins + 1)
    ax.stairs(np.histogram(before, edges)[0], edges, fill=True, color="0.8", label="base")
    ax.stairs(np.histogram(after[after != 0], edges)[0], edges, color="C0", lw=1.5,
              label="kept (nonzero)")
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())   # a log axis's minor ticks: most of a redraw
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)


def sweep_plot(sweeps: dict[str, list[dict]], ax=None, x: str = "sparsity"):
    """Test error against sparsity, one line per model, with Han et al.'s published points.

    ``sweeps`` maps a zoo name to rows with keys ``sparsity`` and ``accuracy``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4))
    for i, (name, rows) in enumerate(sweeps.items()):
        ax.plot([r[x] for r in rows], [100 * (1 - r["accuracy"]) for r in rows], "o-",
                color=f"C{i}", ms=3, label=f"{name}: ours, one-shot, no retraining")
        if name in HAN_2015:
            p = HAN_2015[name]
            ax.plot([1 - p["kept"]], [100 * p["error"]], "*", color=f"C{i}", ms=14,
                    markeredgecolor="k", label=p["label"])
    ax.set_xlabel("fraction of weights removed")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def stage_bars(ax, ours: list[dict], paper: dict | None = None):
    """Bytes after each stage (log scale), ours beside the paper's (``{stage: bytes}``),
    each bar labelled with its compression rate against the dense file."""
    names = [r["stage"] for r in ours]
    x = np.arange(len(names))
    width = 0.4 if paper else 0.6
    dense = ours[0]["bytes"]
    bars = ax.bar(x - (width / 2 if paper else 0), [r["bytes"] for r in ours], width,
                  color="C0", label="ours (real file)")
    ax.bar_label(bars, [f"{dense / r['bytes']:.1f}x" for r in ours], fontsize=8)
    if paper:
        values = [paper.get(n) for n in names]
        shown = [(i, v) for i, v in enumerate(values) if v]
        bars = ax.bar([i + width / 2 for i, _ in shown], [v for _, v in shown], width,
                      color="C1", label="Han et al. 2016")
        ax.bar_label(bars, [f"{values[0] / v:.1f}x" for _, v in shown], fontsize=8)
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("bytes")
    ax.legend(fontsize=8)
    return ax


def symbol_histogram(ax, symbols: np.ndarray, alphabet: int, title: str):
    """How often each symbol occurs, with the fixed-length and the entropy cost in the title."""
    from .huffman import entropy_bits
    counts = np.bincount(symbols, minlength=alphabet)
    ax.bar(np.arange(alphabet), counts, width=1.0, color="C2")
    fixed = np.log2(max(alphabet, 2))
    ax.set_title(f"{title}\nfixed {fixed:.0f} bits, entropy "
                 f"{entropy_bits(symbols) / max(len(symbols), 1):.2f} bits", fontsize=9)
    ax.set_xlabel("symbol")
    ax.set_ylabel("count")


def bits_curve(ax, rows: list[dict], x: str = "bits"):
    """Test accuracy against bits per weight, one line per method (rows of
    ``bench.quantization_curve``); ``x="file_bits"`` uses the real file's bits instead."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = "os^vD<>ph*"
    for i, name in enumerate(methods):
        points = sorted((r[x], 100 * r["accuracy"]) for r in rows
                        if r["method"] == name and r[x] is not None)
        if points:
            ax.plot(*zip(*points), marker=markers[i % len(markers)], ms=4, lw=1,
                    color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per weight" + (" (real file)" if x == "file_bits" else " (nominal)"))
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return ax


# ------------------------------------------------------------------ lesson 04: binary networks

def ste_panels(forward_ax, backward_ax, estimators: dict, lo: float = -2.0, hi: float = 2.0):
    """The sign function and its straight-through estimators: ``estimators`` maps a label to
    a function of ``workbench.binary.core`` (sign forward, a surrogate gradient backward).
    Left: sign(x) and, for each estimator, the function whose slope its backward pass uses
    (the integral of the autograd gradient from 0, drawn dashed). Right: the gradients, as
    autograd computes them through each function."""
    x = torch.linspace(lo, hi, 801, dtype=torch.float64)
    forward_ax.step(x.numpy(), next(iter(estimators.values()))(x).detach().numpy(), "k",
                    where="mid", lw=2, label="sign(x), the forward pass of every one")
    for i, (label, fn) in enumerate(estimators.items()):
        xg = x.clone().requires_grad_(True)
        fn(xg).sum().backward()
        grad = xg.grad.numpy()
        # the surrogate: cumulative trapezoid of the gradient, zero at x = 0
        steps = np.concatenate([[0.0], np.cumsum((grad[1:] + grad[:-1]) / 2 * np.diff(x.numpy()))])
        surrogate = steps - np.interp(0.0, x.numpy(), steps)
        forward_ax.plot(x.numpy(), surrogate, "--", color=f"C{i}", lw=1.2, label=label)
        backward_ax.plot(x.numpy(), grad, color=f"C{i}", lw=1.8, label=label)
    forward_ax.set_ylim(-2.1, 2.1)
    forward_ax.set_xlabel("x")
    forward_ax.set_title("forward: sign; dashed: what the backward pass pretends", fontsize=9)
    forward_ax.legend(fontsize=7)
    backward_ax.set_xlabel("x")
    backward_ax.set_ylabel("d output / d x used in training")
    backward_ax.set_title("backward: the straight-through gradients (autograd)", fontsize=9)
    backward_ax.legend(fontsize=7)


def threshold_sweep(ax, rows: list[dict], x: str = "c", mark: float | None = None,
                    mark_label: str = "", optimal: list[float] | None = None):
    """Accuracy (left axis) and share of zero weights (right axis) against a ternary threshold
    knob; ``mark`` draws the paper's setting as a vertical line, ``optimal`` short ticks at
    each layer's exact optimum."""
    xs = [r[x] for r in rows]
    ax.plot(xs, [100 * r["accuracy"] for r in rows], "o-", color="C0", ms=3, label="accuracy")
    ax.set_xlabel(x)
    ax.set_ylabel("test accuracy (%)", color="C0")
    twin = ax.twinx()
    twin.plot(xs, [100 * r["zeros"] for r in rows], "s--", color="C1", ms=3,
              label="zero weights")
    twin.set_ylabel("weights that are 0 (%)", color="C1")
    twin.set_ylim(0, 100)
    if mark is not None:
        ax.axvline(mark, color="k", ls=":", label=mark_label or f"{x} = {mark}")
    for i, c in enumerate(optimal or []):
        ax.axvline(c, color="C2", lw=0.8, alpha=0.7,
                   label="exact optimum of each layer" if i == 0 else None)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center right")
    return ax


def precision_panels(left, right, base_weights: torch.Tensor, weights: torch.Tensor,
                     trail: list[dict], knob: str, base_accuracy: float,
                     mark: float | None = None, mark_label: str = ""):
    """A lesson-04 widget's two panels: the weight histogram (base grey, compressed blue;
    binary weights are a few spikes) and accuracy against the knob over the points visited,
    with the share of zero weights on a second axis and the paper's setting as a line."""
    weight_histogram(left, base_weights, weights)
    trail = sorted(trail, key=lambda r: r[knob])
    xs = [r[knob] for r in trail]
    right.plot(xs, [r["accuracy"] for r in trail], "o-", ms=3, label="accuracy")
    right.axhline(base_accuracy, color="0.5", ls="--", label="float base")
    if mark is not None:
        right.axvline(mark, color="k", ls=":", label=mark_label or f"{knob} = {mark}")
    right.set_xlabel(knob)
    right.set_ylabel("accuracy")
    if any(r["zeros"] > 0 for r in trail):
        twin = right.twinx()
        twin.plot(xs, [100 * r["zeros"] for r in trail], "s--", color="C1", ms=3)
        twin.set_ylabel("zero weights (%)", color="C1")
        twin.set_ylim(0, 100)
    right.legend(fontsize=7)


def spectrum_panels(left, right, spectrum: torch.Tensor, rank: int, layer: str,
                    trail: list[dict], knob: str, base_report, mark=None, mark_label: str = ""):
    """Lesson 05's rank widget: ``left``, a layer's singular values (log scale), the kept ones
    solid and the dropped tail shaded, with the share of the squared spectrum (the energy) a
    rank cut keeps; ``right``, accuracy against the knob over the points visited, and the MAC
    ratio to the base on a second axis."""
    s = spectrum.numpy()
    index = np.arange(1, len(s) + 1)
    left.semilogy(index[:rank], s[:rank], color="C0", label=f"kept: rank {rank}")
    if rank < len(s):
        left.semilogy(index[rank:], s[rank:], color="0.6", label="dropped")
        left.fill_between(index[rank:], s[rank:], s[-1], color="0.85")
    energy = float((spectrum[:rank] ** 2).sum() / (spectrum ** 2).sum())
    left.axvline(rank, color="k", ls=":")
    left.yaxis.set_minor_locator(NullLocator())
    left.set_title(f"{layer}: singular values ({100 * energy:.1f}% of the energy kept)",
                   fontsize=9)
    left.set_xlabel("index")
    left.legend(fontsize=7)
    trail = sorted(trail, key=lambda r: r[knob])
    xs = [r[knob] for r in trail]
    right.plot(xs, [r["accuracy"] for r in trail], "o-", ms=3, label="accuracy")
    right.axhline(base_report.accuracy, color="0.5", ls="--", label="dense base")
    if mark is not None:
        right.axvline(mark, color="k", ls=":", label=mark_label or f"{knob} = {mark}")
    right.set_xlabel(knob)
    right.set_ylabel("accuracy")
    twin = right.twinx()
    twin.plot(xs, [base_report.macs / r["macs"] for r in trail], "s--", color="C1", ms=3)
    twin.set_ylabel("x fewer MACs", color="C1")
    right.legend(fontsize=7, loc="lower right")


# ------------------------------------------------------------------ lesson 06: distillation

def soft_target_bars(ax, probabilities, label: int | None = None):
    """A teacher's class probabilities for one image as bars (the true class ``label`` in a
    second colour) with the uniform 1/classes as a dotted line; returns the bars, so a widget
    can set their heights instead of drawing a new figure."""
    p = np.asarray(probabilities, dtype=float)
    colours = ["C1" if c == label else "C0" for c in range(len(p))]
    bars = ax.bar(np.arange(len(p)), p, color=colours)
    ax.axhline(1 / len(p), color="0.5", ls=":", lw=1, label=f"uniform 1/{len(p)}")
    ax.set_xticks(np.arange(len(p)))
    ax.set_ylim(0, 1)
    ax.set_xlabel("class" + ("" if label is None else f" (orange: the true class {label})"))
    ax.set_ylabel("probability")
    ax.legend(fontsize=7, loc="upper right")
    return bars


def entropy_against_temperature(ax, temperatures, bits, mark: float | None = None,
                                mark_label: str = ""):
    """How soft the targets are: their entropy (bits) against T on a log axis, the maximum
    log2(classes) as a dashed line, ``mark`` (the paper's T) dotted; returns the marker of the
    current T (a widget moves it with ``set_data``)."""
    ax.semilogx(temperatures, bits, color="C0")
    ax.axhline(np.log2(10), color="0.5", ls="--", lw=1, label="uniform (log2 10)")
    if mark is not None:
        ax.axvline(mark, color="k", ls=":", label=mark_label or f"T = {mark}")
    (current,) = ax.plot([], [], "o", color="C3", ms=7, label="this T")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("entropy of the soft targets (bits)")
    ax.legend(fontsize=7, loc="lower right")
    return current


def width_curves(ax, rows: list[dict], teacher_accuracy: float | None = None,
                 chosen: int | None = None, teacher_label: str = "teacher"):
    """Test accuracy against the student's width (log2 axis): one line trained on the labels
    alone, one with the teacher (rows with keys ``width``, ``alone``, ``kd``), the teacher's
    accuracy dashed and the ``chosen`` width dotted."""
    rows = sorted(rows, key=lambda r: r["width"])
    widths = [r["width"] for r in rows]
    ax.plot(widths, [100 * r["alone"] for r in rows], "o-", color="C0", ms=4,
            label="student alone (labels)")
    ax.plot(widths, [100 * r["kd"] for r in rows], "s-", color="C1", ms=4,
            label="student with the teacher (KD)")
    if teacher_accuracy is not None:
        ax.axhline(100 * teacher_accuracy, color="0.4", ls="--", lw=1, label=teacher_label)
    if chosen is not None:
        ax.axvline(chosen, color="k", ls=":", lw=1, label=f"width {chosen}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("student width (units per hidden layer)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _grid_cell(ax, row: int, col: int, title: str, label: str) -> None:
    """An image cell of a grid: no ticks, the column's title on the top row, the row's label
    on the first column."""
    ax.set_xticks([])
    ax.set_yticks([])
    if row == 0:
        ax.set_title(title, fontsize=8)
    if col == 0:
        ax.set_ylabel(label, fontsize=8)


def fsp_grid(axes, matrices: dict[str, list], stages: list[str]):
    """FSP matrices as images: one row of ``axes`` per network in ``matrices`` (label -> one
    matrix per stage, input channels down, output channels across), one column per stage;
    each column shares one colour scale, so teacher and student can be compared by eye."""
    axes = np.atleast_2d(axes)
    for col, stage in enumerate(stages):
        column = [m[col].detach().numpy() for m in matrices.values()]
        limit = max(float(np.abs(m).max()) for m in column) or 1.0
        for row, (label, matrix) in enumerate(zip(matrices, column)):
            ax = axes[row, col]
            image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit,
                              interpolation="nearest", aspect="auto")
            _grid_cell(ax, row, col, f"{stage}: {matrix.shape[0]} x {matrix.shape[1]}", label)
        plt.colorbar(image, ax=axes[:, col].tolist(), location="bottom", shrink=0.8)


def hint_maps(axes, maps: dict[str, torch.Tensor]):
    """A few channels of FitNets' hint and of what a student makes of it, for one image:
    ``maps`` is label -> C x H x W (the teacher's hint first), one row of ``axes`` each, one
    column per channel, every channel on the colour scale of the first map's."""
    axes = np.atleast_2d(axes)
    reference = next(iter(maps.values()))
    for col in range(axes.shape[1]):
        limit = float(reference[col].abs().max()) or 1.0
        for row, (label, m) in enumerate(maps.items()):
            ax = axes[row, col]
            ax.imshow(m[col].detach().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit,
                      interpolation="nearest")
            _grid_cell(ax, row, col, f"channel {col}", label)


def plain_log_axis(axis):
    """Label a log axis 2, 5, 10, 20, ... in plain text: not 2 x 10^1 (mathtext, slow to draw,
    and the minor labels of a short range ran into each other)."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_locator(LogLocator(subs=(2, 5)))
    axis.set_minor_formatter(plain)


def architecture_map(axes, rows: list[dict], references=("vgg_small", "resnet20")):
    """Two panels of the zoo's CIFAR-10 networks (rows of ``bench architectures``): test
    accuracy against MACs (log axis), and batch-64 time on one thread against MACs, where a
    network above the line through the references runs slower than its MACs promise. The
    reference networks are drawn as squares, the compact ones as dots."""
    left, right = axes
    for r in rows:
        ref = r["model"] in references
        style = dict(marker="s" if ref else "o", color="0.3" if ref else "C0", ms=6, ls="")
        left.plot(r["macs"] / 1e6, 100 * r["accuracy"], **style)
        right.plot(r["macs"] / 1e6, r["ms_b64_t1"], **style)
        for ax, y in ((left, 100 * r["accuracy"]), (right, r["ms_b64_t1"])):
            ax.annotate(r["model"], (r["macs"] / 1e6, y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    refs = [r for r in rows if r["model"] in references]
    if refs:   # time if every MAC cost what it costs in the references
        per_mac = np.median([r["ms_b64_t1"] / r["macs"] for r in refs])
        xs = np.geomspace(min(r["macs"] for r in rows), max(r["macs"] for r in rows), 50)
        right.plot(xs / 1e6, per_mac * xs, "--", color="0.5", lw=1,
                   label="time at the references' cost per MAC")
        right.legend(fontsize=7, loc="upper left")
    left.set_ylabel("test accuracy (%)")
    right.set_ylabel("ms per batch of 64, 1 thread")
    for ax in axes:
        ax.set_xscale("log")
        plain_log_axis(ax.xaxis)
        ax.set_xlabel("MACs per image (millions)")
        ax.grid(True, which="both", alpha=0.3)
    right.set_yscale("log")
    plain_log_axis(right.yaxis)


def pareto_plot(trials: list[dict], front: list[dict], base: dict | None = None,
                references: list[dict] = (), title: str = "", ax=None):
    """Accuracy against file bytes of a search: every complete trial (validation accuracy),
    the Pareto front (its test accuracy, measured after the search), the uncompressed network
    and published points (dicts with bytes, accuracy, label). Returns the figure."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4.2))
    done = [t for t in trials if t.get("state") == "complete"]
    ax.scatter([t["bytes"] for t in done], [t["accuracy"] for t in done], s=14, c="0.6",
               label="trials (validation accuracy)")
    if front:
        ax.plot([p["bytes"] for p in front], [p["test_accuracy"] for p in front], "o-",
                c="C0", label="Pareto front (test accuracy)")
    if base:
        ax.scatter([base["bytes"]], [base["accuracy"]], marker="s", c="k", label="zoo base")
    for ref in references:
        ax.scatter([ref["bytes"]], [ref["accuracy"]], marker="*", s=120, c="C3",
                   label=ref["label"])
    ax.set_xscale("log")
    ax.set_xlabel("file bytes (log)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return ax.figure


def _nothing(ax, text: str):
    ax.text(0.5, 0.5, text, ha="center", transform=ax.transAxes)
    ax.set_axis_off()


def _label_points(ax, xs, ys, labels, below: bool = False):
    """Each point's name beside it; ``below``: slanted under it, for points on one line."""
    for x, y, text in zip(xs, ys, labels):
        if below:
            ax.annotate(text, (x, y), fontsize=6, xytext=(0, -4), textcoords="offset points",
                        rotation=-60, ha="left", va="top", rotation_mode="anchor", c="C1")
        else:
            ax.annotate(text, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")


def survey_accuracy_bytes(ax, model: str, base: dict, rows: list[dict],
                          references: list[dict] = ()):
    """One zoo network: test accuracy (%) against the real file size (log axis) of every
    method's row, the uncompressed network as a square and published points (dicts with
    bytes, accuracy, label) as stars. Up and to the left is better."""
    xs, ys = [r["bytes"] for r in rows], [100 * r["accuracy"] for r in rows]
    ax.scatter(xs, ys, s=14, c="C0")
    _label_points(ax, xs, ys, [r["method"] for r in rows])
    ax.scatter([base["bytes"]], [100 * base["accuracy"]], marker="s", c="k",
               label=f"{model} uncompressed")
    for ref in references:
        ax.scatter([ref["bytes"]], [100 * ref["accuracy"]], marker="*", s=90, c="C3",
                   label=ref["label"])
    ax.set_xscale("log")
    ax.set_xlabel("file bytes (log)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(model)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def survey_speed_against_macs(ax, rows: list[dict]):
    """Measured speed-up at batch 64 (median, interquartile range as a bar) against the
    ratio of MACs, for every row whose method changes the computation. On the diagonal, time
    falls as the MACs do; below it, fewer MACs did not buy as much time. Rows with fewer
    effective MACs whose network runs its base's very layers (not timed) are open circles at
    1x, the time their dense layers take, each named under the line."""
    changes = [r for r in rows if r.get("effective_macs_x")
               and abs(r["effective_macs_x"] - 1) > 0.01]
    same = [r for r in changes if r.get("latency_b64") and not r.get("latency_vs_base")]
    rows = [r for r in changes if r.get("latency_vs_base")]
    if not rows:
        return _nothing(ax, "no method of this run changes the MACs and was timed")
    if same:     # fewer effective MACs, the base's dense layers: the base's time, not measured
        ax.scatter([r["effective_macs_x"] for r in same], [1.0] * len(same), s=22,
                   facecolors="none", edgecolors="C1",
                   label="runs the base's layers (zeros kept): not timed, drawn at 1x")
        _label_points(ax, [r["effective_macs_x"] for r in same], [1.0] * len(same),
                      [r["method"] for r in same], below=True)
    for r in rows:
        c = r["latency_vs_base"]["b64"]
        lo, hi = c["spread"]
        ax.errorbar(r["effective_macs_x"], c["speedup"], yerr=[[c["speedup"] - lo],
                                                               [hi - c["speedup"]]],
                    fmt="o", ms=4, c="C0", elinewidth=0.8)
    _label_points(ax, [r["effective_macs_x"] for r in rows],
                  [r["latency_vs_base"]["b64"]["speedup"] for r in rows],
                  [r["method"] for r in rows])
    top = max([r["effective_macs_x"] for r in rows + same] + [2.0])
    ax.plot([1 / top, top], [1 / top, top], "--", c="0.5", lw=1, label="time falls as MACs do")
    ax.axhline(1, c="0.8", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("x fewer MACs (effective)")
    ax.set_ylabel("x faster, batch 64 (measured)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def survey_bits_accuracy(ax, rows: list[dict]):
    """Accuracy lost (points) against the bits each weight is stored in, for every row whose
    method states its bits per weight: how far down the precision can go, family by family."""
    rows = [r for r in rows if r.get("bits_per_weight") is not None]
    if not rows:
        return _nothing(ax, "no method of this run states its bits per weight")
    xs = [r["bits_per_weight"] for r in rows]
    ys = [100 * (r["base_accuracy"] - r["accuracy"]) for r in rows]
    ax.scatter(xs, ys, s=14, c="C0")
    _label_points(ax, xs, ys, [r["method"] for r in rows])
    ax.axhline(0, c="0.8", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per weight (log 2)")
    ax.set_ylabel("accuracy lost (points)")
    ax.grid(True, which="both", alpha=0.3)
