"""``workbench.widgets.explore``: sliders from declared ranges, the callback really applies the
method, chains expose their steps' knobs, bad slider names are refused by name."""
from __future__ import annotations

import contextlib
import threading
import io

import matplotlib
import pytest

from workbench import METHODS, pipeline, widgets
from workbench.prune import Magnitude

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def lenet300():
    from workbench import zoo
    return zoo.pretrained("lenet300")


@pytest.fixture(scope="module")
def test_set(mnist_test):
    return mnist_test.subset(200, seed=0)


def quietly(make):
    with contextlib.redirect_stdout(io.StringIO()):    # display() prints outside Jupyter
        return make()


def test_explore_applies_the_method_on_creation_and_on_every_move(lenet300, test_set):
    widget = quietly(lambda: widgets.explore(Magnitude, lenet300, test_set))
    slider = widget.kwargs_widgets[0]
    assert slider.description == "sparsity" and (slider.min, slider.max) == (0.0, 0.99)
    trail = widget.explorer.trail
    start = Magnitude().sparsity                       # the slider starts at the default
    assert len(trail) == 1 and trail[0]["sparsity"] == start    # the callback ran once
    slider.value = 0.5
    widget.wait()                                      # moves update in a background thread
    assert [round(p["sparsity"], 2) for p in trail] == [start, 0.5]
    # the figures are the method's: fewer nonzeros kept at the default (above 0.5) than at 0.5
    dense = widget.explorer.base_report
    assert trail[0]["bytes"] < trail[1]["bytes"] < dense.bytes
    assert slider.continuous_update            # magnitude needs no data: updates while dragged


def test_integer_knobs_get_integer_sliders_and_training_updates_on_release(lenet300, test_set,
                                                                           mnist_train_small):
    kmeans = quietly(lambda: widgets.explore(METHODS["quant.kmeans"], lenet300, test_set,
                                             sliders=["k"]))
    assert type(kmeans.kwargs_widgets[0]).__name__ == "IntSlider"
    trained = quietly(lambda: widgets.explore(
        METHODS["quant.trained_kmeans"], lenet300, test_set, data=mnist_train_small,
        sliders=["k"], epochs=1))
    assert not trained.kwargs_widgets[0].continuous_update


def test_a_chain_exposes_its_steps_knobs(lenet300, test_set):
    chain = pipeline.Hybrid(steps=(("prune.magnitude", {"sparsity": 0.8}),
                                   ("quant.kmeans", {"k": 8})))
    assert {"prune.magnitude.sparsity", "quant.kmeans.k"} <= set(widgets.knobs(chain))
    widget = quietly(lambda: widgets.explore(chain, lenet300, test_set,
                                             sliders=["prune.magnitude.sparsity",
                                                      "quant.kmeans.k"]))
    sparsity, k = widget.kwargs_widgets
    assert (sparsity.value, k.value) == (0.8, 8)
    k.value = 4
    widget.wait()
    last = widget.explorer.trail[-1]
    assert last["quant.kmeans.k"] == 4 and last["prune.magnitude.sparsity"] == 0.8
    assert last["bytes"] < widget.explorer.trail[0]["bytes"]     # 2 bits instead of 3


def test_unknown_slider_is_refused_by_name(lenet300, test_set):
    with pytest.raises(ValueError, match="nope"):
        widgets.explore(Magnitude, lenet300, test_set, sliders=["nope"])
    chain = pipeline.Hybrid()
    with pytest.raises(ValueError, match="quant.kmeans.nope"):
        widgets.explore(chain, lenet300, test_set, sliders=["quant.kmeans.nope"])


def test_rank_widget_shows_the_rank_the_method_kept(lenet300, test_set):
    """Lesson 05's widget: each move factorizes fc1 at the slider's rank; the trail records the
    rank read from the network (not the slider), the MACs fall with it, and a rank too large to
    pay leaves fc1 dense (its full rank is then reported)."""
    from workbench.lessons import explore_rank
    widget = quietly(lambda: explore_rank(METHODS["lowrank.svd"], lenet300, test_set,
                                          layer="net.1", sliders=["rank"], rank=30,
                                          layers=("net.1",)))
    slider = widget.kwargs_widgets[0]
    assert type(slider).__name__ == "IntSlider" and slider.value == 30
    slider.value = 10
    widget.wait()
    trail = widget.explorer.trail
    assert [p["rank"] for p in trail] == [30, 10]
    assert trail[1]["macs"] < trail[0]["macs"] < widget.explorer.base_report.macs
    assert len(widget.explorer.spectrum) == 300          # fc1 is 300 x 784
    explorer = widget.explorer
    dense = METHODS["lowrank.svd"](rank=250).apply(lenet300)
    assert explorer.kept_rank(dense) == 300              # 250 * 1084 > 300 * 784: stays dense


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "the plot is not a PNG"
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_a_move_updates_the_same_table_and_figure_in_place(lenet300, test_set):
    """The issue's browser finding: the plot vanished for seconds on every move and the page
    jumped. The view is now one table and one figure whose contents are replaced: the same
    widgets before and after, a new PNG of the same pixel size, a new table."""
    widget = widgets.explore(Magnitude, lenet300, test_set, mark=0.92, mark_label="paper")
    explorer = widget.explorer
    table, plot = explorer.table, explorer.plot
    first_png, first_table = plot.value, table.value
    assert list(widget.children[-3:]) == [table, explorer.ratios, plot]
    widget.kwargs_widgets[0].value = 0.3
    widget.wait()
    assert explorer.table is table and explorer.plot is plot
    assert plot.value != first_png and png_size(plot.value) == png_size(first_png)
    assert png_size(plot.value) == (960, 326)            # 10 x 3.4 inches at 96 dpi
    assert table.value != first_table and "prune.magnitude" in table.value
    # only what was measured: the latency ratios are not measured by a widget
    assert "None" not in explorer.ratios.value and "bytes_x" in explorer.ratios.value
    right = explorer.fig.axes[1]
    assert "paper" in [line.get_label() for line in right.get_lines()]   # the paper's line


def test_moves_during_an_update_collapse_into_the_last_one(lenet300, test_set):
    """A drag sends many values while one update runs: they replace each other, so the widget
    computes once more, at the last value, not once per value."""
    widget = widgets.explore(Magnitude, lenet300, test_set)
    explorer, slider = widget.explorer, widget.kwargs_widgets[0]
    entered, gate, compute = threading.Event(), threading.Event(), explorer.compute

    def held(**values):                  # the first background update waits at the gate
        entered.set()
        gate.wait(60)
        return compute(**values)

    explorer.compute = held
    slider.value = 0.3
    assert entered.wait(60), "the move did not start an update"
    for value in (0.4, 0.5, 0.6):        # arrive while 0.3 is being computed
        slider.value = value
    gate.set()
    widget.wait()
    assert [round(p["sparsity"], 2) for p in explorer.trail] == [Magnitude().sparsity, 0.3, 0.6]


def test_an_update_that_fails_says_so_in_the_widget_and_to_wait(lenet300, test_set):
    widget = widgets.explore(Magnitude, lenet300, test_set)
    explorer = widget.explorer

    def broken(**values):
        raise RuntimeError("out of memory")

    explorer.compute = broken
    widget.kwargs_widgets[0].value = 0.5
    with pytest.raises(RuntimeError, match="out of memory"):
        widget.wait()
    assert "RuntimeError: out of memory" in explorer.table.value
    assert "sparsity" in explorer.table.value             # which move failed


def test_a_starting_value_outside_the_slider_is_refused_by_name(lenet300, test_set):
    # ipywidgets would clamp 1.5 to the slider's end without a word
    with pytest.raises(ValueError, match=r"sparsity=1.5: allowed is 0 to 0.99"):
        widgets.explore(Magnitude, lenet300, test_set, sparsity=1.5)
    widget = widgets.explore(Magnitude, lenet300, test_set, sparsity=0.5)
    assert widget.kwargs_widgets[0].value == 0.5 and widget.explorer.trail[0]["sparsity"] == 0.5


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_after_a_worker_dies_the_next_move_still_updates(lenet300, test_set):
    widget = widgets.explore(Magnitude, lenet300, test_set)
    explorer, compute = widget.explorer, widget.explorer.compute

    def dies(**values):                      # not an Exception: escapes the update's handler
        explorer.compute = compute
        raise SystemExit("worker killed")

    explorer.compute = dies
    widget.kwargs_widgets[0].value = 0.5
    widget.wait()                            # returns: the dead worker is not waited for
    widget.kwargs_widgets[0].value = 0.6
    widget.wait()
    assert round(explorer.trail[-1]["sparsity"], 2) == 0.6
