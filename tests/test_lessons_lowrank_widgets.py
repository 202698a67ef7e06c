"""Lesson 05's widgets and helpers (``workbench.lessons``, lesson 05 section): every number a
widget or helper shows, checked against the library (``lowrank.tensor_tensors``, the methods,
``measure``, ``papers``) computed directly."""
from __future__ import annotations

import contextlib
import io

import matplotlib
import pytest
import torch

from workbench import METHODS, lessons, papers, zoo
from workbench.lowrank import matrix_tensors as mt
from workbench.lowrank import tensor_tensors as tt
from workbench.measure import layer_table, report
from workbench.models import attached
from workbench.train import evaluate

matplotlib.use("Agg")
LAYER, PIXELS = "features.17", 8 * 8          # VGG-small's 128 -> 128 conv on an 8x8 map


def quietly(make):
    with contextlib.redirect_stdout(io.StringIO()):    # display() prints outside Jupyter
        return make()


@pytest.fixture(scope="module")
def vgg():
    return zoo.pretrained("vgg_small").eval()


@pytest.fixture(scope="module")
def lenet300():
    return zoo.pretrained("lenet300").eval()


@pytest.fixture(scope="module")
def small_test(mnist_test):
    return mnist_test.subset(200, seed=0)


def chain_counts(model, name: str) -> tuple[int, int]:
    """(weights, MACs) of the modules that replaced ``name``, as ``measure`` counts them."""
    rows = [r for r in layer_table(model, (3, 32, 32)) if r["layer"].startswith(name + ".")]
    return sum(r["params"] for r in rows), sum(r["macs"] for r in rows)


@pytest.mark.parametrize("rank", [8, 32, 96])
def test_tucker_point_matches_the_method(vgg, rank):
    point = lessons.chain_point(vgg.get_submodule(LAYER), "tucker", rank)
    method = METHODS["lowrank.tucker"](ranks_by="ratio", rank_ratio=rank / 128, layers=(LAYER,),
                                       min_saving=0.0, epochs=0)
    model = method.apply(vgg)
    fit = attached(model, "tensor_decomposition")["layers"][LAYER]
    assert fit["ranks"] == [rank, rank]
    assert point["kernel error"] == round(fit["error"], 4)
    weights, macs = chain_counts(model, LAYER)
    assert (point["chain weights"], point["MACs per pixel"] * PIXELS) == (weights, macs)
    dense = next(r for r in layer_table(vgg, (3, 32, 32)) if r["layer"] == LAYER)
    assert point["dense MACs per pixel"] * PIXELS == dense["macs"]
    assert point["x fewer MACs"] == round(dense["macs"] / macs, 2)


def test_cp_point_matches_the_method(vgg):
    point = lessons.chain_point(vgg.get_submodule(LAYER), "cp", 64, iterations=10)
    model = METHODS["lowrank.cp"](rank_ratio=0.5, iterations=10, layers=(LAYER,),
                                  min_saving=0.0, epochs=0).apply(vgg)
    fit = attached(model, "tensor_decomposition")["layers"][LAYER]
    assert fit["rank"] == point["rank"] == 64
    assert point["kernel error"] == round(fit["error"], 4)
    weights, macs = chain_counts(model, LAYER)
    assert point["MACs per pixel"] * PIXELS == macs
    # the chain's weights: the four factors (the layer_table also counts the bias of the last)
    assert point["chain weights"] == sum(f.numel() for f in
                                         tt.cp_als(vgg.get_submodule(LAYER).weight, 64, 10)[0])
    assert weights - point["chain weights"] in (0, 128)


def test_unknown_chain_kind_is_refused(vgg):
    with pytest.raises(ValueError, match="allowed"):
        lessons.chain_point(vgg.get_submodule(LAYER), "svd", 4)


def test_explore_chain_updates_in_place(vgg):
    box = lessons.explore_chain(vgg, LAYER, "tucker", rank=16)
    explorer, slider = box.explorer, box.kwargs_widgets[0]
    image = explorer.plot
    slider.value = 40
    assert explorer.trail[-1] == lessons.chain_point(vgg.get_submodule(LAYER), "tucker", 40)
    assert explorer.plot is image and len(image.value) > 1000     # the same image, redrawn
    assert "0.7" in explorer.table.value or str(explorer.trail[-1]["kernel error"]) in \
        explorer.table.value
    assert [r["rank"] for r in explorer.trail] == [16, 40]
    assert slider.max == 128
    cp = lessons.explore_chain(vgg, LAYER, "cp", rank=8, iterations=5)
    assert cp.kwargs_widgets[0].max == 256 and not cp.kwargs_widgets[0].continuous_update


def test_paper_marks_come_from_the_facts():
    hashed = lessons.paper_marks("hash.hashednets", "compression")
    assert [v for v, _ in hashed] == [1 / f.ratio for f in papers.facts("hash.hashednets")]
    assert all(str(f.value) in label for f, (_, label) in
               zip(papers.facts("hash.hashednets"), hashed))
    (sparse,) = lessons.paper_marks("lowrank.sparse_decomp", "sparsity")
    assert sparse[0] == papers.facts("lowrank.sparse_decomp")[0].removed_pct / 100
    assert lessons.paper_marks("lowrank.tucker", "rank_ratio") == []
    assert [v for v, _ in lessons.perforation_marks()] == [0.5, 0.75]


def test_hashed_widget_draws_the_marks_and_measures(lenet300, small_test):
    marks = lessons.paper_marks("hash.hashednets", "compression")
    box = quietly(lambda: lessons.explore_marked(
        METHODS["hash.hashednets"], lenet300, small_test, marks=marks, sliders=["compression"],
        init="average", epochs=0, name="lenet300"))
    box.controls["compression"].value = 1 / 8
    box.wait()
    model = METHODS["hash.hashednets"](compression=1 / 8, init="average", epochs=0).apply(lenet300)
    assert box.explorer.trail[-1]["accuracy"] == round(evaluate(model, small_test), 4)
    assert box.explorer.trail[-1]["bytes"] == report(model, latency=False).bytes
    right = box.explorer.fig.axes[1]
    assert {label for _, label in marks} <= {t.get_text() for t in right.get_legend().get_texts()}


def test_sparse_decomp_widget_measures(small_test):
    lenet5 = zoo.pretrained("lenet5").eval()
    box = quietly(lambda: lessons.explore_marked(
        METHODS["lowrank.sparse_decomp"], lenet5, small_test,
        marks=lessons.paper_marks("lowrank.sparse_decomp", "sparsity"), sliders=["sparsity"],
        penalty_epochs=0, epochs=0, sparsity=0.5, name="lenet5"))
    model = METHODS["lowrank.sparse_decomp"](sparsity=0.5, penalty_epochs=0,
                                             epochs=0).apply(lenet5)
    assert box.explorer.trail[-1]["accuracy"] == round(evaluate(model, small_test), 4)


def test_eckart_young_rows(lenet300):
    weight = lenet300.net[1].weight.detach()
    rows = lessons.eckart_young_rows(weight, ranks=(10, 50))
    s = torch.linalg.svdvals(weight.double())
    for row in rows:
        k = row["rank k"]
        left, right = mt.truncated_svd(weight, k)
        assert row["||W - W_k||_F"] == round(float((weight.double() - left @ right).norm()), 5)
        assert abs(row["||W - W_k||_F"] - row["sqrt(sum of sigma_i^2, i > k)"]) < 1e-4
        assert row["energy kept %"] == round(float(100 * s[:k].pow(2).sum() / s.pow(2).sum()), 2)


def test_circulant_checks(lenet300):
    circ = METHODS["approx.circulant"](epochs=0).apply(lenet300)
    checks = lessons.circulant_checks(circ.net[1])
    assert checks["equal to scipy's circulant(r) D"]
    assert checks["FFT vs dense, max difference"] < 1e-4
    assert (checks["stored numbers"], checks["dense weights"]) == (784, 300 * 784)


def test_layer_timing_compares_the_right_modules(vgg):
    model = METHODS["lowrank.tucker"](ranks_by="ratio", rank_ratio=0.5, layers=(LAYER,),
                                      epochs=0).apply(vgg)
    rows = lessons.chain_timing_rows(vgg, {"lowrank.tucker": model}, {LAYER: (128, 8, 8)},
                                     pairs=4)
    dense = next(r for r in layer_table(vgg, (3, 32, 32)) if r["layer"] == LAYER)["macs"]
    assert rows[0]["x fewer MACs"] == round(dense / chain_counts(model, LAYER)[1], 2)
    assert {"chain vs conv, NCHW", "chain vs conv, channels_last"} <= set(rows[0])


def test_separable_point_matches_the_method(vgg):
    point = lessons.chain_point(vgg.get_submodule(LAYER), "separable", 24)
    model = METHODS["lowrank.separable"](by="rank", rank=24, layers=(LAYER,)).apply(vgg)
    layer = model.get_submodule(LAYER)
    assert point["kernel error"] == round(tt.relative_error(vgg.get_submodule(LAYER).weight,
                                                            layer.kernel()), 4)
    weights, macs = chain_counts(model, LAYER)
    assert (point["chain weights"], point["MACs per pixel"] * PIXELS) == (weights, macs)
    assert lessons.chain_macs(vgg.get_submodule(LAYER), "separable", 24) == \
        point["dense MACs per pixel"] / point["MACs per pixel"]
