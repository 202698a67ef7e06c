"""bench search_deep_compression: the workers' command lines carry the search's settings
exactly, and a smoke row reports the network the study chose, applied again from its
settings, with its own file size and test error (no pass mark claimed in smoke)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

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


def test_a_smoke_row_is_the_chosen_network_measured_again():
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
    # whose printed command has no held-out images; the trial itself was run again and
    # checked to have its recorded bytes
    assert row["refits"][-1] == {"trial": row["trial"], "bytes": row["bytes"],
                                 "x_smaller": row["x_smaller"]}
    command = shlex.split(row["reproduce"])
    assert command[0] == "OMP_NUM_THREADS=1" and command[-1] == "--smoke"
    assert "--holdout" not in command and "--clean-base" not in command
    assert parse_pairs(command[command.index("--set") + 1:-1], "--set") == row["settings"]
    assert row["search_s"] == pytest.approx(row["trials_span_s"] + row["refit_s"], abs=0.2)
