"""bench search_deep_compression: the workers' command lines carry the search's settings
exactly; the refit loop reports the first refit that fits the budget, checks each trial again
and stops after ``REFITS``; a smoke row reports the chosen settings refitted, with their own
file size and test error (no pass mark claimed in smoke)."""
from __future__ import annotations

import shlex
from pathlib import Path

import optuna
import pytest
from optuna.distributions import IntDistribution

from workbench import zoo
from workbench.bench import search_deep_compression as bench
from workbench.search.command import parse_pairs


def test_the_worker_command_carries_the_fixed_settings_and_the_space():
    search = bench.search_for("lenet5", smoke=False)
    command = bench.worker_command(search, "lenet5", 1, Path("/tmp/s/study.journal"), "dc",
                                   80, smoke=False)
    fixed = command[command.index("--set") + 1:command.index("--space")]
    space = command[command.index("--space") + 1:command.index("--eval-images")]
    assert parse_pairs(fixed, "--set") == search.fixed
    assert parse_pairs(space, "--space") == search.space
    assert command[command.index("--worker") + 1] == "1"
    assert float(command[command.index("--budget") + 1]) == pytest.approx(1 / 100)
    assert command[command.index("--minutes") + 1] == "80"
    assert "--clean-base" in command and "--smoke" not in command
    smoke = bench.worker_command(bench.search_for("lenet5", smoke=True), "lenet5", 0,
                                 Path("/tmp/s/study.journal"), "dc", 1, smoke=True)
    assert "--smoke" in smoke and "--clean-base" not in smoke


def test_a_smoke_row_is_the_chosen_settings_refitted_and_measured():
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    row = bench.model_row("lenet300", smoke=True)
    assert row["met"] is None and row["workers_failed"] == []
    assert row["trials"] == row["complete"] == 2          # both workers shared the 2 trials
    assert 0 < row["trials_span_s"] <= row["wall_s"]
    assert row["x_smaller"] == round(row["dense_bytes"] / row["bytes"], 1)
    assert row["x_smaller"] >= bench.SMOKE_X              # within the smoke budget
    assert 0 <= row["test_error_pct"] <= 100
    assert {k: row["settings"][k] for k in bench.search_for("lenet300", True).fixed} \
        == bench.search_for("lenet300", True).fixed
    # the file reported is the refit: the chosen settings on all the (smoke) training images,
    # whose printed command has no held-out images; the trial itself was run again and had
    # its recorded bytes
    assert row["refits"][-1]["trial"] == row["trial"]
    assert row["refits"][-1]["bytes"] == row["bytes"]
    command = shlex.split(row["reproduce"])
    assert command[0] == "OMP_NUM_THREADS=1" and command[-1] == "--smoke"
    assert "--holdout" not in command and "--clean-base" not in command
    assert parse_pairs(command[command.index("--set") + 1:-1], "--set") == row["settings"]
    again = shlex.split(row["reproduce_trial"])
    assert again[again.index("--holdout") + 1] == str(bench.search_for("lenet300", True)
                                                     .eval_images)


def fake_study(trials: list[tuple[float, int]]):
    """A study of complete trials, each (validation accuracy, recorded bytes); trial k has
    fc_bits=k+2, which tells the fake reproduce below whose command it runs."""
    study = optuna.create_study(direction="maximize")
    for k, (accuracy, size) in enumerate(trials):
        study.add_trial(optuna.trial.create_trial(
            params={"fc_bits": k + 2}, distributions={"fc_bits": IntDistribution(2, 8)},
            values=[accuracy], user_attrs={"bytes": size}))
    return study


def fake_reproduced(study, refit_bytes: dict, trial_bytes: dict | None = None):
    """``bench.reproduced`` without processes: [refit, trial again] of one trial; the refit of
    trial k writes refit_bytes[k], the trial again its recorded bytes (or trial_bytes[k])."""
    calls = []

    def reproduced(commands):
        refit, again = commands
        assert "--holdout" not in refit and "--holdout" in again
        k = int(next(w for w in refit if w.startswith("fc_bits="))[8:]) - 2
        calls.append(k)
        return [{"final_bytes": refit_bytes[k], "err_pct": 1.0},
                {"final_bytes": (trial_bytes or {}).get(k, study.trials[k].user_attrs["bytes"]),
                 "err_pct": 1.1}]
    return reproduced, calls


@pytest.mark.parametrize("refit_bytes, chosen, tried", [
    ({0: 90}, 0, [0]),                          # the best trial's refit fits
    ({0: 120, 2: 95}, 2, [0, 2]),               # it misses: the next best by validation
    ({0: 120, 2: 130, 1: 140}, None, [0, 2, 1]),  # none of REFITS fits: no file reported
])
def test_the_refit_loop_takes_the_next_trial_while_a_refit_misses(monkeypatch, tmp_path,
                                                                   refit_bytes, chosen, tried):
    # validation accuracy and recorded bytes; the budget is 100 bytes, trial 3 is over it
    study = fake_study([(0.99, 95), (0.97, 90), (0.98, 99), (0.995, 150), (0.96, 80)])
    reproduced, calls = fake_reproduced(study, refit_bytes)
    monkeypatch.setattr(bench, "reproduced", reproduced)
    search = bench.search_for("lenet300", smoke=True)
    found = bench.refit(search, "lenet300", study, 100, 1000, True, tmp_path)
    assert calls == [r["trial"] for r in found["refits"]] == tried
    assert len(tried) <= bench.REFITS == 3          # trial 4 is never refitted
    assert (found["trial"].number if found["trial"] else None) == chosen
    if chosen is not None:
        assert found["summary"]["final_bytes"] == refit_bytes[chosen]
        assert found["settings"] == {**search.fixed, "fc_bits": chosen + 2}


def test_a_trial_that_does_not_reproduce_its_bytes_is_an_error(monkeypatch, tmp_path):
    study = fake_study([(0.99, 95)])
    reproduced, _ = fake_reproduced(study, {0: 90}, trial_bytes={0: 96})
    monkeypatch.setattr(bench, "reproduced", reproduced)
    with pytest.raises(RuntimeError, match="trial 0 recorded 95 bytes; reproduce wrote 96"):
        bench.refit(bench.search_for("lenet300", smoke=True), "lenet300", study, 100, 1000,
                    True, tmp_path)
