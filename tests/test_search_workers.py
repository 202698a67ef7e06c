"""Two worker processes (the real command, started twice) on one study record every trial
exactly once: trial numbers 0..N-1, N in all, no two with the same settings. Run on a journal
file (one machine) and on a PostgreSQL server (several machines), the latter from the
``postgres_url`` fixture of conftest.py, skipped with its reason where there is none."""
from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from workbench.search import open_storage

TRIALS = 8


@pytest.fixture(params=["journal", "postgres"])
def storage(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "study.journal")
    try:
        return request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_url fixture in tests/conftest.py (a PostgreSQL server)")


def worker(k: int, storage: str, out) -> subprocess.Popen:
    command = [sys.executable, "-m", "workbench", "search", "pipeline.hybrid",
               "--model", "lenet300", "--sampler", "random", "--trials", str(TRIALS),
               "--space", "0.sparsity=(0.5, 0.95)", "1.k=(4, 64)", "--smoke",
               "--storage", storage, "--study", "two-workers", "--worker", str(k),
               "--out", str(out / f"worker{k}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_two_workers_record_every_trial_exactly_once(storage, tmp_path):
    workers = [worker(k, storage, tmp_path) for k in (0, 1)]
    for process in workers:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    study = optuna.load_study(study_name="two-workers", storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(TRIALS))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    settings = {tuple(sorted(t.params.items())) for t in trials}
    assert len(settings) == TRIALS
    # each trial is marked with the worker that ran it; both workers ended normally
    assert {t.user_attrs["worker"] for t in trials} <= {0, 1}
    assert all((tmp_path / f"worker{k}" / "pareto.png").exists() for k in (0, 1))
