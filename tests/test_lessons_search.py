"""Lesson 08's helpers (``workbench.lessons``, search section): the records, tables and widgets
show what the library computes (Optuna's studies, ``Search.best``, ``cost.energy``,
``reproduce.PAPER``), and watching a search does not change it."""
from __future__ import annotations

import matplotlib
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from workbench import codec, cost, data, lessons, measure, zoo
from workbench.bench.search_samplers import run_search
from workbench.reproduce import PAPER
from workbench.search import BanditSearch, BayesSearch, RandomSearch
from workbench.search import space as spaces

matplotlib.use("Agg")

pytestmark = pytest.mark.skipif(
    "lenet300" not in zoo.manifest(),
    reason="no lenet300 checkpoint: python -m workbench zoo train lenet300")
SPACE = {"0.sparsity": (0.70, 0.92, 0.02), "1.k": [2, 4, 8]}
COMMON = {"method": "pipeline.hybrid", "space": SPACE, "eval_images": 200, "trials": 6}


@pytest.fixture(scope="module")
def lenet():
    return zoo.pretrained("lenet300")


@pytest.fixture(scope="module")
def train():
    return data.mnist("train").subset(1000, seed=0)


@pytest.fixture(scope="module")
def watched_run(lenet, train):
    searches = {"random": RandomSearch(**COMMON, objectives=("accuracy",), byte_budget=1 / 25),
                "hyperband": BanditSearch(**COMMON, byte_budget=1 / 25, startup_trials=2)}
    widget = lessons.explore_trials(searches, len(codec.encode(lenet)), threshold=0.9)
    return searches, widget, lessons.run_watched(searches, lenet, train, widget.explorer)


def test_space_rows_are_the_default_space_with_its_grid():
    rows = lessons.space_rows("pipeline.hybrid")
    assert [r["knob"] for r in rows] == list(spaces.default_space("pipeline.hybrid", {}))
    assert [r["grid points"] for r in rows] == [100, 255]
    narrowed = lessons.space_rows("pipeline.hybrid",
                                  space={"0.sparsity": (0.5, 0.9), "1.k": [4, 8]})
    assert [(r["sampled as"], r["grid points"]) for r in narrowed] == [("real numbers", None),
                                                                       ("one of the choices", 2)]


def test_watching_a_search_records_every_trial_and_changes_none(watched_run, lenet, train):
    searches, widget, ran = watched_run
    for name, search in searches.items():
        _, study = ran[name]
        records = lessons.trial_records(study)
        assert widget.explorer.records[name] == records       # every trial, as it came in
        alone = run_search(search, lenet, train, name)        # the same search, not watched
        assert [r["trial"] for r in lessons.trial_records(alone)] == [r["trial"] for r in records]
        assert [t.params for t in alone.trials] == [t.params for t in study.trials]
    # Hyperband prunes the proposals whose file would not fit: they have no accuracy
    pruned = [r for r in widget.explorer.records["hyperband"] if r["state"] == "pruned"]
    assert all(r["accuracy"] is None for r in pruned)


def test_best_so_far_is_the_running_best_within_budget():
    records = [{"state": "complete", "accuracy": 0.5, "bytes": 10},
               {"state": "pruned", "accuracy": None, "bytes": None},
               {"state": "complete", "accuracy": 0.9, "bytes": 30},
               {"state": "complete", "accuracy": 0.7, "bytes": 20}]
    assert lessons.best_so_far(records, 25) == [0.5, 0.5, 0.5, 0.7]
    assert lessons.best_so_far(records) == [0.5, 0.5, 0.9, 0.9]
    assert lessons.best_so_far(records, 5) == [None] * 4


def test_the_trials_widget_replays_what_was_run(watched_run):
    _, widget, ran = watched_run
    explorer = widget.explorer
    before = explorer.plot.value
    explorer.menu.value = "random"
    explorer.slider.value = 2
    assert explorer.plot.value != before
    second = lessons.trial_records(ran["random"][1])[1]
    assert f"<td>{second['trial']}</td>" in explorer.table.value
    assert explorer.slider.max == len(explorer.records["random"])


def test_the_budget_widget_returns_what_search_best_returns(lenet, train):
    search = BayesSearch(method="pipeline.hybrid",
                         space={"0.sparsity": (0.6, 0.97), "1.k": [2, 4, 16]},
                         trials=10, startup_trials=4, eval_images=200)
    _, study = search.run(lenet, train, search.open())
    dense = len(codec.encode(lenet))
    paper = lessons.paper_point("pipeline.deep_compression", "lenet300")
    paper_error = PAPER["lenet300"]["error"][1]
    assert (paper["x"], paper["accuracy"]) == (PAPER["lenet300"]["x"],
                                               pytest.approx(1 - paper_error / 100))
    assert paper["label"].startswith("LeNet-300-100: 40x") and "Han et al." in paper["source"]
    widget = lessons.explore_budget(search, study, dense, paper)
    slider, explorer = widget.kwargs_widgets[0], widget.explorer
    assert slider.value == paper["x"]
    for times in (6.0, 20.0, 60.0):
        slider.value = times
        row = explorer.trail[-1]
        budget = dense / times
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        within = [t for t in done if t.user_attrs["bytes"] <= budget]
        assert row["trials within"] == f"{len(within)} of {len(done)}"
        if within:
            assert row["returned: trial"] == search.best(study, budget).number
        else:
            assert row["returned: trial"] == "none fits"


def test_energy_rows_and_the_sram_widget_are_cost_energy(lenet):
    from workbench.prune import Magnitude
    reports = {"dense": measure.report(lenet, latency=False),
               "pruned": measure.report(Magnitude(sparsity=0.95).apply(lenet), latency=False)}
    rows = lessons.energy_rows(reports)
    for row, r in zip(rows, reports.values()):
        bill = cost.energy(r)
        assert row["total uJ"] == round(bill.energy_uj, 4)
        assert row["weights read from"] == bill.memory
    assert [r["weights read from"] for r in rows] == ["dram", "sram"]
    widget = lessons.explore_sram(reports, mark=cost.SRAM_BYTES)
    assert widget.kwargs_widgets[0].value == cost.SRAM_BYTES / 1024    # starts at cost's own size
    assert widget.explorer.trail[0]["rows"] == rows
    widget.kwargs_widgets[0].value = 2048                   # 2 MB: the dense file fits too
    assert [r["weights read from"] for r in widget.explorer.trail[-1]["rows"]] == ["sram", "sram"]
    assert {r["operation"]: r["pJ"] for r in lessons.operation_rows()}[
        "32-bit read from off-chip DRAM"] == cost.DRAM_READ_PJ


def test_deep_compression_rows_hold_the_papers_total_row(lenet, mnist_test_small):
    from workbench.prune import Magnitude
    base = measure.report(lenet, mnist_test_small, latency=False)
    ours = measure.report(Magnitude(sparsity=0.9).apply(lenet), mnist_test_small, latency=False)
    paper, mine = lessons.deep_compression_rows("lenet300", base, ours, {"fc_bits": 4}, "by hand",
                                                0.97)
    total = PAPER["lenet300"]["layers"][-1]
    assert paper["weights kept"] == f"{total[2]}%" and paper["x smaller"] == 40
    assert mine["x smaller"] == round(base.bytes / ours.bytes, 1)
    assert mine["weights kept"] == f"{100 * ours.nonzeros / ours.params:.1f}%"
    assert mine["test error"] == (f"{100 * (1 - base.accuracy):.2f}% -> "
                                  f"{100 * (1 - ours.accuracy):.2f}%")
    assert mine["fc bits"] == 4 and mine["how"] == "by hand; validation accuracy 97.00%"


def _bandit_trial(state, epochs=0, **attrs):
    values = {"values": [attrs["accuracy"]]} if state == TrialState.COMPLETE else {}
    return create_trial(state=state, params={"sparsity": 0.9},
                        distributions={"sparsity": FloatDistribution(0.8, 0.99)},
                        intermediate_values={e: 0.9 for e in range(1, epochs + 1)},
                        user_attrs=attrs, **values)


def test_bandit_rows_say_why_each_trial_stopped():
    budget = 1000
    study = optuna.create_study(direction="maximize")
    study.add_trials([
        _bandit_trial(TrialState.COMPLETE, 4, predicted_bytes=900, accuracy=0.97, bytes=950),
        _bandit_trial(TrialState.PRUNED, 0, predicted_bytes=1200),
        _bandit_trial(TrialState.PRUNED, 2, predicted_bytes=800),
        _bandit_trial(TrialState.PRUNED, 4, predicted_bytes=990, accuracy=0.98, bytes=1100),
        _bandit_trial(TrialState.FAIL, 0, error="diverged")])
    rows = lessons.bandit_rows(study, budget)
    assert [r["why"] for r in rows] == ["-", "file predicted over the budget: never trained",
                                        "stopped by Hyperband after 2 epochs",
                                        "trained, then its file was over the budget", "diverged"]
    assert [r["epochs trained"] for r in rows] == [4, 0, 2, 4, 0]
    # the predicted file and the real one are separate columns: a stopped trial has no real file
    assert [(r["predicted bytes"], r["bytes"]) for r in rows] == [
        (900, 950), (1200, None), (800, None), (990, 1100), (None, None)]
