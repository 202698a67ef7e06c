"""``python -m workbench bench search_deep_compression``: a search that should beat Deep
Compression's published ratios (issue 14).

Targets: within two hours on two cores, a file >= 60x smaller than the dense fp32 file at
<= 1.60% test error on LeNet-300-100, and >= 100x at <= 0.80% on LeNet-5. Han et al. 2016
report 40x at 1.58% and 39x at 0.74% (``workbench.papers``).

How: TPE (``search.bayes``) over ``pipeline.deep_compression``: the pruning (on LeNet-5
``prune.iterative``'s shares, ``prune.sparsity`` for the hidden layers and
``prune.output_sparsity`` for the last one, with the first convolution, 500 weights that every
later layer reads, held at Han et al.'s share; on LeNet-300-100 ``prune.dns``'s thresholds,
``prune.c_rate`` and ``prune.output_c_rate``), the bits of the shared weights and the
retraining (epochs, and on LeNet-300-100 the learning rate and the k-means fine-tune's epochs:
``SPACE``); one objective, validation accuracy, at a byte budget of 1/x of the dense file,
which Optuna's constraint makes TPE propose within. Two worker processes (``python -m
workbench search ... --worker K``) share one journal study; each model gets its share of the
two hours (``MINUTES``): no trial starts after it, the running ones end. The network kept is the
one ``Search.best`` picks with ``TOLERANCE`` 0: the most accurate file on validation within the
budget (the smallest of equals), since the target rewards no byte below the budget and counts
every point of error.
Its settings are run again by ``reproduce deep-compression --set ... --holdout ...`` (the row
prints that command), whose file must have the bytes the study recorded; its test error is
measured once, at the end.
``wall_s`` runs from the workers' start to their exit, each one's printed front included;
``trials_span_s`` is the trials alone, from the first start to the last end, and the time
budget is judged on it (the front a worker prints after its search is not part of the search).

Validation images are held out of the training data the trials train on, but the zoo LeNets
were trained on all 60,000 training images, so the base network has seen them: validation
accuracy runs high and ranks settings only roughly. The test set never chooses.

Smoke: 1,000 training images, one short trial per worker, one round of everything; ``met``
stays None.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

from .. import codec, data, papers, reproduce, zoo
from ..search import BayesSearch, open_storage
from ..train import evaluate

TARGETS = {"lenet300": (60, 1.60), "lenet5": (100, 0.80)}     # x smaller, test error %
MINUTES = {"lenet300": 40, "lenet5": 80}                       # two hours in all
TOLERANCE = 0.0          # no validation accuracy given up for a file smaller than the budget
EVAL_IMAGES = 5000
# The retraining is searched too: at these shares, how long the survivors retrain decides
# how much accuracy comes back. LeNet-300-100 is pruned by Dynamic Network Surgery: with
# iterative pruning every two-hour search ended above the error target, while DNS, whose wrong
# cuts grow back, keeps more accuracy at the same share. Its thresholds are mean + c std of a
# layer's |w|. A LeNet-5 epoch costs many LeNet-300-100 epochs, hence its narrower ranges.
SPACE = {
    "lenet300": {"prune.c_rate": (1.6, 2.8), "prune.output_c_rate": (0.5, 2.0),
                 "prune.epochs": (20, 40, 5), "prune.lr": [0.02, 0.05], "fc_bits": (3, 5, 1),
                 "quant_epochs": (2, 6, 1)},
    "lenet5": {"prune.sparsity": (0.88, 0.99), "prune.output_sparsity": (0.6, 0.95),
               "fc_bits": (2, 5, 1), "conv_bits": (3, 6, 1), "prune.epochs": (2, 5, 1)},
}
# Biases in float16: at these ratios the float32 biases would be a noticeable share of the file
# (the paper counts weights only).
FIXED = {
    "lenet300": {"pruner": "prune.dns", "prune.surgery_share": 0.5, "quant_lr": 1e-3,
                 "half_biases": True},
    "lenet5": {"prune.layer_sparsity": {"features.0": 0.34}, "prune.rounds": 3,
               "prune.lr": 0.05, "quant_epochs": 2, "quant_lr": 1e-3, "half_biases": True},
}
SMOKE_FIXED = {"lenet300": {"prune.epochs": 1, "quant_epochs": 1},
               "lenet5": {"prune.rounds": 1, "prune.epochs": 1, "quant_epochs": 1}}
SMOKE_X = 10             # one short round reaches no 60x: the smoke budget is 1/10


def search_for(model_name: str, smoke: bool) -> BayesSearch:
    target_x = TARGETS[model_name][0]
    fixed = {**FIXED[model_name], **(SMOKE_FIXED[model_name] if smoke else {})}
    space = SPACE[model_name]
    if smoke:           # the epochs are searched knobs: one epoch only
        space = {k: v for k, v in space.items() if k not in SMOKE_FIXED[model_name]}
    return BayesSearch(method="pipeline.deep_compression", fixed=fixed, space=space,
                       trials=2 if smoke else 10_000, objectives=("accuracy",),
                       byte_budget=1 / (SMOKE_X if smoke else target_x), tolerance=TOLERANCE,
                       eval_images=200 if smoke else EVAL_IMAGES, seed=0,
                       startup_trials=2 if smoke else 8)


def worker_command(search: BayesSearch, model_name: str, k: int, storage: Path, study: str,
                   minutes: float, smoke: bool) -> list[str]:
    """The command line of worker ``k`` (what a user runs on each core, or machine)."""
    pairs = lambda d: [f"{key}={value!r}" for key, value in d.items()]   # Python literals
    return [sys.executable, "-m", "workbench", "search", search.method, "--model", model_name,
            "--sampler", "tpe", "--trials", str(search.trials), "--minutes", str(minutes),
            "--objectives", "accuracy", "--budget", str(search.byte_budget),
            "--set", *pairs(search.fixed), "--space", *pairs(search.space),
            "--eval-images", str(search.eval_images), *(["--smoke"] if smoke else []),
            "--storage", str(storage), "--study", study, "--worker", str(k),
            "--out", str(storage.parent / f"worker{k}")]


def run_workers(commands: list[list[str]]) -> tuple[float, list[str]]:
    """Wall seconds of the worker processes, started together, and the last line of each
    failed one (a worker whose study has no file within the budget fails; the study stays)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    start = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, env=env) for c in commands]
    errors = [p.communicate()[1] for p in processes]
    failed = [(err.strip().splitlines() or ["(no message)"])[-1]
              for p, err in zip(processes, errors) if p.returncode != 0]
    return time.perf_counter() - start, failed


def reproduced(search: BayesSearch, model_name: str, settings: dict, smoke: bool) -> dict:
    """``reproduce.command_line`` run in this process, on one thread as the workers ran: the
    summary of ``reproduce``'s tables (the final file's bytes and its test error)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return reproduce.deep_compression(model_name, smoke, settings=settings,
                                          holdout=search.eval_images,
                                          seed=search.seed)["summary"]
    finally:
        torch.set_num_threads(threads)


def trials_span(trials) -> float:
    """Seconds from the first trial's start to the last one's end: the search itself, without
    the workers' start-up and what each does after it (its front, evaluated on the test set,
    and its own copy of the chosen network), which the wall time includes."""
    done = [t for t in trials if t.datetime_complete is not None]
    if not done:
        return 0.0
    return (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds()


def model_row(model_name: str, smoke: bool, workers: int = 2) -> dict:
    search = search_for(model_name, smoke)
    model = zoo.pretrained(model_name)
    test = data.mnist("test")
    if smoke:                   # the test images of the workers' and reproduce's smoke runs
        test = test.subset(reproduce.SMOKE_TEST, seed=0)
    minutes = 0.05 if smoke else MINUTES[model_name]
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp) / "study.journal"
        name = f"dc-{model_name}"
        commands = [worker_command(search, model_name, k, storage, name, minutes, smoke)
                    for k in range(workers)]
        wall, failed = run_workers(commands)
        if not storage.exists():
            raise RuntimeError(f"the search workers of {model_name} wrote no study: {failed}")
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
        trials = study.get_trials()          # read now: the journal goes with the folder
        try:
            best, no_fit = search.best(study, search.budget(model)), None
        except ValueError as err:            # no trial's file fits the budget
            best, no_fit = None, str(err)
    target_x, max_error = TARGETS[model_name]
    [paper] = [f for f in papers.facts("pipeline.deep_compression") if f.zoo == model_name]
    states = [t.state.name for t in trials]
    row = {"bench": "search beats Deep Compression", "model": model_name,
           "trials": len(states), "complete": states.count("COMPLETE"), "workers": workers,
           "minutes_each": minutes, "wall_s": round(wall, 1),
           "trials_span_s": round(trials_span(trials), 1),
           "base_error_pct": round(100 * (1 - evaluate(model, test)), 2),
           "target": f">= {target_x}x at <= {max_error:.2f}% test error within "
                     f"{MINUTES[model_name]} min on {workers} cores",
           "paper": f"{paper.ratio:g}x at {paper.value}% ({paper.source})",
           "workers_failed": failed}
    if best is None:
        return {**row, "note": no_fit, "met": None if smoke else False}
    settings = {**search.fixed, **best.params}
    summary = reproduced(search, model_name, settings, smoke)
    if summary["final_bytes"] != best.user_attrs["bytes"]:
        raise RuntimeError(f"trial {best.number} recorded {best.user_attrs['bytes']} bytes; "
                           f"reproduce wrote {summary['final_bytes']}: not deterministic")
    dense, size, error = len(codec.encode(model)), summary["final_bytes"], summary["err_pct"]
    return {**row, "x_smaller": round(dense / size, 1), "test_error_pct": round(error, 2),
            "bytes": size, "dense_bytes": dense,
            "validation_accuracy": round(best.values[0], 4), "trial": best.number,
            "settings": settings,
            "reproduce": reproduce.command_line(model_name, settings, search.eval_images,
                                                search.seed, smoke),
            "met": None if smoke else (dense / size >= target_x and error <= max_error
                                       and trials_span(trials) <= 60 * MINUTES[model_name] * 1.1)}


def rows(smoke: bool = False) -> list[dict]:
    out = [model_row(name, smoke) for name in TARGETS]
    for row in out:
        row["setting"] = "smoke" if smoke else "full"
    return out
