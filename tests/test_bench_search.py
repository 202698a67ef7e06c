"""bench search_samplers: "trials to reach" is read from the study's own trials (pruned and
failed trials spent too), the threshold comes from the task's own grid, the smoke rows are
honest (no pass mark claimed), and the two-worker span is read from the trials' times."""
from __future__ import annotations

import datetime

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from workbench import codec, data, zoo
from workbench.bench import search_samplers as bench

BUDGET = 1000.0


def frozen(state, accuracy=None, size=None, start=0.0, end=1.0):
    base = datetime.datetime(2026, 1, 1)
    attrs = {} if accuracy is None else {"accuracy": accuracy, "bytes": size}
    trial = create_trial(state=state, value=accuracy if state == TrialState.COMPLETE else None,
                         params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
                         user_attrs=attrs)
    trial.datetime_start = base + datetime.timedelta(seconds=start)
    trial.datetime_complete = base + datetime.timedelta(seconds=end)
    return trial


def study_of(trials) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for trial in trials:
        study.add_trial(trial)
    return study


def test_trials_to_reach_counts_every_spent_trial_from_the_study():
    study = study_of([
        frozen(TrialState.COMPLETE, 0.99, 2000),    # accurate but over budget
        frozen(TrialState.PRUNED),                  # spent, never meets
        frozen(TrialState.FAIL),                    # spent, never meets
        frozen(TrialState.COMPLETE, 0.90, 900),     # within budget, below threshold
        frozen(TrialState.COMPLETE, 0.95, 1000),    # the first to meet both (bytes == budget)
        frozen(TrialState.COMPLETE, 0.97, 500),
    ])
    assert bench.trials_to_reach(study, 0.95, BUDGET) == 5
    assert bench.trials_to_reach(study, 0.96, BUDGET) == 6
    assert bench.trials_to_reach(study, 0.98, BUDGET) is None     # only over budget
    assert bench.trials_to_reach(study, 0.98, 2000.0) == 1


def test_study_span_is_first_start_to_last_end(tmp_path):
    from workbench.search import open_storage
    storage = open_storage(tmp_path / "study.journal")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for start, end in ((0.0, 2.0), (1.0, 5.5), (3.0, 4.0)):
        trial = frozen(TrialState.COMPLETE, 0.9, 10, start, end)
        trial.user_attrs["worker"] = int(start) % 2
        study.add_trial(trial)
    span, workers = bench.study_span(tmp_path, "s", 3)
    assert span == pytest.approx(5.5)
    assert sorted(workers) == [0, 1, 1]
    with pytest.raises(RuntimeError, match="not 0..3"):
        bench.study_span(tmp_path, "s", 4)


@pytest.fixture(scope="module")
def smoke_rows():
    model = zoo.pretrained("lenet300")
    return bench.sampler_rows(model, data.load("mnist", "train"), smoke=True), model


def test_smoke_rows_are_the_samplers_with_an_honest_threshold(smoke_rows):
    rows, model = smoke_rows
    plain, tuned = bench.tasks(smoke=True)
    first = [r for r in rows if r["task"].startswith(plain.name)]
    second = [r for r in rows if r["task"].startswith(tuned.name)]
    assert [r["sampler"] for r in first] == list(bench.SAMPLERS)
    assert [r["sampler"] for r in second] == ["tpe", "hyperband"]
    dense = len(codec.encode(model))
    for row in rows:
        assert row["met"] is None                              # a comparison, and smoke
        assert row["dense_bytes"] == dense
        assert row["budget_bytes"] == round(bench.BUDGET * dense)
        # the threshold is the grid's best point within budget less the margin ...
        assert row["threshold"] == pytest.approx(row["grid_best_acc"] - bench.MARGIN, abs=1e-4)
        # ... so some grid points meet it, and not every one (else the task were trivial)
        assert 0 < row["grid_share_meeting"] < 1
        reach = row["trials_to_reach"]
        best = row["best_acc_within_budget"]
        if reach is None:
            assert best is None or best < row["threshold"]
            assert row["result"] == f"not reached in {row['trials']} trials"
        else:
            assert 1 <= reach <= row["trials"] and best >= row["threshold"]
            assert row["result"] == f"reached in {reach} of {row['trials']} trials"
    assert all(1 <= r["trials"] <= plain.trials and r["grid_points"] == 4 for r in first)
    assert first[-1]["epochs_spent"] == 0                  # no training: nothing to prune on
    # TPE trains every complete trial fully; Hyperband spends at most as much
    tpe, hyperband = second
    assert tpe["epochs_spent"] == tuned.epochs * (tpe["trials"] - tpe["pruned"] - tpe["failed"])
    assert hyperband["epochs_spent"] <= tuned.epochs * hyperband["trials"]
    # one seed, one validation split per task: the same oracle for each sampler of a task
    for group in (first, second):
        assert len({(r["threshold"], r["grid_share_meeting"]) for r in group}) == 1


def test_the_grid_oracle_is_the_point_applied_again(smoke_rows):
    from workbench.search import holdout
    from workbench.search import space as spaces
    from workbench.train import evaluate, quiet
    rows, model = smoke_rows
    plain = bench.tasks(smoke=True)[0]
    part, val = holdout(data.load("mnist", "train").subset(plain.images, seed=0),
                        plain.eval_images, 0)
    budget = bench.BUDGET * len(codec.encode(model))
    point = rows[0]["grid_best_point"]
    assert set(point) == set(plain.space)
    with quiet():
        best = spaces.build(bench.TASK, point).apply(model, part)
        over = spaces.build(bench.TASK, {"0.sparsity": 0.5, "1.k": 64}).apply(model, part)
    assert len(codec.encode(best)) <= budget
    assert evaluate(best, val) == pytest.approx(rows[0]["grid_best_acc"], abs=1e-4)
    assert len(codec.encode(over)) > budget            # the budget is a real constraint
