"""Command line: python -m workbench survey | zoo list | zoo train NAME... | bench NAME |
reproduce deep-compression --model NAME | search METHOD_ID --model NAME | lessons --html DIR.

A user's mistake (a mistyped command, a bad name or setting, a missing or corrupt data file or
checkpoint) ends with one line on stderr saying what is wrong and what to do, and exit
status 2; a Python traceback means a bug in the workbench.
"""
from __future__ import annotations

import argparse
import json
import sys

PROG = "python -m workbench"


class Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (no usage block) and exit status 2."""

    def error(self, message):
        fail(f"{message} (see '{self.prog} -h')")


def fail(message: str):
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that report a user's mistake rather than a bug."""
    from .data import DataError
    from .zoo import CheckpointError
    return (ValueError, DataError, CheckpointError, FileNotFoundError, PermissionError,
            IsADirectoryError)


def check_outputs(args) -> None:
    """Files a command will write (``--json``, reproduce's ``--out``) must have a folder to go
    to: said at once, not after an hour of work."""
    from pathlib import Path
    wanted = [("--json", getattr(args, "json", None))]
    if args.command == "reproduce":
        wanted.append(("--out", args.out))
    for option, path in wanted:
        if path and not Path(path).expanduser().resolve().parent.is_dir():
            fail(f"{option} {path}: the folder {Path(path).expanduser().resolve().parent} does "
                 f"not exist; create it or choose another path")
        if path and Path(path).is_dir():
            fail(f"{option} {path} is a folder; give a file name")


def _zoo(args) -> None:
    from . import zoo
    if args.action == "train":
        for name in args.names:          # all names checked before hours of training start
            zoo.dataset_of(name)
        if args.holdout < 0 or args.seed < 0 or (args.seed and not args.holdout):
            raise ValueError(f"zoo train --holdout {args.holdout} --seed {args.seed}: allowed "
                             f"are whole numbers >= 0, --seed only with --holdout N > 0 "
                             f"(without it the network trains on every training image)")
        for name in args.names:          # a queue: one network after another
            saved = zoo.key(name, args.holdout, args.seed)
            if args.skip_trained and saved in zoo.manifest():
                print(f"{saved}: in the zoo already, skipped", file=sys.stderr)
                continue
            zoo.train(name, epochs=args.epochs, progress=not args.quiet,
                      holdout=args.holdout, seed=args.seed)
    else:
        from .measure import format_table
        print(format_table(zoo.table()))


def _bench(args) -> None:
    from . import bench
    rows = bench.run(args.target, smoke=args.smoke, browser=args.browser)
    from .measure import format_table
    for columns in _same_columns(rows):
        print(format_table(columns))
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def _same_columns(rows: list[dict]) -> list[list[dict]]:
    """Rows grouped into consecutive runs with the same columns, one table each."""
    groups = []
    for row in rows:
        if groups and list(groups[-1][0]) == list(row):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def _reproduce(args) -> None:
    from . import reproduce
    from .measure import format_table
    from .search.command import parse_pairs
    settings = None if args.set is None else parse_pairs(args.set, "--set")
    # a search's settings do not overwrite the file of ours
    default = f"deep_compression_{args.model}{'' if settings is None else '_searched'}.wbnc"
    out = args.out or (None if args.smoke else default)
    tables = reproduce.deep_compression(args.model, smoke=args.smoke, out=out,
                                        settings=settings, holdout=args.holdout, seed=args.seed,
                                        clean_base=args.clean_base)
    for title, key in (("Summary", "summary"), ("Stage by stage (real file bytes)", "stages"),
                       ("Per layer, ours", "layers"),
                       ("Per layer, Han et al. 2016", "paper_layers")):
        rows = tables[key] if isinstance(tables[key], list) else [tables[key]]
        print(f"## {title}\n\n{format_table(rows)}\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(tables, f, indent=2)


def survey_overrides(items) -> dict:
    """``["prune.magnitude.sparsity=0.95", ...]`` -> {"prune.magnitude": {"sparsity": 0.95}};
    a value is read as JSON (numbers, true, lists ...), else kept as text."""
    overrides = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        method_id, dot, knob = name.rpartition(".")
        if not sep or not dot or not method_id or not knob:
            raise ValueError(f"survey --set {item!r}: allowed is ID.KNOB=VALUE, e.g. "
                             "prune.magnitude.sparsity=0.95")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        overrides.setdefault(method_id, {})[knob] = value
    return overrides


def _survey(args) -> None:
    from . import survey
    if args.jobs < 1:
        raise ValueError(f"survey --jobs {args.jobs}: allowed is 1 or more")
    survey.main(out_dir=args.out, smoke=args.smoke, all_models=args.all_models,
                methods=args.methods, overrides=survey_overrides(args.set),
                workers=args.jobs, cache=not args.no_cache)


def _lessons(args) -> None:
    from . import lesson_runner
    from .measure import format_table
    try:
        rows = lesson_runner.main(args.names, args.html, smoke=args.smoke)
    except lesson_runner.LessonFailed as error:
        fail(error)
    print(format_table(rows))


def _search(args) -> None:
    from .search import command
    command.main(args)


def main(argv=None) -> None:
    parser = Parser(prog=PROG)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("survey", help="every method at its defaults, the zoo, what is missing")
    p.add_argument("--out", default="survey", help="folder for survey.md, survey.html, plots")
    p.add_argument("--smoke", action="store_true",
                   help="small subsets and each method's smoke settings (a few minutes)")
    p.add_argument("--all-models", action="store_true",
                   help="every method on every zoo model it applies to, not only the first")
    p.add_argument("--methods", nargs="+", metavar="ID",
                   help="only these catalogue ids (e.g. encode.sparse prune.magnitude)")
    p.add_argument("--set", nargs="+", metavar="ID.KNOB=VALUE",
                   help="change a method's setting, e.g. prune.magnitude.sparsity=0.95")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes computing cells at once (latency is timed after, alone)")
    p.add_argument("--no-cache", action="store_true",
                   help="compute every cell again (the cache is OUT/cells)")
    p.set_defaults(run=_survey)

    p = sub.add_parser("zoo", help="list or train the model zoo")
    p.add_argument("action", choices=["list", "train"])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="networks to train, one after another")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--skip-trained", action="store_true",
                   help="skip networks that have a checkpoint (to continue a queue)")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="train without the N validation images a search with --seed holds "
                        "out, so that its validation is clean (a separate checkpoint)")
    p.add_argument("--seed", type=int, default=0,
                   help="the search's seed, which draws the held-out images (with --holdout)")
    p.set_defaults(run=_zoo)

    p = sub.add_parser("bench", help="measured figures for an issue's targets")
    p.add_argument("target", help="widgets | pruning | a single module, e.g. pruning_dns")
    p.add_argument("--smoke", action="store_true", help="fewer repetitions")
    p.add_argument("--json", help="also write the rows as JSON to this path")
    p.add_argument("--browser", action="store_true",
                   help="widgets: moved in a real browser (JupyterLab + Chromium), p95 per lesson")
    p.set_defaults(run=_bench)

    p = sub.add_parser("reproduce", help="a paper's tables with our figures beside them")
    p.add_argument("paper", choices=["deep-compression"])
    p.add_argument("--model", required=True, choices=["lenet300", "lenet5"])
    p.add_argument("--smoke", action="store_true", help="tiny subsets, one short round")
    p.add_argument("--out", help="where to write the compressed file (default "
                                 "deep_compression_MODEL.wbnc, with --set "
                                 "deep_compression_MODEL_searched.wbnc; none with --smoke)")
    p.add_argument("--json", help="also write the tables as JSON to this path")
    p.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                   help="a search's settings instead of ours, as its study records them "
                        "(e.g. prune.sparsity=0.96 fc_bits=4); other knobs at the defaults")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="train without the N validation images a search held out (its "
                        "--eval-images)")
    p.add_argument("--seed", type=int, default=0,
                   help="the search's seed, which drew the held-out images (with --holdout)")
    p.add_argument("--clean-base", action="store_true",
                   help="start from the zoo network trained without those images, as a "
                        "search with --clean-base did (zoo train MODEL --holdout N --seed S)")
    p.set_defaults(run=_reproduce)

    p = sub.add_parser("lessons", help="run the lessons and write each as a notebook and an "
                                       "HTML page, to read before class")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="lessons to run, e.g. 00 03 05_lowrank (default: all)")
    p.add_argument("--html", required=True, metavar="DIR",
                   help="folder for the executed notebooks and their HTML pages")
    p.add_argument("--smoke", action="store_true",
                   help="as CI runs them: small subsets, figures that mean little")
    p.set_defaults(run=_lessons)

    p = sub.add_parser("search", help="search a method's settings with Optuna (Pareto front)")
    p.add_argument("method_id", metavar="METHOD_ID", help="the method searched, e.g. "
                   "prune.magnitude, pipeline.hybrid, pipeline.deep_compression")
    p.add_argument("--model", required=True, help="a zoo network, e.g. lenet300")
    p.add_argument("--sampler", default="tpe", choices=["random", "grid", "tpe", "hyperband"])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--minutes", type=float, help="start no trial after this many minutes "
                   "(the study may end with fewer than --trials)")
    p.add_argument("--objectives", nargs="+", metavar="NAME",
                   help="accuracy bytes macs latency energy (default: accuracy bytes; hyperband: "
                        "accuracy at --budget)")
    p.add_argument("--budget", type=float, help="the largest file allowed, as a share of the "
                   "dense file (e.g. 0.0166: 60x smaller)")
    p.add_argument("--set", nargs="+", metavar="KNOB=VALUE", help="settings held fixed")
    p.add_argument("--space", nargs="+", metavar="KNOB=RANGE",
                   help="knobs searched, e.g. sparsity='(0.5, 0.99)' k='[4, 8, 16]' (default: "
                        "the method's sliders)")
    p.add_argument("--eval-images", type=int, help="validation images held out of the "
                   "training set (default 5000; 200 with --smoke)")
    p.add_argument("--clean-base", action="store_true",
                   help="start from the zoo network trained without those validation images "
                        "(zoo train MODEL --holdout N --seed S), so that they are new to it")
    p.add_argument("--out", default="search", help="folder for study.journal and pareto.png")
    p.add_argument("--storage", help="a journal file or a database URL (postgresql://...)")
    p.add_argument("--study", help="the study's name (default METHOD_ID-MODEL-SAMPLER)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted study")
    group.add_argument("--worker", type=int, metavar="K",
                       help="worker K of several on one study (creates or joins it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="small subsets of the data")
    p.add_argument("--json", help="also write trials and front as JSON to this path")
    p.set_defaults(run=_search)

    args = parser.parse_args(argv)
    if args.command == "zoo" and args.action == "train" and not args.names:
        from .models import ARCHITECTURES
        parser.error(f"zoo train needs a NAME: {', '.join(ARCHITECTURES)}")

    check_outputs(args)
    try:
        args.run(args)
    except user_errors() as err:   # say what is wrong and what is allowed, no traceback
        fail(err)


if __name__ == "__main__":
    sys.exit(main())
