"""Lesson 06: distillation (temperature, loss weighting, students by width, hints and FSP)."""
from __future__ import annotations

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import METHODS, codec
from ..measure import count_params, html_table
from ..plots import entropy_against_temperature, soft_target_bars, width_curves
from ..train import evaluate, quiet
from ..widgets import figure_image, png_of
from .common import measured


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
        from ..distill.losses import soft_targets
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
    from ..distill.hints import fsp_matrices
    from ..distill.hints_tensors import fsp_loss
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
    from ..distill.losses import frozen
    from ..method import clone_model
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
    from ..distill.hints_tensors import hint_target, run_until
    x = data.normalize(data.images[index:index + 1])
    student, regressor = stage["student"].eval(), stage["regressor"].eval()
    features, _ = run_until(student, stage["guided"], x)
    regressed = regressor(features)
    target, _ = run_until(teacher.eval(), stage["hint"], x)
    return hint_target(target, regressed.shape[-2:])[0], regressed[0]


@torch.no_grad()
def kd_logits(teacher, data, images: int = 256, width: int = 800, seed: int = 0):
    """Section 2's inputs: (teacher logits, student logits, labels) of the first ``images``
    images of ``data``; the student a fresh, untrained 2 x ``width`` MLP (seeded)."""
    from ..distill.base import build_student
    from ..train import seeded
    x = data.normalize(data.images[:images])
    with seeded(seed):
        teacher_logits = teacher.eval()(x)
        student_logits = build_student("mlp", width, 2, tuple(x.shape[1:]))(x)
    return teacher_logits, student_logits, data.labels[:images]


def kd_terms(student_logits, teacher_logits, labels, temperature: float) -> dict:
    """The two terms of the KD loss at ``temperature``, by autograd on the student's logits:
    the soft-target loss ``kd_loss`` (T^2 x KL) and the KL alone, the norms of their gradients,
    and the norm of the hard-label cross-entropy's gradient (at T = 1, whatever T is)."""
    from ..distill.losses import kd_loss
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
    from ..distill.losses import kd_loss, soft_targets
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
        from ..distill.hints import fsp_matrices
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
    from ..bench.distillation_kd import errors
    return {"teacher": errors(teacher, test),
            **{k: round((1 - pair[k]) * len(test)) for k in ("alone", "kd")}}


def hinton_rows(ours: dict, images: int, soft_weight: float) -> list[dict]:
    """Section 3's table: Hinton et al.'s test errors on MNIST's 10,000 images as error rates
    (the library's ``bench.distillation_kd.PAPER_MNIST``) beside ours (``hinton_errors``) on
    ``images`` test images, in the same unit."""
    from ..bench.distillation_kd import PAPER_MNIST
    from ..papers import MNIST_TEST_IMAGES
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
    from ..bench.distillation_kd import PAPER_MNIST
    removed = 1 - ours["kd"] / max(ours["alone"], 1)
    paper = 1 - PAPER_MNIST["kd"] / PAPER_MNIST["alone"]
    done = (f"removed {100 * removed:.0f}% of" if removed >= 0
            else f"added {-100 * removed:.0f}% to")
    return (f"errors out of {images:,} test images; KD {done} the student's errors (paper: "
            f"removed {100 * paper:.0f}%; issue 12's target: 25% or more)")


def hint_figure(teacher, stages: dict, data, index: int):
    """Section 5.1's figure: six channels of the teacher's hint for image ``index`` and the
    regressed guided layer of each ``hint_stage`` result in ``stages`` (label -> stage)."""
    from ..plots import hint_maps
    maps = {}
    for label, stage in stages.items():
        hint, maps[label] = hint_pair(teacher, stage, data, index)
    fig, axes = plt.subplots(1 + len(stages), 6, figsize=(10, 5), layout="constrained")
    hint_maps(axes, {"teacher's hint": hint, **maps})
    return fig


def hint_loss_rows(teacher, stages: dict, test) -> list[dict]:
    """The hint loss (``distill.hints.hint_error``) of each ``hint_stage`` result on ``test``."""
    from ..distill.hints import hint_error
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


# Romero et al. 2015's MNIST teacher (a maxout network), section 4.1; checked at the source
# (shared FIELD-NOTES), as the students' figures in ``papers.FACTS`` are
FITNETS_MNIST_TEACHER = "maxout teacher 0.55%"


def distill_paper_rows(hinton: dict, images: int, fitnets: dict, fsp: list[dict],
                       restore: list[dict], settings: dict) -> list[dict]:
    """Section 7: the papers' figures beside ours. Hinton et al.'s from
    ``bench.distillation_kd.PAPER_MNIST``, Romero et al.'s MNIST steps from ``papers.FACTS``
    (their teacher from ``FITNETS_MNIST_TEACHER``), their CIFAR-10 result from
    ``papers.QUOTED``; ``hinton``: our errors (``hinton_errors``), ``fitnets``: label -> our
    error %, ``fsp`` and ``restore``: the rows of sections 5.2 and 6, ``settings``: id -> how
    ours were trained."""
    from ..bench.distillation_kd import PAPER_MNIST, PAPER_SOURCE
    from ..papers import MNIST_TEST_IMAGES, QUOTED, facts
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
                  f" error ({FITNETS_MNIST_TEACHER})", "source": fit["hints"].source,
         "ours": f"{fitnets['alone']}% -> {fitnets['KD']}% -> {fitnets['hints + KD']}% "
                 f"(LeNet-5 teacher, {settings['distill.fitnets']})"},
        {"id": "distill.fitnets", "experiment": "CIFAR-10",
         "paper": QUOTED["distill.fitnets"][0], "source": QUOTED["distill.fitnets"][1],
         "ours": "not run (needs a wider teacher)"},
        {"id": "distill.fsp", "experiment": "CIFAR-10 ResNet-8 student of ResNet-20",
         "paper": "-", "source": "not checked at the source: none printed",
         "ours": " / ".join(f"{r['student (ResNet-8, widths 16-32-64)']}: {r['accuracy']}"
                            for r in fsp)},
        {"id": "kd_teacher", "experiment": "LeNet-5 pruned 95% + 2-bit shared weights",
         "paper": "-", "source": "no published figure (issue 12's own comparison)",
         "ours": " / ".join(f"{r['retraining']}: {r['error %']}%" for r in restore[:2])}]
    return rows
