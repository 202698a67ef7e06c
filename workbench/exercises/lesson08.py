"""Checks of lesson 08's exercises (search and accounting).

Each ``check_<name>(function)`` runs the student's function on real searches of LeNet-300-100
(small Optuna studies of ``pipeline.hybrid``: magnitude pruning then k-means, nothing trained)
and on the zoo's networks, compares the result with what the library gives (Optuna's
``study.best_trials``, ``cost.energy``, ``bench.search_samplers.trials_to_reach``) and prints
what is wrong.
"""
from __future__ import annotations

import math
from functools import lru_cache

import optuna
from optuna.trial import create_trial

from . import run
from .. import codec, cost, data, measure, zoo

SPACE = {"0.sparsity": (0.70, 0.92, 0.02), "1.k": [2, 4, 8, 16]}


@lru_cache(maxsize=1)
def _studies() -> dict:
    """Three small studies of ``pipeline.hybrid`` on LeNet-300-100 (300 validation images held
    out of 2,000 training images): random with two objectives (accuracy, bytes), and random
    and TPE + Hyperband of one objective at a budget of 1/25 of the dense file (Hyperband's
    search prunes the trials whose file would not fit)."""
    from ..bench.search_samplers import run_search
    from ..search import BanditSearch, RandomSearch
    base = zoo.pretrained("lenet300")
    train = data.mnist("train").subset(2000, seed=0)
    common = {"method": "pipeline.hybrid", "space": SPACE, "eval_images": 300}
    searches = {
        "two objectives": RandomSearch(**common, trials=16, seed=1),
        "random at 1/25": RandomSearch(**common, trials=12, objectives=("accuracy",),
                                       byte_budget=1 / 25, seed=2),
        "hyperband at 1/25": BanditSearch(**common, trials=12, byte_budget=1 / 25,
                                          startup_trials=4, seed=4)}
    out = {"dense_bytes": len(codec.encode(base))}
    for name, search in searches.items():
        out[name] = run_search(search, base, train, name)   # kept even if no file fitted
    return out


def _indices(result) -> set | str:
    try:
        items = list(result)
    except TypeError:
        return f"expected a list of indices, got {type(result).__name__}"
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        return ("expected a list of indices (whole numbers, positions in the list of points), "
                f"got {items[:3]!r}...")
    return set(items)


# ------------------------------------------------------------------ 1. the Pareto front


def _front_of(points: list, directions=("maximize", "minimize")) -> set:
    """Optuna's Pareto front (``best_trials``) of ``points``, as indices into ``points``."""
    study = optuna.create_study(directions=list(directions))
    study.add_trials([create_trial(values=list(p)) for p in points])
    return {t.number for t in study.best_trials}


@lru_cache(maxsize=1)
def _front_cases() -> tuple:
    """(label, points, the front's indices): a real two-objective study, whose front is its
    ``best_trials``, and a small set with ties and duplicates, judged by Optuna as well."""
    study = _studies()["two objectives"]
    done = sorted((t for t in study.trials if t.state.name == "COMPLETE"),
                  key=lambda t: t.number)
    points = [(t.values[0], t.values[1]) for t in done]
    front = {i for i, t in enumerate(done) if t.number in {b.number for b in study.best_trials}}
    ties = [(0.9, 100), (0.9, 100), (0.95, 200), (0.9, 150), (0.8, 50), (0.95, 250), (0.7, 50)]
    return (("a random search of pipeline.hybrid on LeNet-300-100, (validation accuracy, "
             f"bytes) of its {len(points)} trials", points, front),
            ("7 points with ties: (0.9, 100) twice, (0.9, 150), (0.95, 200) and (0.95, 250), "
             "(0.8, 50) and (0.7, 50)", ties, _front_of(ties)))


def check_pareto_front(function) -> bool | None:
    """``function(points)`` -> the indices of the points no other point dominates, where each
    point is (accuracy, bytes), accuracy to maximize and bytes to minimize; the oracle is
    Optuna's ``study.best_trials``."""
    cases = {label: (points, front) for label, points, front in _front_cases()}

    def judge(label, result, args, kwargs):
        points, want = cases[label]
        got = _indices(result)
        if isinstance(got, str):
            return got
        if got == want:
            return None
        everyone = set(range(len(points)))
        hint = ""
        if got == everyone - want:
            hint = ": those are the dominated points; the front is the others"
        elif got == _front_of(points, ("maximize", "maximize")):
            hint = ": that is the front with bytes maximized; fewer bytes are better"
        elif got == _front_of(points, ("minimize", "minimize")):
            hint = ": that is the front with accuracy minimized; higher accuracy is better"
        elif got < want and len({points[i] for i in want - got} & {points[i] for i in got}):
            hint = (": two points with equal values do not dominate each other (a point "
                    "dominates only if it is no worse in both and better in one): keep both")
        elif got > want:
            extra = sorted(got - want)
            hint = (f": point(s) {extra} are dominated, e.g. {points[extra[0]]} by one with "
                    "at least its accuracy and at most its bytes, better in one of them")
        return (f"expected indices {sorted(want)}, got {sorted(got)}{hint}")

    return run("pareto_front", function, [(label, (points,), {}) for label, points, _ in
                                          _front_cases()], judge,
               "your front equals Optuna's best_trials on a real study and on ties")


# ------------------------------------------------------------------ 2. energy per inference


@lru_cache(maxsize=1)
def _energy_cases() -> tuple:
    """(label, (file bytes, MACs charged, SRAM bytes), cost.energy's uJ): zoo networks and
    magnitude-pruned LeNet-300-100s (float weights, so every MAC is a float MAC), at
    ``cost.energy``'s 128 KB and at other sizes, one equal to the file."""
    from ..prune import Magnitude
    lenet300 = zoo.pretrained("lenet300")
    networks = {"dense LeNet-300-100": lenet300,
                "LeNet-300-100 pruned to 90%": Magnitude(sparsity=0.9).apply(lenet300),
                "LeNet-300-100 pruned to 95%": Magnitude(sparsity=0.95).apply(lenet300),
                "dense LeNet-5": zoo.pretrained("lenet5")}
    cases = []
    for name, model in networks.items():
        r = measure.report(model, latency=False)
        for sram in (cost.SRAM_BYTES, 0, 2 * 1024 * 1024, r.bytes):
            bill = cost.energy(r, sram_bytes=sram)
            assert bill.int8_macs == bill.binary_ops == bill.add_ops == 0, name
            said = "as large as the file" if sram == r.bytes else f"{sram:,} bytes"
            cases.append((f"{name} ({r.bytes:,} bytes, {bill.float_macs:,} MACs), SRAM {said}",
                          (r.bytes, bill.float_macs, sram), bill.energy_uj))
    return tuple(cases)


def _energy_by(file_bytes, macs, sram, word=4, fits=None, mac_pj=None, ceil=True):
    """The energy (uJ) with one of the usual mistakes switched on."""
    fits = file_bytes <= sram if fits is None else fits
    words = math.ceil(file_bytes / word) if ceil else file_bytes / word
    memory = words * (cost.SRAM_READ_PJ if fits else cost.DRAM_READ_PJ)
    compute = macs * (mac_pj if mac_pj is not None else cost.FLOAT32_MULT_PJ + cost.FLOAT32_ADD_PJ)
    return (memory + compute) / 1e6


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(b), 1e-12)


def check_inference_energy(function) -> bool | None:
    """``function(file_bytes, macs, sram_bytes)`` -> microjoules of one inference: the file
    read once in 32-bit words (from SRAM at 5 pJ each if it fits in ``sram_bytes``, else
    from DRAM at 640 pJ) plus ``macs`` float multiply-adds (3.7 + 0.9 pJ each); the oracle is
    ``cost.energy``."""
    want = {label: uj for label, _, uj in _energy_cases()}

    def judge(label, result, args, kwargs):
        file_bytes, macs, sram = args
        try:
            got = float(result)
        except (TypeError, ValueError):
            return f"expected a number of microjoules, got {type(result).__name__}"
        expected = want[label]
        if _close(got, expected):
            return None
        hint = ""
        wrong = {"you returned picojoules; divide by 10^6 for microjoules":
                 _energy_by(file_bytes, macs, sram) * 1e6,
                 "you charged a read per byte; the memory is read in 32-bit words (4 bytes)":
                 _energy_by(file_bytes, macs, sram, word=1),
                 "a multiply-add is a multiply (3.7 pJ) AND an add (0.9 pJ)":
                 _energy_by(file_bytes, macs, sram, mac_pj=cost.FLOAT32_MULT_PJ),
                 "a file as large as the SRAM fits in it (file bytes <= SRAM bytes)":
                 _energy_by(file_bytes, macs, sram, fits=file_bytes < sram),
                 "a file that fits in the SRAM is read from it at 5 pJ a word, not from DRAM":
                 _energy_by(file_bytes, macs, sram, fits=False),
                 "a file larger than the SRAM is read from DRAM at 640 pJ a word":
                 _energy_by(file_bytes, macs, sram, fits=True),
                 "a last, partly filled word is still one read: round the words up":
                 _energy_by(file_bytes, macs, sram, ceil=False)}
        for sentence, value in wrong.items():
            if _close(got, value) and not _close(value, expected):
                hint = f": {sentence}"
                break
        return f"expected {expected:.6g} uJ, got {got:.6g}{hint}"

    return run("inference_energy", function, [(label, args, {}) for label, args, _ in
                                              _energy_cases()], judge,
               "equal to cost.energy on four networks at four SRAM sizes")


# ------------------------------------------------------------------ 3. trials to reach


@lru_cache(maxsize=1)
def _reach_cases() -> tuple:
    """(label, (trial records, threshold, budget), the bench's answer): the two one-objective
    studies, each at thresholds reached early, late and never, at the budget and without one."""
    from ..bench.search_samplers import trials_to_reach
    from ..lessons import fits, trial_records
    studies = _studies()
    budget = studies["dense_bytes"] / 25
    cases = []
    for name in ("random at 1/25", "hyperband at 1/25"):
        study = studies[name]
        records = trial_records(study)
        within = sorted(r["accuracy"] for r in records if fits(r, budget))
        complete = sorted(r["accuracy"] for r in records if r["state"] == "complete")
        for threshold, cap, said in ((within[0], budget, "the lowest accuracy within budget"),
                                     (within[-1], budget, "the best accuracy within budget"),
                                     (within[-1] + 0.001, budget, "above every trial's"),
                                     (complete[-1], math.inf, "the best accuracy, no budget")):
            cases.append((f"{name} ({len(records)} trials), threshold {threshold:.4f} ({said}), "
                          f"budget {cap:,.0f} bytes", (records, threshold, cap),
                          trials_to_reach(study, threshold, cap)))
    return tuple(cases)


def check_trials_to_reach(function) -> bool | None:
    """``function(trials, threshold, budget)`` -> how many trials were spent (counting from 1,
    pruned and failed ones included) until the first complete trial whose accuracy is at least
    ``threshold`` and whose bytes are at most ``budget``; None if none is. ``trials`` are
    records in the order they ran; the oracle is ``bench.search_samplers.trials_to_reach``."""
    from ..lessons import fits
    want = {label: reach for label, _, reach in _reach_cases()}

    def judge(label, result, args, kwargs):
        records, threshold, budget = args
        expected = want[label]
        if result is not None and (isinstance(result, bool) or not isinstance(result, int)):
            return f"expected a whole number or None, got {result!r}"
        if result == expected:
            return None
        hint = ""
        meets = lambda r, cap: fits(r, cap) and r["accuracy"] >= threshold
        first = next((i for i, r in enumerate(records) if meets(r, budget)), None)
        any_size = next((i for i, r in enumerate(records) if meets(r, math.inf)), None)
        counted = [r for r in records if r["state"] == "complete"]
        among = next((i for i, r in enumerate(counted) if meets(r, budget)), None)
        from_zero = first is not None and result == first
        skipped = among is not None and result == among + 1 and among + 1 != expected
        if expected is None and result is not None:
            hint = ": no trial meets both the threshold and the budget; return None"
        elif from_zero and skipped:
            hint = (": count from 1 (the first trial is 1), and count every trial, pruned and "
                    "failed ones included")
        elif from_zero:
            hint = ": count from 1 (the first trial is 1), not the trial's 0-based number"
        elif skipped:
            hint = (": pruned and failed trials were spent too (Hyperband's prunes cost a "
                    "proposal each): count every trial")
        elif any_size is not None and result == any_size + 1:
            hint = ": that trial's file is over the budget; it must meet both"
        return f"expected {expected}, got {result!r}{hint}"

    return run("trials_to_reach", function, [(label, args, {}) for label, args, _ in
                                             _reach_cases()], judge,
               "the same count as the bench on two searches at four thresholds")
