"""The throwaway PostgreSQL server of ``postgres_server.py`` and two Optuna workers on one study.

The worker test runs two real processes on one study, once on PostgreSQL (``RDBStorage``) and
once on Optuna's journal file (the embedded store for one machine), and checks from the stored
study that every trial was recorded exactly once.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import postgres_server
import pytest
from optuna.trial import TrialState

TRIALS = 24  # MaxTrialsCallback's budget; a few more may finish while the last ones run
WORKERS = 2

# One worker: open the study, wait until every worker is ready (so both really run at once),
# then optimize until the study holds TRIALS finished trials.
WORKER = """
import pathlib, sys, time
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

kind, where, name, worker, seed, barrier, workers, trials = sys.argv[1:]
optuna.logging.set_verbosity(optuna.logging.WARNING)
if kind == "postgres":
    storage = optuna.storages.RDBStorage(where)
else:
    storage = JournalStorage(JournalFileBackend(where))
study = optuna.load_study(study_name=name, storage=storage,
                          sampler=optuna.samplers.RandomSampler(seed=int(seed)))
pathlib.Path(barrier, worker).touch()
deadline = time.monotonic() + 30
while len(list(pathlib.Path(barrier).iterdir())) < int(workers):
    if time.monotonic() > deadline:
        sys.exit("the other worker never became ready")
    time.sleep(0.02)

def objective(trial):
    trial.set_user_attr("worker", worker)
    x = trial.suggest_float("x", -10.0, 10.0)
    n = trial.suggest_int("n", 0, 1000)
    time.sleep(0.01)  # a trial that takes a moment, so the workers interleave
    return (x - 2.0) ** 2 + n

stop = MaxTrialsCallback(int(trials), states=(TrialState.COMPLETE, TrialState.PRUNED))
study.optimize(objective, n_trials=10 * int(trials), callbacks=[stop])
"""


def test_postgres_url_is_a_live_local_database(postgres_url):
    psycopg2 = pytest.importorskip("psycopg2")
    assert postgres_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    connection = psycopg2.connect(postgres_server.libpq_dsn(postgres_url))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE probe (k int PRIMARY KEY, v text)")
            cursor.execute("INSERT INTO probe VALUES (1, 'one'), (2, 'two')")
            cursor.execute("SELECT v FROM probe ORDER BY k")
            assert [row[0] for row in cursor.fetchall()] == ["one", "two"]
            cursor.execute("SELECT current_database(), current_setting('listen_addresses')")
            assert cursor.fetchone() == ("workbench", "127.0.0.1")
    finally:
        connection.close()


def require_server():
    reason = postgres_server.missing_reason()
    if reason:
        pytest.skip(reason)


def test_second_server_runs_beside_and_vanishes_on_exit(postgres_url):
    # A second server beside the session's one is what two pytest-xdist workers do: each its
    # own folder and port, neither disturbing the other.
    import psycopg2

    with postgres_server.running_server() as server:
        url = postgres_server.libpq_dsn(server.url)
        assert url != postgres_server.libpq_dsn(postgres_url)
        for each in (url, postgres_server.libpq_dsn(postgres_url)):
            psycopg2.connect(each).close()
        assert (server.root / "data" / "postmaster.pid").exists()
        if os.geteuid() == 0:  # initdb refuses root: the data belong to the service user
            assert (server.root / "data").stat().st_uid != 0
    assert not server.root.exists()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(url, connect_timeout=3).close()
    psycopg2.connect(postgres_server.libpq_dsn(postgres_url)).close()  # the other still runs


def test_broken_server_fails_with_its_log(monkeypatch):
    require_server()
    real_initdb = postgres_server._initdb

    def initdb_then_spoil(bindir, root):
        real_initdb(bindir, root)
        with open(root / "data" / "postgresql.conf", "a") as conf:
            conf.write("\nno_such_setting_wb = 1\n")

    monkeypatch.setattr(postgres_server, "_initdb", initdb_then_spoil)
    with (pytest.raises(postgres_server.ServerFailed, match="no_such_setting_wb") as failure,
          postgres_server.running_server()):
        pass
    assert "server log" in str(failure.value)


def test_missing_binaries_give_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres_server.glob, "glob", lambda pattern: [])
    reason = postgres_server.missing_reason()
    assert reason.startswith("PostgreSQL server not available:")
    assert "apt-get install -y postgresql" in reason
    with pytest.raises(postgres_server.ServerUnavailable), postgres_server.running_server():
        pass


def test_binaries_found_without_path(monkeypatch, tmp_path):
    # A clean Debian machine has initdb only in /usr/lib/postgresql/<major>/bin.
    monkeypatch.setenv("PATH", str(tmp_path))
    found = postgres_server.find_bindir()
    if found is None:
        pytest.skip("no /usr/lib/postgresql/*/bin on this machine")
    assert found.parent.parent == postgres_server.Path("/usr/lib/postgresql")
    for program in postgres_server.SERVER_PROGRAMS:
        assert os.access(found / program, os.X_OK)


def run_workers(kind: str, where: str, name: str, barrier) -> None:
    barrier.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen([sys.executable, "-c", WORKER, kind, where, name, f"w{i}", str(i + 1),
                          str(barrier), str(WORKERS), str(TRIALS)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(WORKERS)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"worker failed:\n{out}\n{err}"


@pytest.mark.parametrize("kind", ["postgres", "journal"])
def test_two_workers_record_every_trial_once(kind, request, tmp_path):
    if kind == "postgres":
        where = request.getfixturevalue("postgres_url")
        storage = optuna.storages.RDBStorage(where)
    else:
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        where = str(tmp_path / "study.log")
        storage = JournalStorage(JournalFileBackend(where))
    name = f"two-workers-{kind}-{time.time_ns()}"  # the database outlives this test
    optuna.create_study(study_name=name, storage=storage, direction="minimize")

    run_workers(kind, where, name, tmp_path / "barrier")

    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))), "trial numbers have gaps or duplicates"
    assert len(trials) >= TRIALS
    # At most one extra trial per other worker: each may start one before seeing the budget met.
    assert len(trials) <= TRIALS + WORKERS - 1
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Workers' samplers have different seeds: a trial recorded twice would repeat its params.
    assert len({(t.params["x"], t.params["n"]) for t in trials}) == len(trials)
    for t in trials:
        assert t.value == pytest.approx((t.params["x"] - 2.0) ** 2 + t.params["n"])
    by_worker = {w: sum(t.user_attrs["worker"] == w for t in trials) for w in ("w0", "w1")}
    assert all(count > 0 for count in by_worker.values()), by_worker
