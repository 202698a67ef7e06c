"""The searches on LeNet-300-100: each id really uses its Optuna sampler or pruner, the network
returned is the study's best trial within budget (same bytes when re-applied), one worker is
reproducible, and studies refuse to be overwritten and resume where they stopped."""
from __future__ import annotations

import itertools

import optuna
import pytest
import torch
from optuna.trial import TrialState

from workbench import codec, data, zoo
from workbench.method import derived_seed
from workbench.search import (
    BanditSearch,
    BayesSearch,
    GridSearch,
    RandomSearch,
    holdout,
    open_storage,
    open_study,
    run_trials,
)

HYBRID = {"method": "pipeline.hybrid", "space": {"0.sparsity": (0.5, 0.95), "1.k": (4, 32)},
          "eval_images": 200}


@pytest.fixture(scope="module")
def lenet():
    return zoo.pretrained("lenet300")


@pytest.fixture(scope="module")
def train():
    return data.load("mnist", "train").subset(1000, seed=1)


def params_of(study):
    return [t.params for t in study.trials]


def test_the_split_is_disjoint_and_seeded(train):
    part, val = holdout(train, 200, seed=3)
    assert len(part) + len(val) == len(train) and len(val) == 200
    rows = lambda d: {tuple(x.flatten().tolist()) for x in d.images}
    assert not rows(part) & rows(val)
    assert torch.equal(holdout(train, 200, seed=3)[1].images, val.images)


def test_random_search_returns_the_best_trial_within_budget_with_its_recorded_bytes(lenet,
                                                                                  train):
    search = RandomSearch(**HYBRID, trials=5, byte_budget=0.15)
    best, study = search.run(lenet, train, search.open())
    budget = 0.15 * len(codec.encode(lenet))
    within = [t for t in study.trials if t.state == TrialState.COMPLETE
              and t.user_attrs["bytes"] <= budget]
    # the oracle: the smallest file within budget and within 1 point of the best accuracy
    top = max(t.values[0] for t in within)
    chosen = min((t for t in within if t.values[0] >= top - search.tolerance),
                 key=lambda t: (t.user_attrs["bytes"], -t.values[0]))
    assert search.tolerance == 0.01
    assert len(codec.encode(best)) == chosen.user_attrs["bytes"] <= budget
    again = search.searched(chosen.params).apply(lenet, holdout(train, 200, 0)[0])
    assert codec.encode(again) == codec.encode(best)
    # the proposals are RandomSampler's at the search's seed
    oracle = optuna.create_study(sampler=optuna.samplers.RandomSampler(
        seed=derived_seed(search.seed, 0)))
    expected = []
    for _ in range(5):
        trial = oracle.ask()
        expected.append({"0.sparsity": trial.suggest_float("0.sparsity", 0.5, 0.95),
                         "1.k": trial.suggest_int("1.k", 4, 32)})
        oracle.tell(trial, 0.0)
    assert params_of(study) == expected
    # the Pareto front is the non-dominated set of (accuracy up, bytes down) among the
    # trials whose file meets the budget (an Optuna constraint)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE
            and t.user_attrs["bytes"] <= budget]
    assert all(t.constraints == {"bytes_over_budget": t.user_attrs["bytes"] - budget}
               for t in study.trials if t.state == TrialState.COMPLETE)
    dominated = {a.number for a, b in itertools.permutations(done, 2)
                 if b.values[0] >= a.values[0] and b.values[1] <= a.values[1]
                 and b.values != a.values}
    assert {t.number for t in study.best_trials} == {t.number for t in done} - dominated


def test_one_worker_is_reproducible_and_the_seed_matters(lenet, train):
    first = RandomSearch(**HYBRID, trials=3, seed=5)
    again = RandomSearch(**HYBRID, trials=3, seed=5)
    other = RandomSearch(**HYBRID, trials=3, seed=6)
    runs = [s.run(lenet, train, s.open()) for s in (first, again, other)]
    assert params_of(runs[0][1]) == params_of(runs[1][1]) != params_of(runs[2][1])
    assert [t.values for t in runs[0][1].trials] == [t.values for t in runs[1][1].trials]
    assert codec.encode(runs[0][0]) == codec.encode(runs[1][0])


def test_grid_search_visits_exactly_the_grid(lenet, train):
    search = GridSearch(method="pipeline.hybrid", trials=50, eval_images=200,
                        space={"0.sparsity": (0.5, 0.9, 0.2), "1.k": [4, 16]})
    assert search.n_trials() == 6
    _, study = search.run(lenet, train, search.open())
    assert isinstance(study.sampler, optuna.samplers.GridSampler)
    visited = sorted((t.params["0.sparsity"], t.params["1.k"]) for t in study.trials)
    assert visited == sorted(itertools.product([0.5, 0.7, 0.9], [4, 16]))


def test_tpe_follows_random_startup_then_proposes_its_own_points(lenet, train):
    bayes = BayesSearch(**HYBRID, trials=6, startup_trials=3)
    random = RandomSearch(**HYBRID, trials=6)
    (_, tpe_study), (_, random_study) = [s.run(lenet, train, s.open())
                                         for s in (bayes, random)]
    assert isinstance(tpe_study.sampler, optuna.samplers.TPESampler)
    assert params_of(tpe_study)[3:] != params_of(random_study)[3:]


def test_tpe_with_one_objective_learns_the_budget_and_its_best_trial_meets_it(lenet, train):
    # accuracy alone pulls TPE towards large files; the budget, a constraint, pulls it back
    settings = dict(**HYBRID, trials=16, startup_trials=4, objectives=("accuracy",))
    budget = 0.04 * len(codec.encode(lenet))
    over = {}
    for share in (0.04, None):
        search = BayesSearch(**settings, byte_budget=share)
        _, study = search.run(lenet, train, search.open())
        proposed = [t for t in study.trials if t.number >= 4]
        over[share] = sum(t.user_attrs["bytes"] > budget for t in proposed)
        if share is not None:
            assert study.best_trials[0].user_attrs["bytes"] <= budget
    assert over[0.04] <= over[None] - 3, over     # of 12 proposals


def test_the_bandit_prunes_over_budget_and_weak_trials_and_returns_neither(lenet, train):
    search = BanditSearch(method="prune.iterative", fixed={"rounds": 1, "epochs": 4},
                          space={"sparsity": (0.6, 0.99), "lr": (0.001, 0.3)},
                          byte_budget=0.3, trials=14, startup_trials=4, eval_images=200,
                          reduction_factor=2)
    best, study = search.run(lenet, train, search.open())
    assert isinstance(study.pruner, optuna.pruners.HyperbandPruner)
    budget = 0.3 * len(codec.encode(lenet))
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    before_training = [t for t in pruned if not t.intermediate_values]
    by_hyperband = [t for t in pruned if t.intermediate_values]
    assert before_training and all(t.user_attrs["predicted_bytes"] > budget
                                   for t in before_training)
    # stopped while within budget, after fewer epochs than a complete trial reports
    assert by_hyperband and all(t.user_attrs["predicted_bytes"] <= budget
                                for t in by_hyperband)
    assert any(len(t.intermediate_values) < 4 for t in by_hyperband)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert study.best_trial.value == max(t.value for t in complete)
    # returned: the smallest complete file within 1 point of the best validation accuracy
    close = [t for t in complete if t.value >= study.best_trial.value - search.tolerance]
    assert len(codec.encode(best)) == min(t.user_attrs["bytes"] for t in close) <= budget


def test_the_bandit_trains_a_dns_trial_whose_file_it_cannot_predict(lenet, train):
    # DNS prunes while it trains (no run at 0 epochs): the budget is checked after training,
    # and Hyperband still sees every epoch
    fixed = {"pruner": "prune.dns", "prune.epochs": 2, "quant_epochs": 1}
    search = BanditSearch(method="pipeline.deep_compression", fixed=fixed,
                          space={"prune.c_rate": (0.5, 1.5)}, byte_budget=0.5, trials=2,
                          startup_trials=2, eval_images=200)
    _, study = search.run(lenet, train, search.open())
    assert len(study.trials) == 2
    for t in study.trials:
        assert "predicted_bytes" not in t.user_attrs
        assert t.state == TrialState.COMPLETE and len(t.intermediate_values) == 3


def test_the_default_search_compresses_rather_than_keeping_the_most_accurate(lenet, train):
    # accuracy first, bytes second, no budget: without a tolerance, one more right image
    # would win over a file many times smaller
    search = RandomSearch(method="prune.magnitude", trials=6, eval_images=200)
    best, study = search.run(lenet, train, search.open())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    top = max(t.values[0] for t in complete)
    smallest_close = min(t.user_attrs["bytes"] for t in complete if t.values[0] >= top - 0.01)
    assert len(codec.encode(best)) == smallest_close


def test_an_unmet_budget_is_a_clear_error(lenet, train):
    search = RandomSearch(**HYBRID, trials=2, byte_budget=1e-4)
    with pytest.raises(ValueError, match=r"RandomSearch\.byte_budget=0.0001: no trial"):
        search.run(lenet, train, search.open())


def test_a_study_without_a_complete_trial_says_why(lenet, train, monkeypatch):
    search = RandomSearch(**HYBRID, trials=2)
    with pytest.raises(ValueError, match=r"no trial completed \(0 trials: 0 failed"):
        search.run(lenet, train, search.open(), seconds=0)     # out of time at once

    def diverges(self, trial, *args):
        raise ValueError("the loss diverged")
    monkeypatch.setattr(RandomSearch, "trial", diverges)
    with pytest.raises(ValueError, match=r"\(2 trials: 2 failed, 0 pruned, 0 still running\); "
                                         r"the last failure: the loss diverged"):
        search.run(lenet, train, search.open())


def test_a_study_is_never_overwritten_and_resumes_after_an_interruption(tmp_path, lenet,
                                                                        train):
    path = tmp_path / "study.journal"
    search = RandomSearch(**HYBRID, trials=3)
    study = search.open(path, "s")
    interrupted = study.ask()                       # a worker died during this trial
    with pytest.raises(ValueError, match="'s' exists already.*--resume"):
        search.open(path, "s")
    with pytest.raises(ValueError, match="nothing to resume"):
        search.open(path, "t", mode="resume")
    search.run(lenet, train, search.open(path, "s", mode="resume"))
    reloaded = optuna.load_study(study_name="s", storage=open_storage(path))
    states = [t.state for t in reloaded.trials]
    assert states[interrupted.number] == TrialState.FAIL
    assert states.count(TrialState.COMPLETE) == 3


def test_run_trials_counts_running_trials_of_other_workers():
    study = open_study(open_storage(None), "c", ["maximize"],
                       optuna.samplers.RandomSampler(seed=0))
    study.ask()                                      # another worker's trial, still running
    run_trials(study, lambda t: [t.suggest_float("x", 0, 1)], 3)
    assert len(study.trials) == 3


def test_run_trials_starts_no_trial_after_its_deadline(monkeypatch):
    # A clock that each trial moves on by one second: the count is exact, whatever the load.
    from types import SimpleNamespace

    from workbench.search import study as study_module
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(study_module, "time", SimpleNamespace(monotonic=lambda: clock.now))

    def one_second(t):
        clock.now += 1
        return [t.suggest_float("x", 0, 1)]

    fresh = lambda name: open_study(open_storage(None), name, ["maximize"],
                                    optuna.samplers.RandomSampler(seed=0))
    past = fresh("past")
    run_trials(past, one_second, 5, deadline=0.0)
    assert past.trials == []
    slow = fresh("slow")          # trials start at 0, 1 and 2 s; the deadline falls in the 3rd
    run_trials(slow, one_second, 100, deadline=2.5)
    assert len(slow.trials) == 3 and clock.now == 3    # the one running at the deadline ended
    assert all(t.state == TrialState.COMPLETE for t in slow.trials)


@pytest.mark.parametrize("minutes", ["0", "-5", "nan"])
def test_a_time_budget_that_is_not_positive_is_refused_before_any_work(minutes, tmp_path,
                                                                       capsys):
    from workbench.__main__ import main
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:     # an unknown model would fail later
        main(["search", "prune.magnitude", "--model", "no_such_model", "--minutes", minutes,
              "--out", str(out)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "allowed is a positive number" in err, err
    assert not out.exists()


def test_a_deep_compression_search_prints_the_reproduce_command_of_each_front_point():
    import shlex

    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    from workbench.search import BayesSearch
    from workbench.search.command import parse_pairs, reproduce_lines
    fixed = {"prune.layer_sparsity": {"features.0": 0.34}, "quant_epochs": 2}
    search = BayesSearch(method="pipeline.deep_compression", fixed=fixed, eval_images=300,
                         seed=7, space={"prune.sparsity": (0.9, 0.99)}, objectives=("accuracy",))
    study = search.open()
    study.add_trial(create_trial(value=0.99, params={"prune.sparsity": 0.95},
                                 distributions={"prune.sparsity": FloatDistribution(0.9, 0.99)},
                                 user_attrs={"bytes": 12345}))
    title, line, _ = reproduce_lines(search, study, "lenet5", smoke=False)
    assert "reproduce" in title and line.startswith("trial 0 (12345 bytes): OMP_NUM_THREADS=")
    words = shlex.split(line.split(": ", 1)[1])
    assert words[words.index("--model") + 1] == "lenet5"
    assert words[words.index("--holdout") + 1] == "300" and words[words.index("--seed") + 1] == "7"
    assert parse_pairs(words[words.index("--set") + 1:], "--set") == {**fixed,
                                                                      "prune.sparsity": 0.95}
    # other methods, and networks reproduce has no tables for, get no such line
    assert reproduce_lines(search, study, "vgg_small", smoke=False) == []
