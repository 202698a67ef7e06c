"""The bandit search: validation accuracy at a byte budget, weak trials stopped early.

Optuna cannot prune a multi-objective trial, so the two objectives become one objective and
one constraint: maximize validation accuracy among files within ``byte_budget``. A trial is
pruned before it trains when its file would exceed the budget, predicted by applying the same
settings with every ``epochs`` set to 0. That is an estimate: the sparsity and the bit-widths,
which set most of the bytes, are the same, but masks chosen between training rounds and the
entropy of trained codebook indices can differ. So a trial is checked again after training,
and pruned if its real file exceeds the budget: no pruned trial can be returned. The others
report their validation accuracy after every epoch of every training run of the searched
method (a ``train.Hook`` added to each training step's hooks, counting epochs across the
runs of a chain), and ``HyperbandPruner`` (successive halving over brackets of training
epochs) stops those that fall behind. Hyperband assigns a
trial to a bracket from a hash of the study name and the trial number: it is reproducible only
with a fixed study name.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import optuna

from .. import codec
from ..domains import Int, Invalid, knob
from ..method import Method, TrainingBase
from ..pipeline import Chain
from ..train import Hook, evaluate
from . import space as spaces
from .methods import BayesSearch, Search, figures


class ReportEpochs(Hook):
    """After each epoch: report validation accuracy to the trial, stop it if Hyperband says."""

    def __init__(self, trial, val):
        self.trial, self.val, self.step = trial, val, 0

    def after_epoch(self, model, epoch):
        self.step += 1
        self.trial.report(evaluate(model, self.val), self.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"stopped by Hyperband after {self.step} epochs")


def steps_of(method: Method) -> list[Method]:
    """The methods a network goes through: a chain's steps, else the method itself."""
    return method.methods() if isinstance(method, Chain) else [method]


def without_training(method: Method) -> Method | None:
    """``method`` with no training epochs; None if it cannot run without them (DNS prunes
    while it trains, so only training says which weights it keeps)."""
    if "epochs" not in {f.name for f in fields(method)}:
        return method
    try:
        return replace(method, epochs=0)
    except ValueError:
        return None


def with_hook(method: Method, hook: Hook) -> Method:
    """``method`` whose every training run also gets ``hook`` (this instance only)."""
    if isinstance(method, TrainingBase):
        own = method.training_hooks
        method.training_hooks = lambda: [*own(), hook]
    return method


def apply_steps(methods: list[Method], model, data):
    for method in methods:
        model = method.apply(model, data)
    return model


@dataclass
class BanditSearch(BayesSearch):
    """TPE proposes, Hyperband (Li et al. 2018) stops weak trials after a few epochs: Optuna's
    ``TPESampler`` with its ``HyperbandPruner``, one objective (validation accuracy) at
    ``byte_budget`` (a share of the input network's file)."""
    id = "search.bandit"
    reference = ("Li, Jamieson, DeSalvo, Rostamizadeh, Talwalkar 2018, Hyperband: A Novel "
                 "Bandit-Based Approach to Hyperparameter Optimization")
    smoke = {"method": "prune.iterative", "fixed": {"rounds": 1, "epochs": 1},
             "space": {"sparsity": (0.85, 0.95)}, "byte_budget": 0.5, "trials": 2,
             "eval_images": 32, "startup_trials": 1}

    objectives: tuple = ("accuracy",)
    byte_budget: float | None = 0.25
    reduction_factor: int = knob(3, Int(2, 100))

    def validate(self):
        super().validate()
        if self.objectives != ("accuracy",):
            raise ValueError(f"{type(self).__name__}.objectives={self.objectives!r}: allowed "
                             "is ('accuracy',): Optuna cannot prune multi-objective trials; "
                             "the bytes are the constraint byte_budget")
        if self.byte_budget is None:
            raise ValueError(f"{type(self).__name__}.byte_budget=None: allowed is a share "
                             "of the input network's file, in (0, 1]")

    def pruner(self):
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto",
                                              reduction_factor=self.reduction_factor)

    def trial(self, trial, model, train, val, budget):
        point = spaces.suggest(trial, self.method, self.fixed, self.search_space())
        try:
            steps = steps_of(self.searched(point))
        except Invalid as err:
            raise ValueError(str(err)) from None
        untrained = [without_training(m) for m in steps]
        if None not in untrained:       # else the file is known only after the training
            predicted = len(codec.encode(apply_steps(untrained, model, train)))
            trial.set_user_attr("predicted_bytes", predicted)
            if predicted > budget:
                raise optuna.TrialPruned(f"{predicted} bytes predicted, budget {budget:.0f}")
        hook = ReportEpochs(trial, val)
        out = apply_steps([with_hook(m, hook) for m in steps], model, train)
        found = figures(out, val, latency=False)
        for key, value in found.items():
            trial.set_user_attr(key, value)
        if found["bytes"] > budget:
            raise optuna.TrialPruned(f"{found['bytes']} bytes, budget {budget:.0f}")
        return [found["accuracy"]], out


__all__ = ["BanditSearch", "Search"]
