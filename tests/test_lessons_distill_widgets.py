"""Lesson 06's widgets and tables of issue 16 (``workbench.lessons``, "lesson 06 widgets"):
the numbers each shows, checked against torch and the library computed directly."""
from __future__ import annotations

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from workbench import data, lessons, papers, zoo
from workbench.bench.distillation_kd import PAPER_MNIST
from workbench.distill.hints import FSP
from workbench.distill.hints_tensors import fsp_matrix
from workbench.hooks import hooked

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def logits(mnist_test):
    return lessons.kd_logits(zoo.pretrained("lenet5"), mnist_test, images=64)


def test_kd_weighting_widget_shows_the_kd_loss_its_gradients_and_the_soft_share(logits):
    teacher, student, labels = logits
    widget = lessons.explore_kd_weighting(teacher, student, labels, mark=20.0, weight=0.9)
    explorer = widget.explorer
    figure, plot = explorer.fig, explorer.plot
    t_slider, w_slider = widget.kwargs_widgets
    t_slider.value, w_slider.value = 20.0, 0.5
    assert [(p["T"], p["weight"]) for p in explorer.trail] == [(1.0, 0.9), (20.0, 0.9),
                                                               (20.0, 0.5)]
    for point in explorer.trail:
        t = point["T"]
        kl = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1),
                      reduction="batchmean")
        assert point["KL"] == pytest.approx(kl.item(), rel=1e-5)
        assert point["T^2 x KL"] == pytest.approx(t * t * kl.item(), rel=1e-5)
        # the KL term's gradient by hand, (q - p) / T per image, over the batch
        by_hand = (F.softmax(student / t, 1) - F.softmax(teacher / t, 1)) / t / len(student)
        assert point["grad KL"] == pytest.approx(by_hand.norm().item(), rel=1e-4)
        assert point["grad T^2 x KL"] == pytest.approx(t * t * by_hand.norm().item(), rel=1e-4)
        hard = (F.softmax(student, 1) - F.one_hot(labels, 10)) / len(student)
        assert point["grad hard"] == pytest.approx(hard.norm().item(), rel=1e-4)
        a = point["weight"]
        assert point["with"] == pytest.approx(a * point["grad T^2 x KL"] / (
            a * point["grad T^2 x KL"] + (1 - a) * point["grad hard"]))
    # without T^2 the soft term's push fades at the paper's T; with it, it keeps its share
    last = explorer.trail[-1]
    assert last["without"] < 0.05 < 0.5 < last["with"]
    # updated in place: the same figure and image widget, markers at the last T
    assert explorer.fig is figure and explorer.plot is plot
    assert all(list(m.get_xdata()) == [20.0, 20.0] for m, _ in explorer.markers)
    assert "20" in explorer.table.value


def test_kd_gradient_rows_match_autograd_and_the_hand_formula(logits):
    teacher, student, _ = logits
    rows = lessons.kd_gradient_rows(student, teacher, [1, 8, 64])
    assert all(r["autograd = (q - p) / T"] for r in rows)
    for r in rows:
        t = r["T"]
        by_hand = (F.softmax(student / t, 1) - F.softmax(teacher / t, 1)) / t / len(student)
        assert float(r["gradient norm, no T^2"]) == pytest.approx(by_hand.norm().item(), rel=1e-3)
        assert float(r["gradient norm, with T^2"]) == pytest.approx(
            t * t * by_hand.norm().item(), rel=1e-3)


def test_fsp_widget_shows_each_stage_and_images_matrices_and_distances():
    teacher = zoo.pretrained("resnet20").eval()
    images = data.cifar10("test").subset(12, seed=0)
    twin = zoo.pretrained("resnet20")
    other = zoo.pretrained("resnet20")
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    widget = lessons.explore_fsp(FSP(), teacher, {"twin": twin, "halved": other}, images,
                                 images=6)
    explorer = widget.explorer
    stage, image = widget.kwargs_widgets
    stage.value, image.value = 2, 4
    assert [(p["stage"], p["image"]) for p in explorer.trail] == [(0, 0), (2, 0), (2, 4)]
    assert explorer.distance("twin", 2, 4) == 0        # the teacher's own copy
    x = explorer.data.tensors()[0]
    seen = {}
    name = explorer.stages[2]
    with torch.no_grad(), hooked(other, {name: lambda m, a, o, n_: seen.update({n_: (a[0], o)})}):
        other.eval()(x)
    first, second = seen[name]
    mine = fsp_matrix(F.adaptive_avg_pool2d(first, second.shape[-2:]), second)
    assert torch.allclose(explorer.matrices["halved"][2], mine, atol=1e-5)
    by_hand = (mine - explorer.matrices["teacher"][2]).pow(2).sum((1, 2))
    row = {r["student"]: r for r in explorer.trail[-1]["rows"]}["halved"]
    assert row["FSP distance, this image"] == pytest.approx(float(by_hand[4]), abs=1e-3)
    assert row["mean over the 6 images"] == pytest.approx(float(by_hand.mean()), abs=1e-3)


def test_hinton_rows_give_the_papers_counts_and_ours_as_error_rates():
    ours = {"teacher": 3, "alone": 9, "kd": 6}
    rows = lessons.hinton_rows(ours, 500, 0.9)
    assert [r["our error %"] for r in rows] == [0.6, 1.8, 1.2]
    assert [r["paper error %"] for r in rows] == [0.67, 1.46, 0.74]
    (fact,) = papers.facts("distill.kd")          # the same numbers as the papers' facts
    assert (PAPER_MNIST["alone"], PAPER_MNIST["kd"]) == (fact.baseline, fact.value)
    assert "removed 33% of" in lessons.hinton_summary(ours, 500)
    assert "removed 49%" in lessons.hinton_summary(ours, 500)
