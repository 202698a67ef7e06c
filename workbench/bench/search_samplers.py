"""``python -m workbench bench search_samplers``: random, grid, TPE and Hyperband on one task,
and two worker processes against one on the same study.

Targets (issue 14): "trials needed by random, grid, TPE and Hyperband to reach a stated accuracy
at a stated byte budget, over 3 seeds"; "two workers on one study take about half the wall
time of one (measured, same trials)".

The first task: ``pipeline.hybrid`` of ``prune.magnitude`` then ``quant.kmeans`` on the zoo
LeNet-300-100, no training, so a trial costs well under a second. Searched: ``0.sparsity`` on a
0.01 grid and ``1.k`` among powers of two; one objective, validation accuracy (held-out
training images, as every search measures), at a byte budget of ``BUDGET`` of the dense file.

The threshold. The zoo network trained on these images, so the dense network classifies
(nearly) all of them right, and "close to dense" is out of reach at this budget without
retraining. The threshold is instead taken from the task itself: every point of the grid is
applied once (the oracle), and the threshold is the best accuracy of a point within the budget
less ``MARGIN``. It is thus reachable by construction, and rare (the row says which share of
the grid meets it): a search must find one of the few best files, not any file that fits.
The validation split is drawn from the search's seed, so the oracle runs once per seed, on
that seed's split.

Trials to reach: the number of the first trial of the study (counting from 1, pruned and failed
trials included) whose recorded accuracy and bytes meet both, read from the study's trials.
A TPE search of one objective sees accuracy only; the budget enters as the selection of the
best trial, not as a constraint the sampler knows about.

Hyperband prunes by training epochs; the first task trains none, so on it ``search.bandit`` is
TPE whose over-budget trials are pruned before they are measured (epochs spent 0, said in the
row). Hence a second task, for TPE and Hyperband only: the same chain with
``quant.trained_kmeans`` (centroids fine-tuned 2 epochs) on a 3000-image training subset (1000
of them the validation split), a coarser grid, its own oracle and threshold by the same rule.
There the row also counts the epochs spent: Hyperband's reports (one per epoch trained), the
epochs of every complete trial for TPE.

Two workers: the real command (``python -m workbench search ... --worker K``), one process on a
study of ``WORKER_TRIALS`` trials, then two processes together on another study of as many, in a
journal file of a temporary folder, each with one torch thread. Its task is the chain with
trained k-means (``trained_steps``), so that a trial lasts seconds rather than a fraction of
one. Wall time covers the whole
processes (start-up, data, the test accuracy of the front and its figure, which each worker
does on its own); the trials' own span (first start to last end, from the study) is beside it.
The measurement needs two idle cores: with a 1-minute load above ``cores - 2 + 0.5`` before
the run, the row says busy and leaves ``met`` empty.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

TASK = "pipeline.hybrid"
MODEL = "lenet300"
SPACE = {"0.sparsity": (0.70, 0.92, 0.01), "1.k": [2, 4, 8, 16, 32, 64]}
BUDGET = 1 / 25          # share of the dense file
MARGIN = 0.01            # threshold: best point of the grid within budget, less one point
SEEDS = (0, 1, 2)
SAMPLERS = ("random", "grid", "tpe", "hyperband")
# The bench's two-worker study trains in each trial (k-means centroids fine-tuned on all the
# training images but the held-out ones) so that a trial takes seconds: with the untrained
# task's sub-second trials, each process's fixed start-up would hide what a second worker saves.
WORKER_TRIALS = 24
WORKER_EPOCHS = {False: 2, True: 1}          # smoke -> epochs of the k-means fine-tune


def trained_steps(epochs: int) -> dict:
    """The fixed settings of the chain whose k-means centroids train ``epochs`` epochs."""
    return {"steps": (("prune.magnitude", {}), ("quant.trained_kmeans", {"epochs": epochs}))}
WORKER_TARGET = 0.6      # "about half": two workers' wall time at most 0.6 of one worker's


@dataclass(frozen=True)
class Task:
    """One search task: the chain's fixed steps, the space, who searches it, how long."""
    name: str
    fixed: dict
    space: dict
    samplers: tuple
    trials: int
    images: int | None          # a training subset (None: all 60000)
    eval_images: int
    epochs: int = 0             # training epochs of one full trial


def tasks(smoke: bool) -> list[Task]:
    tuned = {"steps": (("prune.magnitude", {}), ("quant.trained_kmeans", {"epochs": 2}))}
    if smoke:
        return [Task("prune>kmeans, no training", {},
                     {"0.sparsity": (0.80, 0.90, 0.10), "1.k": [2, 8]}, SAMPLERS, 3, 3000,
                     500),
                Task("prune>trained kmeans, 1 epoch", {"steps": (("prune.magnitude", {}), (
                    "quant.trained_kmeans", {"epochs": 1}))},
                     {"0.sparsity": (0.80, 0.90, 0.10), "1.k": [2, 8]}, ("tpe", "hyperband"),
                     3, 1000, 400, epochs=1)]
    return [Task("prune>kmeans, no training", {}, SPACE, SAMPLERS, 40, None, 5000),
            Task("prune>trained kmeans, 2 epochs on 2000 images", tuned,
                 {"0.sparsity": (0.80, 0.96, 0.02), "1.k": [2, 4, 8, 16]},
                 ("tpe", "hyperband"), 16, 3000, 1000, epochs=2)]


def searches(task: Task, seed: int, smoke: bool) -> dict:
    from ..search import SAMPLERS as BY_NAME
    common = {"method": TASK, "fixed": task.fixed, "space": task.space,
              "trials": task.trials, "seed": seed, "objectives": ("accuracy",),
              "byte_budget": BUDGET, "eval_images": task.eval_images}
    startup = {"startup_trials": 1 if smoke else 4 if task.epochs else 10}
    extra = {"random": {}, "grid": {}, "tpe": startup, "hyperband": startup}
    return {name: BY_NAME[name](**common, **extra[name]) for name in task.samplers}


def oracle(model, data, task: Task, seed: int, budget: float) -> dict:
    """Every point of the grid applied once on the seed's validation split."""
    from .. import codec
    from ..search import holdout
    from ..search import space as spaces
    from ..train import evaluate, quiet
    train, val = holdout(data, task.eval_images, seed)
    grid = spaces.grid_of(TASK, task.fixed, task.space)
    points = []
    with quiet():
        for values in itertools.product(*grid.values()):
            point = dict(zip(grid, values))
            out = spaces.build(TASK, {**task.fixed, **point}).apply(model, train)
            points.append((evaluate(out, val), len(codec.encode(out)), point))
    within = [(acc, point) for acc, size, point in points if size <= budget]
    if not within:
        raise RuntimeError(f"no point of the grid {grid} fits {budget:.0f} bytes")
    best, best_point = max(within, key=lambda found: found[0])
    threshold = best - MARGIN
    return {"grid_points": len(points), "grid_best_acc": round(best, 4),
            "grid_best_point": best_point, "threshold": round(threshold, 4),
            "grid_share_meeting": round(sum(a >= threshold and s <= budget
                                            for a, s, _ in points) / len(points), 4),
            "dense_val_acc": round(evaluate(model, val), 4)}


def trials_to_reach(study, threshold: float, budget: float) -> int | None:
    """1-based count of trials spent until the first that meets both, from the study."""
    for spent, trial in enumerate(sorted(study.get_trials(deepcopy=False),
                                         key=lambda t: t.number), start=1):
        acc, size = trial.user_attrs.get("accuracy"), trial.user_attrs.get("bytes")
        if trial.state.name == "COMPLETE" and acc is not None and acc >= threshold \
                and size <= budget:
            return spent
    return None


def epochs_spent(study, name: str, epochs: int) -> int:
    """Training epochs the study's trials ran: Hyperband's reports (one per epoch trained,
    also the epoch that got a trial stopped); for the others every complete trial's epochs."""
    trials = study.get_trials(deepcopy=False)
    if name == "hyperband":
        return sum(len(t.intermediate_values) for t in trials)
    return epochs * sum(t.state.name == "COMPLETE" for t in trials)


def run_search(search, model, data, name: str):
    """The study after ``search`` ran; a search whose trials never fit the budget is kept."""
    study = search.open(None, name)
    try:
        search.run(model, data, study)
    except ValueError as err:
        if "no trial's file fits" not in str(err):
            raise
    return study


def sampler_rows(model, data, smoke: bool) -> list[dict]:
    return [row for task in tasks(smoke) for row in task_rows(model, data, task, smoke)]


def task_rows(model, data, task: Task, smoke: bool) -> list[dict]:
    from .. import codec
    if task.images is not None:
        data = data.subset(task.images, seed=0)
    dense = len(codec.encode(model))
    budget = BUDGET * dense
    rows = []
    for seed in SEEDS[:1] if smoke else SEEDS:
        found = oracle(model, data, task, seed, budget)
        for name, search in searches(task, seed, smoke).items():
            start = time.perf_counter()
            study = run_search(search, model, data, f"{name}-seed{seed}")
            wall = time.perf_counter() - start
            spent = study.get_trials(deepcopy=False)
            reach = trials_to_reach(study, found["threshold"], budget)
            fits = [t.user_attrs["accuracy"] for t in spent if t.state.name == "COMPLETE"
                    and t.user_attrs.get("bytes", budget + 1) <= budget]
            row = {"bench": "search samplers", "task": f"{task.name} ({TASK} on {MODEL})",
                   "space": str(task.space), "sampler": name, "method": search.id,
                   "seed": seed, "trials": len(spent), "train_images": len(data),
                   "budget": "1/25 of the dense file", "budget_bytes": round(budget),
                   "dense_bytes": dense, **found,
                   "threshold_rule": f"best grid point within budget - {MARGIN * 100:g} pt",
                   "trials_to_reach": reach,
                   "result": f"reached in {reach} of {len(spent)} trials" if reach
                             else f"not reached in {len(spent)} trials",
                   "pruned": sum(t.state.name == "PRUNED" for t in spent),
                   "failed": sum(t.state.name == "FAIL" for t in spent),
                   "epochs_spent": epochs_spent(study, name, task.epochs),
                   "best_acc_within_budget": round(max(fits), 4) if fits else None,
                   "search_s": round(wall, 1),
                   "target": "trials to reach the threshold at the budget (a comparison; "
                             "no pass mark)", "paper": "-", "met": None}
            if name == "hyperband" and not task.epochs:
                row["note"] = ("no training on this task: Hyperband has no epochs to stop; "
                               "over-budget trials are pruned before they are measured")
            rows.append(row)
    return rows


# ------------------------------------------------------------------ two workers


def worker_command(k: int, storage: Path, study: str, out: Path, trials: int,
                   smoke: bool, fixed: dict | None = None) -> list[str]:
    """Worker ``k``'s command line: the random search of ``SPACE``, the chain's steps as
    ``fixed`` gives them (None: the untrained chain, the first task's)."""
    space = [f"{key}={spec!r}" for key, spec in SPACE.items()]
    settings = ["--set", *[f"{key}={value!r}" for key, value in fixed.items()]] if fixed else []
    return [sys.executable, "-m", "workbench", "search", TASK, "--model", MODEL,
            "--sampler", "random", "--trials", str(trials), *settings, "--space", *space,
            "--objectives", "accuracy", "--budget", str(BUDGET),
            "--eval-images", str(500 if smoke else 5000), *(["--smoke"] if smoke else []),
            "--storage", str(storage), "--study", study, "--worker", str(k),
            "--out", str(out / f"{study}-worker{k}")]


def timed_workers(n: int, folder: Path, study: str, trials: int, smoke: bool,
                  fixed: dict | None = None) -> float:
    """Wall seconds of ``n`` worker processes started together on ``study``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    storage = folder / "study.journal"
    start = time.perf_counter()
    processes = [subprocess.Popen(worker_command(k, storage, study, folder, trials, smoke, fixed),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, env=env) for k in range(n)]
    errors = [p.communicate()[1] for p in processes]
    wall = time.perf_counter() - start
    for process, err in zip(processes, errors):
        if process.returncode != 0:
            raise RuntimeError(f"worker of {study!r} failed:\n{err}")
    return wall


def study_span(folder: Path, study: str, trials: int) -> tuple[float, list]:
    """Seconds from the first trial's start to the last one's end; the workers per trial."""
    import optuna

    from ..search import open_storage
    loaded = optuna.load_study(study_name=study, storage=open_storage(folder / "study.journal"))
    done = loaded.get_trials(deepcopy=False)
    if sorted(t.number for t in done) != list(range(trials)):
        raise RuntimeError(f"study {study!r} holds trials {[t.number for t in done]}, "
                           f"not 0..{trials - 1}")
    span = max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    return span.total_seconds(), [t.user_attrs.get("worker") for t in done]


def worker_rows(smoke: bool) -> list[dict]:
    trials = 8 if smoke else WORKER_TRIALS
    cores = os.cpu_count()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fixed = trained_steps(WORKER_EPOCHS[smoke])
        one = timed_workers(1, folder, "one-worker", trials, smoke, fixed)
        load_between = os.getloadavg()
        two = timed_workers(2, folder, "two-workers", trials, smoke, fixed)
        one_span, _ = study_span(folder, "one-worker", trials)
        two_span, by = study_span(folder, "two-workers", trials)
    load_after = os.getloadavg()
    # two workers need two cores free of other work: other load above cores - 2 means not
    # judged on the load before the runs: the one-worker run's own load is still in the
    # 1-minute average between them
    busy = load_before[0] > cores - 2 + 0.5
    ratio = two / one
    return [{"bench": "search two workers", "task": f"{TASK} on {MODEL} (prune, then k-means "
             f"fine-tuned {WORKER_EPOCHS[smoke]} epoch(s)), random sampler, journal file",
             "trials": trials, "one_worker_s": round(one, 1),
             "two_workers_s": round(two, 1), "ratio": round(ratio, 3),
             "one_worker_trials_span_s": round(one_span, 1),
             "two_workers_trials_span_s": round(two_span, 1),
             "span_ratio": round(two_span / one_span, 3),
             "trials_by_worker": {k: by.count(k) for k in sorted(set(by))},
             "threads_per_worker": 1, "cores": cores,
             "load_avg_before": [round(v, 2) for v in load_before],
             "load_avg_between": [round(v, 2) for v in load_between],
             "load_avg_after": [round(v, 2) for v in load_after], "busy": busy,
             "target": f"two workers' wall time <= {WORKER_TARGET} of one worker's "
                       "(about half)", "paper": "-",
             "met": None if smoke or busy else ratio <= WORKER_TARGET,
             "note": ("busy: other load on the cores, the timing cannot be trusted"
                      if busy else "wall time includes each process's start-up and "
                                   "front evaluation; span_ratio is the trials alone")}]


def rows(smoke: bool = False) -> list[dict]:
    from .. import data, zoo
    torch.set_num_threads(1)
    model = zoo.pretrained(MODEL)
    train = data.load("mnist", "train")
    out = sampler_rows(model, train, smoke) + worker_rows(smoke)
    for row in out:
        row["setting"] = "smoke" if smoke else "full"
        row["seeds"] = 1 if smoke else len(SEEDS)
    return out
