"""Lesson 07's helpers (``workbench.lessons``, architectures section): the figures each table
and widget shows, checked against ``measure.report`` of ``models.build`` and the zoo."""
from __future__ import annotations

import contextlib
import io

import matplotlib
import pytest
import torch
from torch import nn

from workbench import catalogue, lessons, models, papers, zoo
from workbench.arch.networks import METHODS as ARCH
from workbench.measure import layer_table, report

matplotlib.use("Agg")


def quietly(make):
    with contextlib.redirect_stdout(io.StringIO()):    # display() prints outside Jupyter
        return make()


def test_layer_kind_tells_full_depthwise_grouped_and_linear_layers():
    assert lessons.layer_kind(nn.Conv2d(8, 8, 3, groups=8)) == "3x3 depthwise"
    assert lessons.layer_kind(nn.Conv2d(8, 16, 1, groups=4)) == "1x1 grouped"
    assert lessons.layer_kind(nn.Conv2d(8, 16, (1, 3))) == "1x3"
    assert lessons.layer_kind(nn.Linear(4, 2)) == "linear"


@pytest.mark.parametrize("name", ["mobilenet", "nin", "shufflenet", "squeezenet"])
def test_where_macs_go_adds_up_to_the_reports_macs_and_weights(name):
    net = models.build(name)
    rows = lessons.where_macs_go({name: net})
    r = report(net, latency=False)
    assert sum(row["MACs"] for row in rows) == r.macs
    conv_linear = sum(m.weight.numel() for m in net.modules()
                      if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert sum(row["weights"] for row in rows) == conv_linear
    assert sum(row["% of MACs"] for row in rows) == pytest.approx(100, abs=0.5)


def test_separable_table_formula_equals_the_librarys_count_on_every_mobilenet_block():
    net = models.build("mobilenet")
    rows = lessons.separable_table(net)
    assert len(rows) == len(net.BLOCKS) == 13
    assert all(row["formula = counted"] for row in rows)
    # the blocks, the stem and the classifier are every MAC report() counts
    table = {r["layer"]: r["macs"] for r in layer_table(net, (3, 32, 32))}
    blocks = sum(row["depthwise MACs"] + row["pointwise MACs"] for row in rows)
    assert blocks + table["features.0.0"] + table["head.2"] == report(net, latency=False).macs
    for row in rows:
        c_in, c_out = map(int, row["c_in -> c_out"].split(" -> "))
        h, w = map(int, row["map"].split("x"))
        assert row["full conv MACs"] == h * w * c_in * c_out * 9
        assert row["separable / full"] == pytest.approx(row["1/c_out + 1/k^2"], abs=1e-4)
    assert [row["map"] for row in rows][-1] == "4x4"     # 32 -> 16 -> 8 -> 4


def test_fire_table_counts_the_weights_of_each_fire_module():
    net = models.build("squeezenet", squeeze_ratio=0.25)
    rows = lessons.fire_table(net)
    assert len(rows) == 8
    for row in rows:
        fire = net.get_submodule(row["module"])
        convs = [m for m in fire.modules() if isinstance(m, nn.Conv2d)]
        assert row["conv weights"] == sum(m.weight.numel() for m in convs)
        assert row["squeeze s"] == max(1, round(0.25 * (row["expand e1 (1x1)"]
                                                        + row["expand e3 (3x3)"])))


@pytest.mark.parametrize("name, knobs", [("mobilenet", {"width": 0.75, "resolution": 0.5}),
                                         ("shufflenet", {"groups": 8}),
                                         ("squeezenet", {"squeeze_ratio": 0.5}),
                                         ("efficientnet", {"phi": 1.0})])
def test_architecture_figures_are_those_of_report_on_the_built_network(name, knobs):
    row = lessons.architecture_figures(name, knobs, min_run_time=0.01)
    r = report(models.build(name, **knobs), latency=False)
    assert (row["params"], row["MACs"]) == (r.params, r.macs)
    assert row["ms (batch 1, 1 thread)"] > 0
    assert row["accuracy"].startswith("not trained")


def test_the_width_widget_shows_reports_figures_and_accuracy_only_for_a_checkpoint():
    widget = quietly(lambda: lessons.explore_architecture("mobilenet", ["width", "resolution"],
                                                          min_run_time=0.01))
    explorer = widget.explorer
    assert [p["width"] for p in explorer.trail] == [0.5]          # ran on creation
    figure = explorer.fig
    for width in (0.25, 0.75):
        widget.controls["width"].value = width
        widget.wait()
    assert [p["width"] for p in explorer.trail] == [0.5, 0.25, 0.75]
    for point in explorer.trail:
        r = report(models.build("mobilenet", width=point["width"]), latency=False)
        assert (point["params"], point["MACs"]) == (r.params, r.macs)
    assert explorer.fig is figure and explorer.plot.value      # redrawn in place
    widget.controls["resolution"].value = 0.5
    widget.wait()
    left, right = figure.axes                # the same two panels, holding this move's lines
    assert len(left.lines) == 2 and len(right.lines) == 2
    assert left.get_xlabel() == "resolution"
    assert [len(line.get_xdata()) for line in left.lines] == [2, 2]   # resolution 1 and 0.5
    entry = zoo.manifest().get("mobilenet")
    first, last = explorer.trail[0]["accuracy"], explorer.trail[-1]["accuracy"]
    if entry is None:
        assert first.startswith("not trained yet: python -m workbench zoo train mobilenet")
    else:
        assert first.startswith(f"{100 * entry['test_acc']:.2f}%")
    assert last.startswith("not trained") and "width=0.5" in last
    assert "not trained" in explorer.ratios.value


def test_a_selection_slider_takes_only_the_allowed_values():
    widget = quietly(lambda: lessons.explore_architecture(
        "shufflenet", {"groups": [1, 2, 3, 4, 8]}, values={"groups": 3}, min_run_time=0.01))
    widget.controls["groups"].value = 8
    widget.wait()
    macs = [p["MACs"] for p in widget.explorer.trail]
    assert macs == [report(models.build("shufflenet", groups=g), latency=False).macs
                    for g in (3, 8)]


def test_pareto_front_keeps_the_rows_nothing_beats():
    rows = [{"model": "a", "accuracy": 0.9, "macs": 10},
            {"model": "b", "accuracy": 0.8, "macs": 5},
            {"model": "c", "accuracy": 0.85, "macs": 12}, {"model": "d", "accuracy": 0.95, "macs": 20}]
    assert [r["model"] for r in lessons.pareto_front(rows, "macs")] == ["b", "a", "d"]


def test_zoo_rows_are_the_manifests_trained_networks_with_reports_counts():
    entries = zoo.manifest()
    rows = lessons.zoo_rows(min_run_time=0.01, warmup=1)
    cifar = [n for n, (_, d) in models.ARCHITECTURES.items() if d == "cifar10"]
    assert [r["model"] for r in rows] == [n for n in cifar if n in entries]
    missing = {r["network"] for r in lessons.missing_networks()}
    assert missing == {n for n in cifar if n not in entries}
    for row in rows[:2]:
        r = report(zoo.pretrained(row["model"]), latency=False)
        assert (row["params"], row["macs"]) == (r.params, r.macs)
        assert row["accuracy"] == entries[row["model"]]["test_acc"]
        assert row["ns_per_mac_b64_t1"] == pytest.approx(
            row["ms_b64_t1"] * 1e6 / (64 * row["macs"]), abs=1e-3)


def test_paper_claims_quote_only_the_librarys_papers_and_targets():
    rows = lessons.paper_claims([{"model": "mobilenet", "accuracy": 0.9, "params": 1000,
                                  "macs": 2_000_000, "ms_b1_t1": 1.5}])
    assert [r["id"] for r in rows] == [m.id for m in ARCH]
    for row in rows:
        method = next(m for m in ARCH if m.id == row["id"])
        assert row["paper"] == catalogue.by_id(row["id"]).reference
        assert row["what the paper reports on"] == zoo.TARGETS[method.network]["paper"]
        fact = papers.pick(row["id"], method.network)
        assert row["paper's figure (workbench.papers)"] == (
            papers.paper_text(fact) if fact else papers.no_figure(row["id"]))
    by_id = {r["id"]: r["ours (CIFAR-10)"] for r in rows}
    assert by_id["arch.mobilenet"] == "90.00%, 1k params, 2.0M MACs, 1.5 ms/image"
    assert by_id["arch.nin"] == "not trained yet"


def test_guideline_rows_hold_every_guideline_at_equal_macs():
    torch.manual_seed(0)
    rows = lessons.guideline_rows(size=4, pairs=4)
    assert {r["guideline"] for r in rows} == {"G1", "G2", "G3", "G4"}
    assert all(abs(r["macs_vs_rec"] - 1) < 0.06 for r in rows)    # the paper's controlled MACs
    assert all(r["time_ms"] > 0 for r in rows)
