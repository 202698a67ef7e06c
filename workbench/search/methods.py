"""Search as a compressor: try settings of another method, return the best network found.

The four ids differ only in who proposes the next settings: Optuna's ``RandomSampler``
(Bergstra and Bengio 2012), ``GridSampler``, ``TPESampler`` (Bergstra et al. 2011) and, for
the bandit, TPE with a ``HyperbandPruner`` (Li et al. 2018) that stops weak trials early.

Selection never sees the test set: ``apply(model, data)`` splits the training data it is given
into ``eval_images`` validation images (a seeded random draw) and the rest, on which the
searched method trains (if it trains); trials are measured on the validation images. The
network returned is, among the complete trials whose file meets ``byte_budget``, the smallest
file within ``tolerance`` of the best validation accuracy (or the best by the objectives in
order when accuracy is not the first), re-applied from its settings (methods are
deterministic) and checked to have the bytes the study recorded.

A ``byte_budget`` is an Optuna constraint (``Trial.set_constraint``): ``study.best_trials``
holds only trials that meet it, whatever the sampler, and TPE (``search.bayes``) learns to
propose files within it; random and grid proposals ignore it.

Several objectives make a multi-objective study (its Pareto front is ``study.best_trials``).
Optuna cannot prune those, so the bandit search is a constrained single objective: validation
accuracy at a byte budget. A trial whose file would exceed the budget is pruned before it trains
(its bytes predicted by the same settings at zero epochs), again after it trained if it still
does; the others report their validation accuracy after every training epoch, and Hyperband
stops the weak ones.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

from .. import codec
from ..data import Dataset
from ..domains import Domain, Int, Invalid, Optional, Real, knob
from ..method import Method, Tags, derived_seed
from ..train import evaluate, quiet
from . import space as spaces
from .study import finished, open_storage, open_study, run_trials

# objective -> direction; a new objective is one entry here and one in ``figures``
OBJECTIVES = {"accuracy": "maximize", "bytes": "minimize", "macs": "minimize",
              "latency": "minimize", "energy": "minimize"}


@dataclass(frozen=True)
class Objectives(Domain):
    def check(self, value):
        if isinstance(value, (str, dict)) or not isinstance(value, (tuple, list)) or not value \
                or any(v not in OBJECTIVES for v in value) or len(set(value)) != len(value):
            raise Invalid
        return tuple(value)

    def describe(self):
        return f"a non-empty tuple of distinct objectives from {tuple(OBJECTIVES)}"

    def bad_values(self):
        return ["accuracy", (), ("speed",), ("bytes", "bytes"), None, 5]


@dataclass(frozen=True)
class SearchedId(Domain):
    def check(self, value):
        from .. import METHODS
        if not isinstance(value, str) or value not in METHODS or value.startswith("search."):
            raise Invalid
        return value

    def describe(self):
        return "a catalogue id of workbench.METHODS other than search.*"

    def bad_values(self):
        return [5, None, "no.such", "search.random"]


def holdout(data: Dataset, n: int, seed: int) -> tuple[Dataset, Dataset]:
    """(training part, ``n`` validation images): a seeded random split, disjoint."""
    if not 0 < n < len(data):
        raise ValueError(f"eval_images={n}: the data has {len(data)} images; allowed is "
                         f"1..{len(data) - 1} (the rest is what the searched method trains on)")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    part = lambda index: Dataset(data.name, data.split, data.images[index], data.labels[index])
    return part(order[n:].sort().values), part(order[:n].sort().values)


def figures(model: nn.Module, val: Dataset, latency: bool) -> dict:
    """What a trial records: validation accuracy, real bytes, effective MACs, the energy of
    one inference by ``cost.energy`` at its defaults (and latency)."""
    from .. import measure
    rep = measure.report(model, data=None, latency=False)
    out = {"accuracy": evaluate(model, val), "bytes": rep.bytes, "macs": rep.effective_macs,
           "energy": rep.energy_uj}
    if latency:
        out["latency"] = measure.latency_ms(measure.shipped(model), val.shape, batch=1,
                                            threads=1, min_run_time=0.1)
    return out


def no_trial_completed(study) -> str:
    """Why a study has no result: how many trials failed or were pruned, and the last error."""
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    said = next((t.user_attrs["error"] for t in reversed(failed) if "error" in t.user_attrs),
                None)
    return (f"study {study.study_name!r}: no trial completed ({len(trials)} trials: "
            f"{len(failed)} failed, {pruned} pruned, {running} still running)"
            + (f"; the last failure: {said}" if said else "")
            + "; allowed is a space whose settings the method accepts, a byte budget some "
              "trials can meet (pruned trials missed it or fell behind), and the time for "
              "a trial to end")


@dataclass
class Search(Method):
    """Try ``trials`` settings of the method ``method`` and return the best network found."""
    reference = "Bergstra & Bengio 2012 (random); Bergstra et al. 2011 (TPE); Li et al. 2018"
    sliders = {"trials": (2, 100, 1)}
    smoke = {"method": "prune.magnitude", "space": {"sparsity": (0.5, 0.95)}, "trials": 2,
             "eval_images": 32}
    effects = ("fewer_nonzeros", "fewer_bytes")

    method: str = knob("prune.magnitude", SearchedId())
    space: dict = knob({}, spaces.SpaceSpec())
    fixed: dict = knob({}, spaces.FlatSettings())
    trials: int = knob(20, Int(1, 100_000))
    objectives: tuple = knob(("accuracy", "bytes"), Objectives())
    # the largest file allowed, as a share of the input network's file (1/60: 60x smaller)
    byte_budget: float | None = knob(None, Optional(Real(1e-6, 1.0)))
    # validation accuracy (a fraction) the returned network may give up for a smaller file:
    # without it, one more right image would beat a file ten times smaller
    tolerance: float = knob(0.01, Real(0.0, 1.0))
    eval_images: int = knob(1000, Int(1, 1_000_000))
    seed: int = knob(0, Int(0, 2**31 - 1))

    # -- settings
    def validate(self):
        # Each fixed key is checked alone, so that the error names it; a dotted key reaches
        # into a step or a settings dict, and is read against the plain keys (a chain's
        # steps, Deep Compression's pruner), checked first.
        plain = {k: v for k, v in self.fixed.items() if "." not in k}
        for key, value in sorted(self.fixed.items(), key=lambda item: "." in item[0]):
            needs = {"steps", key} | spaces.named_by(self.method, key)
            context = plain if "." in key else {k: v for k, v in plain.items() if k in needs}
            try:
                spaces.build(self.method, {**context, key: value})
            except Invalid as err:
                raise ValueError(f"{type(self).__name__}.fixed[{key!r}]={value!r}: {err}") \
                    from None
        try:
            spaces.build(self.method, self.fixed)
        except Invalid as err:
            raise ValueError(f"{type(self).__name__}.fixed={self.fixed!r}: {err}") from None
        try:
            spaces.check_space(self.method, self.fixed, self.space)
            if not self.search_space():
                raise Invalid(f"nothing to search: {self.method} declares no sliders; "
                              "allowed is a non-empty space")
        except Invalid as err:
            raise ValueError(f"{type(self).__name__}.space={self.space!r}: {err}") from None

    def search_space(self) -> dict:
        return self.space or spaces.default_space(self.method, self.fixed)

    def searched(self, point: dict | None = None) -> Method:
        return spaces.build(self.method, {**self.fixed, **(point or {})})

    def tags(self) -> Tags:
        return Tags(needs_data=True)

    def supports(self, model):
        return self.searched().supports(model)

    def check_model(self, model):
        self.searched().check_model(model)

    # -- Optuna
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def pruner(self) -> optuna.pruners.BasePruner | None:
        return None

    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def n_trials(self) -> int:
        return self.trials

    def open(self, storage=None, name: str = "search", mode: str = "new",
             worker: int = 0) -> optuna.Study:
        """The study of this search; worker ``k``'s sampler is seeded ``derived_seed(seed,
        k)``, so workers do not propose the same points."""
        return open_study(open_storage(storage), name, self.directions(),
                          self.sampler(derived_seed(self.seed, worker)), self.pruner(), mode)

    # -- the search
    def compress(self, model: nn.Module, data=None) -> nn.Module:
        return self.run(model, data, self.open())[0]

    def budget(self, model: nn.Module) -> float:
        if self.byte_budget is None:
            return math.inf
        return self.byte_budget * len(codec.encode(model))

    def run(self, model: nn.Module, data: Dataset, study: optuna.Study, worker: int = 0,
            seconds: float | None = None):
        """Run the trials into ``study`` (each marked with ``worker``); (best network, study).
        ``seconds``: start no trial after this long (the study may then hold fewer than
        ``trials``). The network of the best trial this process ran is kept, not made again."""
        deadline = None if seconds is None else time.monotonic() + seconds
        train, val = holdout(data, self.eval_images, self.seed)
        budget = self.budget(model)
        kept = {}

        def evaluate(trial):
            trial.set_user_attr("worker", worker)
            values, out = self.trial(trial, model, train, val, budget)
            if trial.user_attrs["bytes"] <= budget and self.better(values, kept.get("values")):
                kept.update(number=trial.number, values=values, model=out)
            return values

        with quiet():
            run_trials(study, evaluate, self.n_trials(), deadline=deadline)
            best = self.best(study, budget)
            if kept.get("number") == best.number:
                return kept["model"], study
            return self.rebuild(best, model, train), study

    def better(self, values, than) -> bool:
        """Whether ``values`` beat ``than`` (None: nothing yet) by the objectives in order."""
        sign = [1 if d == "maximize" else -1 for d in self.directions()]
        return than is None or [s * v for s, v in zip(sign, values)] > \
            [s * v for s, v in zip(sign, than)]

    def trial(self, trial, model, train, val, budget):
        point = spaces.suggest(trial, self.method, self.fixed, self.search_space())
        try:
            method = self.searched(point)
        except Invalid as err:
            raise ValueError(str(err)) from None
        out = method.apply(model, train)
        found = figures(out, val, "latency" in self.objectives)
        for key, value in found.items():
            trial.set_user_attr(key, value)
        if math.isfinite(budget):
            # Optuna's constraint: TPE then proposes within the budget (c-TPE), and the
            # study's best trials (the printed front) are those that meet it
            trial.set_constraint("bytes_over_budget", found["bytes"] - budget)
        return [found[o] for o in self.objectives], out

    def best(self, study, budget: float):
        """The trial returned, among the complete ones within budget: when accuracy is the
        first objective, the smallest file within ``tolerance`` of the best accuracy;
        otherwise the best by the objectives in order (the first of equals)."""
        done = finished(study)
        if not done:
            raise ValueError(no_trial_completed(study))
        return self.best_of(done, budget)

    def best_of(self, done: list, budget: float):
        """``best`` among the complete trials ``done`` (e.g. the study's less some tried)."""
        within = [t for t in done if t.user_attrs["bytes"] <= budget]
        if not within:
            raise ValueError(f"{type(self).__name__}.byte_budget={self.byte_budget!r}: no "
                             f"trial's file fits {budget:.0f} bytes; allowed is a larger "
                             "budget, more trials or another space")
        if self.objectives[0] == "accuracy":
            top = max(t.values[0] for t in within)
            close = [t for t in within if t.values[0] >= top - self.tolerance]
            return min(close, key=lambda t: (t.user_attrs["bytes"], -t.values[0], t.number))
        best = within[0]
        for t in within[1:]:        # the first of equals, as ``better`` keeps it
            best = t if self.better(t.values, best.values) else best
        return best

    def rebuild(self, trial, model, train) -> nn.Module:
        """The network of ``trial``, applied again from its settings; its file must have
        the bytes the study recorded (a method that is not deterministic fails here)."""
        out = self.searched(trial.params).apply(model, train)
        if len(codec.encode(out)) != trial.user_attrs["bytes"]:
            raise RuntimeError(f"trial {trial.number} of {self.method} gave "
                               f"{trial.user_attrs['bytes']} bytes, re-applied "
                               f"{len(codec.encode(out))}: the method is not deterministic")
        return out


@dataclass
class RandomSearch(Search):
    """Settings drawn at random (Bergstra and Bengio 2012): Optuna's ``RandomSampler``."""
    id = "search.random"

    def sampler(self, seed):
        return optuna.samplers.RandomSampler(seed=seed)


@dataclass
class GridSearch(Search):
    """Every point of a grid, in a seeded random order: Optuna's ``GridSampler``. A range
    needs a step; the search stops at the grid's size if ``trials`` is larger."""
    id = "search.grid"
    reference = "Exhaustive grid search, as Bergstra & Bengio 2012 compare it"
    smoke = {**Search.smoke, "space": {"sparsity": (0.5, 0.9, 0.2)}}

    def validate(self):
        super().validate()
        try:
            spaces.grid_of(self.method, self.fixed, self.search_space())
        except Invalid as err:
            raise ValueError(f"{type(self).__name__}.space={self.space!r}: {err}") from None

    def grid(self) -> dict:
        return spaces.grid_of(self.method, self.fixed, self.search_space())

    def n_trials(self):
        return min(self.trials, math.prod(len(v) for v in self.grid().values()))

    def sampler(self, seed):
        return optuna.samplers.GridSampler(self.grid(), seed=seed)


@dataclass
class BayesSearch(Search):
    """Tree-structured Parzen estimators (Bergstra et al. 2011): Optuna's ``TPESampler``,
    random for the first ``startup_trials`` trials; multi-objective with several
    objectives. ``constant_liar`` keeps parallel workers from proposing the same point."""
    id = "search.bayes"
    reference = "Bergstra, Bardenet, Bengio, Kegl 2011, Algorithms for Hyper-Parameter Optimization"
    smoke = {**Search.smoke, "startup_trials": 1}

    startup_trials: int = knob(10, Int(0, 100_000))

    def sampler(self, seed):
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup_trials,
                                          constant_liar=True)

