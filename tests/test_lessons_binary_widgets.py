"""Lesson 04's helpers and widgets (``workbench.lessons``, lesson 04 section): every number a
widget or helper shows, checked against the library (``binary.core``, ``bases``, ``ternary``,
``kernels``, the methods) computed directly."""
from __future__ import annotations

import contextlib
import io

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from workbench import METHODS, catalogue, codec, lessons, zoo
from workbench.binary import bases, core, ternary
from workbench.method import layers_of
from workbench.train import evaluate

matplotlib.use("Agg")


def quietly(make):
    with contextlib.redirect_stdout(io.StringIO()):    # display() prints outside Jupyter
        return make()


@pytest.fixture(scope="module")
def lenet300():
    return zoo.pretrained("lenet300").eval()


@pytest.fixture(scope="module")
def fc1(lenet300):
    return lenet300.net[1].weight.detach()


@pytest.fixture(scope="module")
def small_test(mnist_test):
    return mnist_test.subset(200, seed=0)


def test_ste_gradient_rows_are_the_estimators_gradients():
    xs = [-1.5, -1.0, -0.5, 0.0, 0.25, 1.0, 1.5]
    rows = lessons.ste_gradient_rows(xs)
    for x, row in zip(xs, rows):
        assert row["sign(x)"] == (1.0 if x >= 0 else -1.0)
        assert row["grad ste"] == 1.0
        assert row["grad htanh"] == (1.0 if abs(x) <= 1 else 0.0)
        assert row["grad approx"] == pytest.approx(max(0.0, 2 - 2 * abs(x)))


def test_explore_ste_moves_in_place():
    widget = lessons.explore_ste(x=0.5, mark=1.0, mark_label="BNN")
    plot, first_png = widget.explorer.plot, widget.explorer.plot.value
    widget.kwargs_widgets[0].value = 1.5
    assert widget.explorer.trail[-1] == lessons.ste_gradient_rows([1.5])[0]
    assert widget.explorer.trail[-1]["grad htanh"] == 0.0
    assert widget.explorer.plot is plot and plot.value != first_png   # same image, new picture
    assert "1.5" in widget.explorer.table.value


def test_explore_scale_errors_against_the_direct_sum(fc1):
    widget = lessons.explore_scale(fc1, channel=3)
    explorer, row = widget.explorer, fc1[3].double()
    best = core.ls_scale(fc1)[3].item()
    assert explorer.best == pytest.approx(best)
    assert explorer.trail[-1]["alpha"] == pytest.approx(best / 2, abs=1e-5)   # starts at alpha*/2
    for alpha in (0.3 * best, best, 2.2 * best):
        widget.kwargs_widgets[0].value = alpha
        shown = explorer.trail[-1]
        direct = (row - shown["alpha"] * core.sign(row)).pow(2).sum().item()
        assert shown["error"] == pytest.approx(direct, rel=1e-4, abs=1e-5)
        assert shown["error"] >= shown["error at alpha*"] - 1e-5     # alpha* is the minimum
    widget.kwargs_widgets[0].value = best
    assert explorer.trail[-1]["extra error %"] == pytest.approx(0.0, abs=0.01)


def test_scale_checks_agree_with_the_closed_form(fc1):
    checks = lessons.scale_checks(fc1, channel=0)
    assert abs(checks["grid minimum alpha"] - checks["core.ls_scale"]) <= checks["grid step"]
    assert checks["grid minimum error"] == pytest.approx(
        checks["closed form ||W||^2 - ||W||_1^2/n"], rel=1e-3)
    direct = (fc1 - core.ls_scale(fc1) * core.sign(fc1)).pow(2).sum().item()
    assert checks["error, scale per channel"] == pytest.approx(direct, abs=1e-3)
    assert checks["error, scale per channel"] < checks["error, scale per layer"]


def test_xnor_k_matches_the_receptive_field_means():
    assert lessons.xnor_k_difference(seed=1) < 1e-5


def test_sign_sweep_rows_are_the_methods_results(lenet300, small_test):
    lenet5 = zoo.pretrained("lenet5").eval()
    nets = {"lenet300": lenet300, "lenet5": lenet5}
    base = {n: type("R", (), {"accuracy": 0.5})() for n in nets}
    rows, models = lessons.sign_sweep(nets, small_test, base)
    assert len(rows) == 5                           # no scope="all" row for the MLP
    settings = [("lenet300", dict(per_channel=True)), ("lenet300", dict(per_channel=False)),
                ("lenet5", dict(per_channel=True)), ("lenet5", dict(per_channel=False)),
                ("lenet5", dict(scope="all"))]
    for row, (name, s) in zip(rows, settings):
        direct = METHODS["binary.sign"](**s).apply(nets[name])
        assert row["accuracy"] == pytest.approx(evaluate(direct, small_test), abs=1e-4)
        assert row["file bytes"] == len(codec.encode(direct))
        assert row["x smaller than float file"] == round(
            len(codec.encode(nets[name])) / row["file bytes"], 1)
    assert set(models) == {(n, tuple(s.items())) for n, s in settings}


def test_abc_sweep_errors_and_distinct_values(lenet300, fc1, small_test):
    rows = lessons.abc_sweep(lenet300, small_test, ms=(1, 2))
    for m, row in zip((1, 2), rows):
        direct = METHODS["binary.abc"](M=m, quantize_ends=True, epochs=0).apply(lenet300)
        approx = direct.net[1].weight.detach()
        assert row["fc1 relative error"] == round(bases.relative_error(fc1, approx), 4)
        assert row["fc1 distinct values"] == len(torch.unique(approx)) <= m + 1
        assert row["accuracy"] == pytest.approx(evaluate(direct, small_test), abs=1e-4)


def test_sketch_sweep_matches_sketch_filters(fc1):
    rows = lessons.sketch_sweep(fc1, (1, 3))
    for j, row in zip((1, 3), rows):
        for mode in ("direct", "refined"):
            approx = bases.sketch_filters(fc1, j, refined=mode == "refined")[0]
            assert row[f"{mode}: relative error"] == round(bases.relative_error(fc1, approx), 4)
    assert rows[1]["refined: relative error"] <= rows[1]["direct: relative error"]


def test_bases_error_plot_draws_the_rows(fc1):
    plt.close("all")
    sketch = lessons.sketch_sweep(fc1, (1, 2))
    abc = [{"fc1 relative error": 0.6}, {"fc1 relative error": 0.5}]
    lessons.bases_error_plot(sketch, abc)
    lines = plt.gcf().axes[0].lines
    assert [list(line.get_ydata()) for line in lines] == [
        [r["direct: relative error"] for r in sketch],
        [r["refined: relative error"] for r in sketch], [0.6, 0.5]]
    plt.close("all")


def test_optimal_threshold_rows(lenet300):
    rows = lessons.optimal_threshold_rows({"lenet300": lenet300}, c=0.7)
    assert [r["layer"] for r in rows] == [f"lenet300 {n}" for n, _ in layers_of(lenet300)]
    for row, (_, layer) in zip(rows, layers_of(lenet300)):
        wgt = layer.weight.detach()
        delta, err = ternary.optimal_threshold(wgt)
        assert row["optimal c = delta*/E|W|"] == round(float(delta / wgt.abs().mean()), 3)
        assert row["error at 0.7 / optimal error"] >= 1.0      # the optimum is the optimum
        assert row["zeros at 0.7 %"] == round(
            100 * float((wgt.abs() <= 0.7 * wgt.abs().mean()).float().mean()), 1)


def test_twn_sweep_and_its_plot(lenet300, small_test):
    rows = lessons.twn_sweep(lenet300, small_test, (0.3, 1.2))
    for c, row in zip((0.3, 1.2), rows):
        direct = METHODS["ternary.twn"](c=c, epochs=0).apply(lenet300)
        assert row["zeros"] == round(ternary.zero_fraction(direct), 3)
        assert row["accuracy"] == pytest.approx(evaluate(direct, small_test), abs=1e-4)
    assert rows[0]["zeros"] < rows[1]["zeros"]
    plt.close("all")
    lessons.twn_sweep_plot(rows, [0.8])
    ax = plt.gcf().axes[0]
    assert [list(ax.lines[0].get_xdata())] == [[0.3, 1.2]]
    assert any(list(line.get_xdata()) == [0.7, 0.7] for line in ax.lines)   # the paper's line
    plt.close("all")


def test_trained_sweep_passes_epochs_and_skips(lenet300, small_test, mnist_train_small):
    calls = []

    def make(method_id, **settings):
        calls.append((method_id, settings))
        return lessons.configured(method_id, **settings)

    cases = [("lenet300", "binary.connect", {}), ("lenet300", "binary.sign", {}),
             ("lenet300", "no.such", {})]
    train = mnist_train_small.subset(64, seed=0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows, models = lessons.trained_sweep(cases, {"lenet300": lenet300}, small_test, train,
                                             {"lenet300": type("R", (), {"accuracy": 0.9})()},
                                             make, epochs=1, own_epochs=("binary.sign",))
    assert calls == [("binary.connect", {"epochs": 1}), ("binary.sign", {})]
    assert "no.such: not in the library yet" in out.getvalue()
    assert [r["method"] for r in rows] == ["lenet300: binary.connect", "lenet300: binary.sign"]
    for row in rows:
        assert row["accuracy"] == pytest.approx(evaluate(models[row["method"]], small_test),
                                                abs=1e-4)


def test_speed_sweep_smoke_rows_are_bit_exact():
    pytest.importorskip("openvino")
    rows = lessons.speed_sweep(smoke=True, pairs=4)
    assert [r["batch"] for r in rows] == [1, 64, 1]
    assert all(r["bit-exact"] is True for r in rows)
    assert rows[-1]["kernel"].startswith("OpenVINO")


def test_explore_xnor_flips_and_recomputes():
    a = torch.tensor([1, -1, -1, 1, 1, 1, -1, 1])
    w = torch.tensor([1, 1, -1, -1, 1, -1, -1, 1])
    widget = lessons.explore_xnor(a, w)
    explorer = widget.explorer
    assert explorer.trail[-1]["dot"] == int((a * w).sum())
    for i in (0, 3, 12):                        # two signs of a, one of w
        widget.kwargs_widgets[i].value = not widget.kwargs_widgets[i].value
        got_a, got_w = explorer.signs()
        shown = explorer.trail[-1]
        assert shown["dot"] == shown["sum_of_products"] == sum(x * y for x, y in zip(got_a, got_w))
    assert explorer.signs()[0][:4] == [-1, -1, -1, -1] and explorer.signs()[1][4] == -1


def test_lesson04_widget_settings_and_marks(lenet300, small_test):
    twn = quietly(lambda: lessons.lesson04_widget("ternary.twn", lenet300, small_test))
    assert twn.explorer.mark == 0.7 and twn.explorer.trail[-1]["c"] == 0.7
    sign = quietly(lambda: lessons.lesson04_widget("binary.sign", lenet300, small_test,
                                                   mark=True, mark_label="BWN"))
    assert sign.explorer.mark is True and sign.explorer.mark_label == "BWN"
    sign.kwargs_widgets[0].value = False
    sign.wait()
    direct = METHODS["binary.sign"](per_channel=False).apply(lenet300)
    assert sign.explorer.trail[-1]["accuracy"] == pytest.approx(evaluate(direct, small_test),
                                                                abs=1e-4)
    abc = quietly(lambda: lessons.lesson04_widget("binary.abc", lenet300, small_test, M=2))
    assert abc.explorer.mark is None and abc.explorer.trail[-1]["M"] == 2


def test_trained_ours_and_paper_rows():
    rows = [{"method": "lenet300: binary.bnn", "accuracy": 0.9}]
    ours = lessons.trained_ours(rows, 3, 0.99)
    assert ours["binary.bnn"] == "LeNet-300-100, 3 epoch(s): 0.9 (10.00% err)"
    assert "not run" in ours["binary.lab"]
    paper = lessons.binary_paper_rows(ours)
    assert {r["id"] for r in paper} == set(catalogue.family_ids("binary"))
    bnn = [r for r in paper if r["id"] == "binary.bnn"]
    assert [r["source"] for r in bnn] == ["catalogue", "authors' code README"]
    assert all(r["ours (this notebook)"] == ours["binary.bnn"] for r in bnn)
    assert [r["paper"] for r in paper if r["id"] == "binary.sign"] == ["-"]
