"""``python -m workbench bench distillation_hints``: FitNets on MNIST and FSP on CIFAR-10.

FitNets (issue 12: "a student with about 1/10 of the teacher's parameters, trained alone, with
KD and with hints"). MNIST, because the zoo has a trained LeNet-5 there and the paper's MNIST
student has 30K parameters, which our thin student of width 8 and depth 3 matches (about 1/14
of LeNet-5's); a CIFAR-10 FitNet1 would need a wider teacher than the zoo's and many more
epochs than two shared cores allow. The same ``distill.fitnets`` student, from the same
initialization per seed, is trained three ways with equal task epochs: labels alone
(``hint_epochs=0, kd_weight=0``), with KD (``hint_epochs=0``) and with hints then KD (the
defaults, plus ``HINT_EPOCHS`` of stage 1). Paper (Romero et al. 2015, MNIST, a maxout teacher
of 0.55 % error): 1.90 % alone, 0.65 % with KD, 0.51 % with hints for a 30K student, as
checked at the source (shared FIELD-NOTES).

FSP: the zoo ResNet-20 teacher, a student of its widths with one block per stage (ResNet-8,
as Yim et al. shrink depth, not width), trained on the labels alone and with FSP stage 1 first
(``FSP_STAGE_EPOCHS``), equal task epochs. Yim et al.'s own CIFAR-10 figures (a ResNet-26
teacher) could not be checked at the source here, so none is printed.

Full mode: subsets of the training sets (``FITNETS_TRAIN``, ``FSP_TRAIN`` images, fixed),
full test sets, 3 seeds (student initialization and batch order), one thread. Smoke mode: tiny
subsets, one epoch, one seed; its figures mean nothing.
"""
from __future__ import annotations

import statistics
import time

from ..distill.hints import FSP, FitNets

PAPER_FITNETS = {"alone": 1.90, "kd": 0.65, "hints": 0.51}
PAPER_SOURCE = ("Romero et al. 2015, MNIST, 30K-parameter student, maxout teacher 0.55 %; "
                "checked at the source, shared FIELD-NOTES")
SEEDS = (0, 1, 2)


def _spread(values: list[float]) -> dict:
    return {"mean": round(statistics.mean(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "per_seed": [round(v, 2) for v in values]}


def _runs(make, teacher, train, test, seeds) -> tuple[list[float], int, float]:
    """Test error (%) of ``make(seed).apply(teacher, train)`` per seed; params; seconds."""
    from ..measure import count_params
    from ..train import evaluate, quiet
    errors, start = [], time.perf_counter()
    for seed in seeds:
        with quiet():
            student = make(seed).apply(teacher, train)
        errors.append(100 * (1 - evaluate(student, test)))
    return errors, count_params(student)[0], time.perf_counter() - start


def fitnets_rows(train, test, epochs: int, hint_epochs: int, seeds) -> list[dict]:
    from ..distill.hints import FitNets
    from ..measure import count_params
    from ..train import evaluate
    from ..zoo import pretrained
    teacher = pretrained("lenet5")
    teacher_params = count_params(teacher)[0]
    variants = {"alone": {"hint_epochs": 0, "kd_weight": 0.0}, "kd": {"hint_epochs": 0},
                "hints": {"hint_epochs": hint_epochs}}
    rows, means = [], {}
    for name, knobs in variants.items():
        errors, params, seconds = _runs(
            lambda seed, knobs=knobs: FitNets(epochs=epochs, seed=seed, **knobs),
            teacher, train, test, seeds)
        spread = _spread(errors)
        means[name] = spread["mean"]
        row = {"bench": "fitnets mnist", "training": {"alone": "labels only", "kd": "KD",
                                                      "hints": "hints, then KD"}[name],
               "student": "ThinNet width 8 depth 3", "params": params,
               "teacher_params": teacher_params,
               "fewer_params": round(teacher_params / params, 1),
               "err_pct": spread["mean"], "err_pct_min": spread["min"],
               "err_pct_max": spread["max"], "err_pct_per_seed": spread["per_seed"],
               "seeds": len(seeds), "epochs": epochs,
               "hint_epochs": knobs["hint_epochs"], "train_images": len(train),
               "train_s": round(seconds, 1), "paper_err_pct": PAPER_FITNETS[name],
               "paper": f"{PAPER_FITNETS[name]} % ({PAPER_SOURCE})",
               "target": "-", "met": None}
        if name == "kd":
            row.update(target="KD below labels only (mean error)",
                       met=means["kd"] < means["alone"])
        if name == "hints":
            row.update(target="hints+KD below labels only (mean error); the paper also has "
                              "it below KD", met=means["hints"] < means["alone"],
                       below_kd=means["hints"] < means["kd"])
        rows.append(row)
    rows.insert(0, {"bench": "fitnets mnist", "training": "teacher (zoo LeNet-5)",
                    "params": teacher_params,
                    "err_pct": round(100 * (1 - evaluate(teacher, test)), 2),
                    "paper": "0.55 % (maxout teacher, 361K params)", "target": "-",
                    "met": None})
    return rows


def fsp_rows(train, test, epochs: int, fsp_epochs: int, seeds) -> list[dict]:
    from ..distill.hints import FSP
    from ..measure import count_params
    from ..train import evaluate
    from ..zoo import pretrained
    teacher = pretrained("resnet20")
    teacher_params = count_params(teacher)[0]
    rows, means = [], {}
    for name, stage in (("alone", 0), ("fsp", fsp_epochs)):
        errors, params, seconds = _runs(
            lambda seed, stage=stage: FSP(epochs=epochs, fsp_epochs=stage, seed=seed),
            teacher, train, test, seeds)
        accs = _spread([100 - e for e in errors])
        means[name] = accs["mean"]
        row = {"bench": "fsp cifar10", "training": "labels only" if not stage
               else "FSP stage, then labels", "student": "ResNet-8 (widths 16-32-64)",
               "params": params, "teacher_params": teacher_params,
               "acc_pct": accs["mean"], "acc_pct_min": accs["min"], "acc_pct_max": accs["max"],
               "acc_pct_per_seed": accs["per_seed"], "seeds": len(seeds), "epochs": epochs,
               "fsp_epochs": stage, "train_images": len(train), "train_s": round(seconds, 1),
               "paper": "- (Yim et al.'s CIFAR-10 table not checked at the source)",
               "target": "-", "met": None}
        if stage:
            row.update(target="FSP above labels only (mean accuracy)",
                       met=means["fsp"] > means["alone"])
        rows.append(row)
    rows.insert(0, {"bench": "fsp cifar10", "training": "teacher (zoo ResNet-20)",
                    "params": teacher_params,
                    "acc_pct": round(100 * evaluate(teacher, test), 2), "paper": "-",
                    "target": "-", "met": None})
    return rows


def rows(smoke: bool = False) -> list[dict]:
    from .. import data
    mnist_train, mnist_test = data.mnist("train"), data.mnist("test")
    cifar_train, cifar_test = data.cifar10("train"), data.cifar10("test")
    if smoke:       # seconds: tiny subsets, one epoch, one seed (figures not meaningful)
        out = fitnets_rows(mnist_train.subset(256, seed=0), mnist_test.subset(200, seed=0),
                           1, 1, (0,))
        out += fsp_rows(cifar_train.subset(128, seed=0), cifar_test.subset(100, seed=0),
                        1, 1, (0,))
    else:
        out = fitnets_rows(mnist_train.subset(FITNETS_TRAIN, seed=0), mnist_test,
                           FITNETS_EPOCHS, HINT_EPOCHS, SEEDS)
        out += fsp_rows(cifar_train.subset(FSP_TRAIN, seed=0), cifar_test, FSP_EPOCHS,
                        FSP_STAGE_EPOCHS, SEEDS)
    for row in out:
        row["setting"] = "smoke" if smoke else "full"
        if smoke:               # a target is not judged on a smoke run's figures
            row["met"] = None
    return out


# The epochs are the methods' defaults, so the survey's rows show the compared settings.
FITNETS_TRAIN = 10_000      # MNIST training images (a fixed stratified subset)
FITNETS_EPOCHS = FitNets.epochs             # task epochs of every FitNets student (stage 2)
HINT_EPOCHS = FitNets.hint_epochs           # FitNets stage 1 (hints), before the task epochs
FSP_TRAIN = 5_000           # CIFAR-10 training images
FSP_EPOCHS = FSP.epochs                     # task epochs of every FSP student
FSP_STAGE_EPOCHS = FSP.fsp_epochs           # FSP stage 1, before the task epochs
