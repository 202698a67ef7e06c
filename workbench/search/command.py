"""``python -m workbench search METHOD_ID --model NAME --sampler random|grid|tpe|hyperband``.

The study lives in ``OUT/study.journal`` unless ``--storage`` names another journal file or a
database URL. A study name that exists is refused unless ``--resume`` (continue an interrupted
run, alone) or ``--worker K`` (one of several workers started with the same command and
storage, K = 0, 1, ...; the trials are shared, each worker's sampler seeded from (seed, K)).
Prints the trials, the Pareto front with each front point's TEST accuracy (measured once, at
the end, after the selection), and writes ``OUT/pareto.png``.

The searched network is the zoo's ``--model``, which was trained on every training image, the
validation images too: it knows them, so validation accuracy runs high, most for settings that
change it least. ``--clean-base`` starts from the zoo network trained without them instead
(``zoo train MODEL --holdout N --seed S``, N the ``--eval-images`` and S the ``--seed``).

Reproducibility: one worker with the same seed, study name and settings proposes the same
trials (methods are deterministic). With several workers the set of trials depends on which
worker finished what first: each worker's proposals are seeded, their interleaving is not.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from optuna.trial import TrialState

# the training and test images of a smoke search: reproduce's, so that its settings reproduce
from ..reproduce import SMOKE_TEST, SMOKE_TRAIN


def parse_pairs(pairs: list[str] | None, option: str) -> dict:
    """KEY=VALUE pairs, each VALUE a Python literal (a bare word is a string)."""
    out = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} {pair!r}: allowed is KNOB=VALUE, e.g. --set "
                             "sparsity=0.9 or --space sparsity='(0.5, 0.99, 0.01)' k='[4, 8]'")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "worker": t.user_attrs.get("worker"),
                     "state": t.state.name.lower(), **t.params,
                     **{k: t.user_attrs.get(k) for k in ("accuracy", "bytes", "macs",
                                                         "latency", "energy")
                        if k in t.user_attrs},
                     "on_front": False})
    front = {t.number for t in pareto(study)}
    for row in rows:
        row["on_front"] = row["trial"] in front
    return rows


def pareto(study) -> list:
    """The Pareto front (``best_trials``; for one objective, the best trial)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return list(study.best_trials)


def front_rows(search, study, model, train, test) -> list[dict]:
    """Each front point re-applied from its settings, with its test accuracy."""
    from .. import codec
    from ..train import evaluate, quiet
    from .methods import holdout
    part, _ = holdout(train, search.eval_images, search.seed)
    rows = []
    with quiet():
        for t in sorted(pareto(study), key=lambda t: t.user_attrs["bytes"]):
            out = search.searched(t.params).apply(model, part)
            rows.append({"trial": t.number, **t.params,
                         "val_accuracy": round(t.user_attrs["accuracy"], 4),
                         "test_accuracy": round(evaluate(out, test), 4),
                         "bytes": len(codec.encode(out)), "recorded_bytes": t.user_attrs["bytes"]})
    return rows


def main(args) -> None:
    from .. import codec, data, zoo
    from ..measure import format_table
    from ..plots import pareto_plot
    from ..train import evaluate
    from . import SAMPLERS
    if args.clean_base and args.smoke:
        raise ValueError("--clean-base with --smoke: a smoke search holds out images of a "
                         "1,000-image subset, not the ones a clean base left out; drop one")
    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes {args.minutes}: allowed is a positive number")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"method": args.method_id, "trials": args.trials, "seed": args.seed,
                "fixed": parse_pairs(args.set, "--set"),
                "space": parse_pairs(args.space, "--space")}
    if args.objectives:
        settings["objectives"] = tuple(args.objectives)
    if args.budget is not None:
        settings["byte_budget"] = args.budget
    settings["eval_images"] = args.eval_images or (200 if args.smoke else 5000)
    search = SAMPLERS[args.sampler](**settings)
    model = zoo.pretrained(args.model, holdout=search.eval_images if args.clean_base else 0,
                           seed=search.seed)
    train = data.load(zoo.dataset_of(args.model), "train")
    test = data.load(zoo.dataset_of(args.model), "test")
    if args.smoke:
        train, test = train.subset(SMOKE_TRAIN, seed=0), test.subset(SMOKE_TEST, seed=0)
    name = args.study or f"{args.method_id}-{args.model}-{args.sampler}"
    if args.worker is not None and args.worker < 0:
        raise ValueError(f"--worker {args.worker}: allowed is 0, 1, 2 ...")
    mode = "join" if args.worker is not None else "resume" if args.resume else "new"
    study = search.open(args.storage or out / "study.journal", name, mode, args.worker or 0)
    seconds = None if args.minutes is None else 60 * args.minutes
    study = search.run(model, train, study, args.worker or 0, seconds)[1]
    rows = trial_rows(study)
    front = front_rows(search, study, model, train, test)
    base = {"bytes": len(codec.encode(model)), "accuracy": evaluate(model, test)}
    print(f"## Trials of study {name!r} (validation accuracy on {search.eval_images} "
          f"training images held out)\n\n{format_table(rows)}\n")
    print(f"## Pareto front, test accuracy measured once at the end\n\n"
          f"{format_table(front)}\n")
    for line in reproduce_lines(search, study, args.model, args.smoke, args.clean_base):
        print(line)
    figure = pareto_plot(rows, front, base, paper_points(args.model, base["bytes"]),
                         title=f"{name}: {len(rows)} trials")
    figure.savefig(out / "pareto.png", dpi=120, bbox_inches="tight")
    print(f"figure: {out / 'pareto.png'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"study": name, "trials": rows, "front": front, "base": base}, f,
                      indent=2, default=str)


def reproduce_lines(search, study, model_name: str, smoke: bool,
                    clean_base: bool = False) -> list[str]:
    """For a Deep Compression search of a LeNet, the ``reproduce`` command of each front point
    (the search's fixed settings and the trial's own, its held-out images and seed)."""
    import torch

    from .. import reproduce
    if search.method != "pipeline.deep_compression" or model_name not in reproduce.SETTINGS:
        return []
    lines = [f"## Each front point again, with the tables of `reproduce` (on "
             f"{torch.get_num_threads()} thread(s), as this search ran)\n"]
    for t in sorted(pareto(study), key=lambda t: t.user_attrs["bytes"]):
        lines.append(f"trial {t.number} ({t.user_attrs['bytes']} bytes): " + reproduce.command_line(
            model_name, {**search.fixed, **t.params}, search.eval_images, search.seed, smoke,
            threads=torch.get_num_threads(), clean_base=clean_base))
    return lines + [""]


def paper_points(model_name: str, dense_bytes: int) -> list[dict]:
    """Han et al. 2016's result for this network, its ratio applied to our dense file."""
    from ..reproduce import PAPER
    paper = PAPER.get(model_name)
    if paper is None:
        return []
    return [{"label": f"Han et al. 2016: {paper['x']}x, {paper['error'][1]}% err",
             "bytes": dense_bytes / paper["x"], "accuracy": 1 - paper["error"][1] / 100}]
