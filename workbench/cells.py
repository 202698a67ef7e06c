"""Independent jobs ("cells") whose results are cached on disk and can run in parallel.

The survey is a grid of cells (one method on one zoo network, one zoo network's own figures,
one point of a sweep). A cell's result depends only on what goes into it, so it is stored
under a key made of:

- the cell's own parts: which method, its settings, which network, the data subset;
- the network's checkpoint checksum (the zoo manifest's sha256);
- the workbench version: ``__version__`` and a digest of the package's source files, those
  that only present results apart (``PRESENTATION``: lessons, exercises, benches, the report,
  plots, widgets, the command line);
- for a cell that times networks, the machine (``machine()``): a timing is reused only on
  the machine, core count and torch version that measured it.

Why the source digest: the result of a cell goes through the codec, the trainer and the
measurements as well as the method's own module, so after any edit to a module that
computes, every cell is computed again. A changed setting or a retrained checkpoint
recomputes only the cells it enters. Results are small JSON files, one per cell, written
atomically; a file that cannot be read is treated as missing (and said so) rather than
trusted.

``run(jobs, compute, workers)`` computes cells in ``workers`` processes, each with
``cores // workers`` torch threads so that the processes do not fight over the cores, with one
progress bar for the whole run.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import torch
from tqdm.auto import tqdm

PACKAGE = Path(__file__).resolve().parent
# Modules that only show, teach or time what the library computes: no cell's result goes
# through them, so editing a lesson, a bench or the report's layout recomputes nothing.
PRESENTATION = ("lessons/", "exercises/", "bench/", "lesson_runner.py", "browser.py",
                "widgets.py", "plots.py", "survey_report.py", "__main__.py",
                "search/command.py")


def computing_sources() -> list[Path]:
    """The package's ``.py`` files that a cell's result can depend on."""
    return [p for p in sorted(PACKAGE.rglob("*.py"))
            if not p.relative_to(PACKAGE).as_posix().startswith(PRESENTATION)]


@lru_cache(maxsize=1)
def code_version() -> str:
    """``__version__`` plus a digest of every ``.py`` file of the package a result can depend
    on (path and bytes)."""
    from . import __version__
    digest = hashlib.sha256()
    for path in computing_sources():
        digest.update(str(path.relative_to(PACKAGE)).encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"


def machine() -> dict:
    """What a timing depends on beyond the code: this machine, its cores, torch's version.
    Cells that time networks carry it, so that their timings are reused only here."""
    return {"node": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__}


def canonical(value):
    """A JSON-ready copy in which tuples are lists and mapping keys are sorted strings."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def cell_key(parts: dict) -> str:
    """The cache key of a cell: a sha256 of its parts and the code version, as JSON. Parts
    whose name starts with "_" are inputs that other parts already determine (a base
    network's figures follow from its checksum) and stay out of the key."""
    keyed = {k: v for k, v in parts.items() if not k.startswith("_")}
    text = json.dumps(canonical({**keyed, "code": code_version()}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class Cache:
    """Results by key, one JSON file each under ``root`` (``None``: nothing is kept)."""

    def __init__(self, root: str | Path | None):
        self.root = None if root is None else Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str):
        if self.root is None or not self.path(key).exists():
            return None
        try:
            return json.loads(self.path(key).read_text())["result"]
        except (OSError, ValueError, KeyError) as err:
            warnings.warn(f"cache file {self.path(key)} is unreadable ({err}); computing the "
                          "cell again", stacklevel=2)
            return None

    def put(self, key: str, parts: dict, result) -> None:
        if self.root is None:
            return
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        keyed = {k: v for k, v in parts.items() if not k.startswith("_")}
        tmp.write_text(json.dumps({"parts": canonical(keyed), "code": code_version(),
                                   "result": result}, indent=1))
        os.replace(tmp, path)       # a reader never sees half a file


def _worker_setup(threads: int) -> None:
    torch.set_num_threads(threads)
    from .train import quiet
    quiet().__enter__()         # one progress bar for the run, not one per training


def run(jobs: list[dict], compute, cache: Cache, workers: int = 1, finish=None,
        label: str = "cells", cost=None) -> tuple[list, dict]:
    """Results of ``compute(job)`` for every job (dicts of plain values, the cell's parts),
    from ``cache`` where present. ``compute`` must be a module-level function (it is sent to
    worker processes). ``finish(job, result)``, if given, turns a computed result into the one
    kept; it runs in this process, one cell after another, once every worker has stopped
    (the survey times networks there, on a machine with nothing else running). Returns the
    results in the order of ``jobs`` and the counts ``{"computed": n, "cached": m}``.
    ``cost(job)``, if given, estimates a cell's time: the costliest cells start first, so
    that the run does not end with one long cell computing alone while the other workers wait.

    When a cell fails, the cells not started are cancelled, those already computed are still
    finished and kept, and a RuntimeError names the failed cell (its cause chained)."""
    if workers < 1:
        raise ValueError(f"workers={workers}; allowed: 1 or more")
    keys = [cell_key(job) for job in jobs]
    results = [cache.get(k) for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    if cost is not None:
        todo.sort(key=lambda i: -cost(jobs[i]))      # stable: equal costs keep their order
    done, failure = [], None
    with tqdm(total=len(todo), desc=label, file=sys.stderr, disable=not todo) as bar:
        try:
            for i, result in _computed(jobs, todo, compute, workers):
                results[i] = result
                done.append(i)
                if finish is None:      # kept at once: a later failure loses nothing
                    cache.put(keys[i], jobs[i], result)
                bar.update()
        except CellFailed as err:
            failure = err
    if finish is not None:
        for i in done:
            results[i] = finish(jobs[i], results[i])
            cache.put(keys[i], jobs[i], results[i])
    if failure is not None:
        job = {k: v for k, v in jobs[failure.index].items() if not k.startswith("_")}
        raise RuntimeError(f"{label}: the cell {json.dumps(canonical(job))} failed: "
                           f"{type(failure.cause).__name__}: {failure.cause}") \
            from failure.cause
    return results, {"computed": len(todo), "cached": len(jobs) - len(todo)}


class CellFailed(Exception):
    def __init__(self, index: int, cause: BaseException):
        super().__init__(index, cause)
        self.index, self.cause = index, cause


def _computed(jobs, todo, compute, workers):
    """(index, result) of each job in ``todo``, as they finish; CellFailed on the first
    failure, after cancelling the cells not started."""
    if workers == 1 or len(todo) < 2:
        for i in todo:
            try:
                result = compute(jobs[i])
            except Exception as err:
                raise CellFailed(i, err) from err
            yield i, result
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = torch.multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, initializer=_worker_setup, initargs=(threads,),
                             mp_context=context) as pool:
        futures = {pool.submit(compute, jobs[i]): i for i in todo}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as err:
                pool.shutdown(wait=True, cancel_futures=True)
                raise CellFailed(futures[future], err) from err
            yield futures[future], result
