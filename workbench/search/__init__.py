"""Catalogue section G's searches: compression settings found by Optuna (lesson 08).

``search.random``, ``search.grid``, ``search.bayes`` and ``search.bandit`` are methods like any
other (``apply(model, data)`` returns a network): each tries settings of another method,
measures every trial on a validation split of the training data, and returns the best network
it found. ``space`` declares what is searched, ``study`` where the trials live and how workers
share them; ``command`` is ``python -m workbench search``.
"""
from .bandit import BanditSearch
from .methods import OBJECTIVES, BayesSearch, GridSearch, RandomSearch, Search, holdout
from .study import open_storage, open_study, run_trials

METHODS = (RandomSearch, GridSearch, BayesSearch, BanditSearch)
# the command's --sampler -> the method that uses that Optuna sampler
SAMPLERS = {"random": RandomSearch, "grid": GridSearch, "tpe": BayesSearch,
            "hyperband": BanditSearch}

__all__ = ["METHODS", "OBJECTIVES", "SAMPLERS", "BanditSearch", "BayesSearch", "GridSearch",
           "RandomSearch", "Search", "holdout", "open_storage", "open_study", "run_trials"]
