"""Lesson 06's helpers (``workbench.lessons``, distillation section): what each widget and
helper computes, checked against the library and torch directly."""
from __future__ import annotations

import contextlib
import dataclasses
import io

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench import data, lessons, zoo
from workbench.distill.hints import FSP, FitNets
from workbench.distill.hints_tensors import fsp_matrix
from workbench.distill.logits import KD
from workbench.hooks import hooked
from workbench.train import evaluate, quiet

matplotlib.use("Agg")


def quietly(make):
    with contextlib.redirect_stdout(io.StringIO()):    # display() prints outside Jupyter
        return make()


@pytest.fixture(scope="module")
def lenet5():
    return zoo.pretrained("lenet5").eval()


@pytest.fixture(scope="module")
def small_test(mnist_test):
    return mnist_test.subset(200, seed=0)


@pytest.fixture(scope="module")
def small_train():
    return data.mnist("train").subset(300, seed=0)


def test_temperature_widget_shows_the_teachers_softmax_at_t_and_moves_its_bars(lenet5,
                                                                                small_test):
    widget = quietly(lambda: lessons.explore_temperature(lenet5, small_test, 3, mark=20.0))
    explorer = widget.explorer
    assert [round(p["temperature"], 6) for p in explorer.trail] == [1.0]   # ran on creation
    bars, figure = list(explorer.bars), explorer.fig
    quietly(lambda: setattr(widget.kwargs_widgets[0], "value", 20.0))
    with torch.no_grad():
        logits = lenet5(small_test.normalize(small_test.images[3:4]))[0].double()
    for point in explorer.trail:
        wanted = F.softmax(logits / point["temperature"], dim=0)
        assert torch.allclose(point["probabilities"], wanted)
        p = wanted.numpy()
        assert point["bits"] == pytest.approx(-(p * np.log2(p)).sum())
    # the same figure and bar artists, their heights those of the last T
    assert explorer.fig is figure and list(explorer.bars) == bars
    heights = [b.get_height() for b in explorer.bars]
    assert heights == pytest.approx(F.softmax(logits / 20.0, 0).tolist())
    # softer at T = 20 than at T = 1, below the uniform maximum
    assert explorer.trail[0]["bits"] < explorer.trail[1]["bits"] < np.log2(10)


def test_student_pair_trains_alone_as_plain_training_and_kd_as_the_method(lenet5, small_train,
                                                                           small_test):
    method = KD(student="mlp", width=16, depth=2, epochs=1, temperature=4.0, weight=0.5)
    row = lessons.student_pair(method, lenet5, small_train, small_test, width=24)
    assert row["width"] == 24
    with quiet():
        plain = dataclasses.replace(method, width=24).make_student(lenet5, small_train)
        dataclasses.replace(method, width=24).fit(plain, small_train)      # labels only
        taught = dataclasses.replace(method, width=24).apply(lenet5, small_train)
    # weight 0 adds exactly zero to the gradients: the same network as plain training
    assert row["alone"] == round(evaluate(plain, small_test), 4)
    assert row["kd"] == round(evaluate(taught, small_test), 4)
    assert row["params"] == 784 * 24 + 24 + 24 * 24 + 24 + 24 * 10 + 10


def test_width_widget_shows_trained_points_and_trains_a_chosen_width(lenet5, small_train,
                                                                      small_test):
    method = KD(student="mlp", depth=2, epochs=1, temperature=4.0, weight=0.5)
    rows = lessons.width_sweep(method, lenet5, small_train, small_test, [8], progress=False)
    widget = quietly(lambda: lessons.explore_width(method, lenet5, small_train, small_test, rows,
                                                   widths=(4, 8), teacher_accuracy=0.99))
    explorer = widget.explorer
    assert list(explorer.slider.options) == [4, 8] and explorer.slider.value == 8
    assert explorer.table(8)[0]["accuracy with the teacher"] == rows[0]["kd"]
    assert "not trained" in explorer.table(4)[0]["status"]
    quietly(lambda: setattr(explorer.slider, "value", 4))
    quietly(explorer.train_chosen)                     # what the button does
    assert explorer.rows[4] == lessons.student_pair(method, lenet5, small_train, small_test, 4)
    lines = {line.get_label(): line for line in explorer.ax.get_lines()}
    alone = lines["student alone (labels)"]
    assert list(alone.get_xdata()) == [4, 8]
    assert list(alone.get_ydata()) == pytest.approx([100 * explorer.rows[w]["alone"]
                                                     for w in (4, 8)])


def test_fsp_comparison_computes_the_stage_gram_matrices_of_the_networks():
    teacher = zoo.pretrained("resnet20").eval()
    images = data.cifar10("test").subset(20, seed=0)
    method = FSP()
    twin = zoo.pretrained("resnet20")
    stages, means, rows = lessons.fsp_comparison(method, teacher, {"twin": twin}, images,
                                                 images=20)
    assert stages == ["stages.0", "stages.1", "stages.2"]
    # a student equal to the teacher matches it exactly
    assert all(r["FSP loss, twin"] == 0 for r in rows)
    # the teacher's matrices from its own stage inputs and outputs, read with hooks
    seen = {}
    with torch.no_grad(), hooked(teacher, {n: lambda m, a, o, n_: seen.update({n_: (a[0], o)})
                                           for n in stages}):
        teacher(images.tensors()[0])
    for name, mean in zip(stages, means["teacher"]):
        first, second = seen[name]
        first = F.adaptive_avg_pool2d(first, second.shape[-2:])
        h, w = second.shape[-2:]
        by_hand = torch.einsum("bihw,bjhw->ij", first, second) / (h * w * len(first))
        assert torch.allclose(mean, by_hand, atol=1e-4, rtol=1e-4)
        assert torch.allclose(mean, fsp_matrix(first, second).mean(0), atol=1e-5)


def test_hint_stage_regresses_the_teachers_hint_and_hint_pair_reads_both_maps(lenet5,
                                                                              small_train,
                                                                              small_test):
    from workbench.distill.hints import hint_error
    method = FitNets(epochs=1, hint_epochs=2, width=4, depth=1)
    fresh = lessons.hint_stage(dataclasses.replace(method, hint_epochs=0), lenet5, small_train)
    trained = lessons.hint_stage(method, lenet5, small_train)
    assert all(p.requires_grad for p in lenet5.parameters())    # the caller's, not frozen
    # the student before stage 1 is the method's own fresh student
    start = method.make_student(lenet5, small_train)
    assert all(torch.equal(a, b) for a, b in zip(fresh["student"].state_dict().values(),
                                                 start.state_dict().values()))
    errors = [hint_error(s["student"], lenet5, s["regressor"], s["guided"], s["hint"],
                         small_test) for s in (fresh, trained)]
    assert errors[1] < errors[0]                      # stage 1 really regresses the hint
    hint, regressed = lessons.hint_pair(lenet5, trained, small_test, 5)
    x = small_test.normalize(small_test.images[5:6])
    seen = {}
    with torch.no_grad(), hooked(lenet5, {trained["hint"]: lambda m, a, o, n: seen.update(t=o)}):
        lenet5(x)
    with torch.no_grad(), hooked(trained["student"],
                                 {trained["guided"]: lambda m, a, o, n: seen.update(s=o)}):
        trained["student"](x)
        wanted = trained["regressor"].eval()(seen["s"])[0]
    assert torch.allclose(regressed, wanted, atol=1e-6)
    assert torch.allclose(hint, F.adaptive_avg_pool2d(seen["t"], wanted.shape[-2:])[0],
                          atol=1e-6)


def test_fsp_grid_and_hint_maps_draw_the_given_matrices_on_shared_scales():
    import matplotlib.pyplot as plt

    from workbench import plots
    g = torch.Generator().manual_seed(0)
    mats = {"teacher": [torch.randn(3, 4, generator=g), torch.randn(4, 5, generator=g)],
            "student": [torch.randn(3, 4, generator=g), 5 * torch.randn(4, 5, generator=g)]}
    fig, axes = plt.subplots(2, 2)
    plots.fsp_grid(axes, mats, ["a", "b"])
    for col in range(2):
        limit = max(float(m[col].abs().max()) for m in mats.values())
        for row, m in enumerate(mats.values()):
            image = axes[row, col].get_images()[0]
            assert np.array_equal(image.get_array(), m[col].numpy())
            assert image.get_clim() == pytest.approx((-limit, limit))
    plt.close(fig)
    maps = {"hint": torch.randn(2, 3, 3, generator=g), "student": torch.randn(2, 3, 3, generator=g)}
    fig, axes = plt.subplots(2, 2)
    plots.hint_maps(axes, maps)
    for col in range(2):
        limit = float(maps["hint"][col].abs().max())      # the teacher's scale for both rows
        for row, m in enumerate(maps.values()):
            image = axes[row, col].get_images()[0]
            assert np.array_equal(image.get_array(), m[col].numpy())
            assert image.get_clim() == pytest.approx((-limit, limit))
    plt.close(fig)
