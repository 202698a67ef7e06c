"""Where a study lives, how workers share it, and what it found.

``open_storage(where)``: None is an in-memory study (what ``Search.apply`` uses); a URL with
``://`` is a database through ``optuna.storages.RDBStorage`` (``postgresql://...`` for workers on
several machines, ``sqlite:///...``); anything else is a path to a journal file
(``JournalStorage`` + ``JournalFileBackend``, the command's default ``OUT/study.journal``). Do
not point several workers at SQLite: it breaks under parallel writers; the journal file is the
store for one machine, a database server the store across machines.

``open_study(..., mode)``: "new" refuses a name that exists, "resume" continues one (its trials
left RUNNING by the interrupted run are marked FAIL and redone), "join" is a worker: it creates
the study or joins it.

``run_trials`` runs trials until the study holds ``n_trials`` trials that are complete, pruned,
failed by the method's own error (a setting it refuses: such a trial would fail again) or still
running in some worker, or until its deadline (a search with a time budget; each
worker has its own, and a trial running at it ends). Counting and starting a trial happen
under one lock (a file lock beside the journal or SQLite file, an advisory lock on
PostgreSQL), so several workers started together record exactly ``n_trials`` trials, numbered
0..n_trials-1. Optuna's ``MaxTrialsCallback`` counts only finished trials: workers finishing
together each start one more and the study overshoots by up to one trial per worker, which is
why it is not used here.
"""
from __future__ import annotations

import contextlib
import fcntl
import time
import zlib
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MODES = ("new", "resume", "join")
SCHEMA_LOCK = zlib.crc32(b"workbench-search-schema")

optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(where: str | Path | None):
    if where is None:
        return optuna.storages.InMemoryStorage()
    where = str(where)
    if "://" in where:
        return database(where)
    path = Path(where).expanduser()
    if not path.parent.is_dir():
        raise ValueError(f"storage {where!r}: the folder {path.parent} does not exist; allowed "
                         "is a journal file in an existing folder or a database URL")
    return JournalStorage(JournalFileBackend(str(path)))


def database(url: str):
    """``RDBStorage(url)``; an unreachable or malformed URL is a user's error (one line)."""
    import importlib.util

    import sqlalchemy
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; psycopg2 is what we install
        url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    try:
        if not url.startswith("postgres"):
            return optuna.storages.RDBStorage(url)
        # Workers that open a fresh database together would all create Optuna's tables and
        # all but one fail (a duplicate alembic_version table): one at a time.
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"),
                                   {"k": SCHEMA_LOCK})
                try:
                    return optuna.storages.RDBStorage(url)
                finally:
                    connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"),
                                       {"k": SCHEMA_LOCK})
        finally:
            engine.dispose()
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"storage {url.split('@')[-1]!r}: cannot open the database ({first}); "
                         "allowed is a reachable database URL such as "
                         "postgresql://user@host:5432/name or sqlite:///path") from None


def open_study(storage, name: str, directions: list[str], sampler, pruner=None,
               mode: str = "new") -> optuna.Study:
    """The study ``name`` in ``storage`` (see the module docstring for ``mode``)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: allowed is one of {MODES}")
    exists = name in optuna.get_all_study_names(storage)
    if mode == "new" and exists:
        raise ValueError(f"study {name!r} exists already in {where_of(storage)}; allowed: "
                         "--resume to continue it, --study NAME for a new one")
    if mode == "resume" and not exists:
        raise ValueError(f"study {name!r} is not in {where_of(storage)}: nothing to resume; "
                         "allowed: start it without --resume")
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != list(directions):
        raise ValueError(f"study {name!r} was started with other objectives "
                         f"({[d.name.lower() for d in study.directions]}); allowed: the same "
                         "objectives, or another --study NAME")
    if mode == "resume":
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
    return study


def where_of(storage) -> str:
    if isinstance(storage, JournalStorage):
        return f"the journal {storage._backend._file_path}"
    if isinstance(storage, optuna.storages.RDBStorage):
        return f"the database {storage.url.split('@')[-1]}"
    return "memory"


@contextlib.contextmanager
def exclusive(study: optuna.Study, name: str):
    """A lock that every worker of the study takes around counting and starting a trial."""
    storage = study._storage
    if type(storage).__name__ == "_CachedStorage":     # Optuna's cache around an RDBStorage
        storage = storage._backend
    if isinstance(storage, JournalStorage):
        with _file_lock(Path(storage._backend._file_path)):
            yield
    elif isinstance(storage, optuna.storages.RDBStorage) and storage.url.startswith("sqlite"):
        with _file_lock(Path(storage.url.split("///", 1)[-1])):
            yield
    elif isinstance(storage, optuna.storages.RDBStorage) and storage.url.startswith("postgres"):
        from sqlalchemy import text
        key = zlib.crc32(f"workbench-search-{name}".encode())
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    else:           # in memory: one process
        yield


@contextlib.contextmanager
def _file_lock(path: Path):
    # not "<file>.lock": Optuna's own journal lock is a symlink of that name
    with open(path.with_name(path.name + ".trials.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_trials(study: optuna.Study, evaluate, n_trials: int, errors=(ValueError,),
               deadline: float | None = None) -> None:
    """Ask, evaluate, tell until the study holds ``n_trials`` counted trials, or until
    ``time.monotonic()`` passes ``deadline`` (no trial starts after it; the one running ends).

    ``evaluate(trial)`` returns the objective values or raises ``optuna.TrialPruned``; an
    error of ``errors`` (a setting the searched method refuses, a diverged training) fails
    the trial, with its message in the trial's user attributes, and the search goes on."""
    while True:
        with exclusive(study, study.study_name):
            # the clock is read under the lock: waiting for another worker's ask takes time
            late = deadline is not None and time.monotonic() >= deadline
            if late or counted(study) >= n_trials:
                return
            trial = study.ask()
        try:
            values = evaluate(trial)
        except optuna.TrialPruned:
            _tell(study, trial, state=TrialState.PRUNED)
        except errors as err:
            trial.set_user_attr("error", " ".join(str(err).split()))
            _tell(study, trial, state=TrialState.FAIL)
        except BaseException:
            _tell(study, trial, state=TrialState.FAIL)
            raise
        else:
            _tell(study, trial, values=values)


def counted(study: optuna.Study) -> int:
    """The trials that count towards ``n_trials``: complete, pruned, running or waiting, and
    failed with an error message (the method refused its settings or its training diverged:
    redone, it would fail again, and a space of refused settings would loop forever). A trial
    that failed without a message, one a dead worker left running that ``--resume`` marked
    failed, does not count: it is redone."""
    return sum(t.state in COUNTED or (t.state == TrialState.FAIL and "error" in t.user_attrs)
               for t in study.get_trials(deepcopy=False))


def _tell(study, trial, **kwargs) -> None:
    try:
        study.tell(trial, **kwargs)
    except RuntimeError:
        # GridSampler asks the study to stop once the grid is done; outside study.optimize
        # Optuna refuses with RuntimeError after storing the trial. The grid search stops at
        # the grid's size anyway (Search.n_trials).
        if not isinstance(study.sampler, optuna.samplers.GridSampler):
            raise


def finished(study: optuna.Study) -> list:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
