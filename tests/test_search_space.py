"""The search space: declared from the searched method's own sliders (each step's for a chain),
checked against its domains, and turned into Optuna suggestions and grids."""
from __future__ import annotations

import optuna
import pytest

from workbench import METHODS
from workbench.pipeline import DeepCompression, Hybrid
from workbench.prune import Magnitude
from workbench.search import BanditSearch, BayesSearch, GridSearch, RandomSearch
from workbench.search import space as spaces


def test_the_default_space_is_the_sliders_in_effect():
    # by="sparsity" hides quality and threshold: they would be dimensions that change nothing
    assert RandomSearch(method="prune.magnitude").search_space() == \
        {"sparsity": Magnitude.sliders["sparsity"]}
    by_quality = RandomSearch(method="prune.magnitude", fixed={"by": "quality"})
    assert by_quality.search_space() == {"quality": Magnitude.sliders["quality"]}
    # a knob held fixed is not searched
    iterative = RandomSearch(method="prune.iterative", fixed={"epochs": 1, "lr": 0.05})
    assert set(iterative.search_space()) == {"sparsity", "output_sparsity", "rounds"}


def test_a_hybrid_chain_is_searched_step_by_step_from_the_steps_sliders():
    space = RandomSearch(method="pipeline.hybrid").search_space()
    steps = Hybrid().methods()
    assert space == {"0.sparsity": type(steps[0]).sliders["sparsity"],
                     "1.k": type(steps[1]).sliders["k"]}
    search = RandomSearch(method="pipeline.hybrid", space={"0.sparsity": (0.5, 0.9),
                                                           "0.use": [True, False]})
    kept = search.searched({"0.sparsity": 0.7, "0.use": True})
    assert kept.steps[0] == ("prune.magnitude", {"sparsity": 0.7})
    dropped = search.searched({"0.sparsity": 0.7, "0.use": False})
    assert [mid for mid, _ in dropped.steps] == ["quant.kmeans"]


def test_deep_compression_search_reaches_into_its_pruning_settings():
    search = BayesSearch(method="pipeline.deep_compression", fixed={"quant_epochs": 1},
                         space={"prune.sparsity": (0.9, 0.99), "fc_bits": (2, 6, 1)})
    method = search.searched({"prune.sparsity": 0.95, "fc_bits": 4})
    assert isinstance(method, DeepCompression)
    assert method.prune == {"sparsity": 0.95} and method.fc_bits == 4
    assert method.steps_settings()[1][1]["k"] == 2 ** 4 - 1
    # fc_bits is an Int knob: sampled as whole numbers
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    point = spaces.suggest(trial, search.method, search.fixed, search.search_space())
    assert isinstance(point["fc_bits"], int) and 0.9 <= point["prune.sparsity"] <= 0.99


def test_with_dns_as_pruner_the_search_reaches_into_dns_settings():
    fixed = {"pruner": "prune.dns", "prune.epochs": 1}
    search = BayesSearch(method="pipeline.deep_compression", fixed=fixed,
                         space={"prune.c_rate": (0.5, 4.0), "prune.surgery_share": [0.5, 0.75]})
    method = search.searched({"prune.c_rate": 2.5, "prune.surgery_share": 0.5})
    assert method.steps_settings()[0] == ("prune.dns", {"epochs": 1, "c_rate": 2.5,
                                                        "surgery_share": 0.5})
    # the knob's domain is DNS's (a Real), not that of the default pruner, which has no c_rate
    assert spaces.knob_domain(search.method, fixed, "prune.c_rate") == \
        spaces.domain_of(METHODS["prune.dns"], "c_rate")
    with pytest.raises(ValueError, match="c_rate"):
        BayesSearch(method="pipeline.deep_compression", fixed=fixed,
                    space={"prune.c_rate": (0.5, 40.0)})
    with pytest.raises(ValueError, match="unknown settings"):     # iterative has no c_rate
        BayesSearch(method="pipeline.deep_compression", space={"prune.c_rate": (0.5, 4.0)})
    # the whole prune dict fixed is read against the fixed pruner too
    whole = {"pruner": "prune.dns", "prune": {"c_rate": 2.0}}
    assert BayesSearch(method="pipeline.deep_compression", fixed=whole,
                       space={"fc_bits": (3, 5, 1)}).searched({"fc_bits": 4}).prune == \
        {"c_rate": 2.0}
    with pytest.raises(ValueError, match=r"fixed\['prune'\]=\{'rounds': 2\}: .*prune.dns"):
        BayesSearch(method="pipeline.deep_compression", space={"fc_bits": (3, 5, 1)},
                    fixed={"pruner": "prune.dns", "prune": {"rounds": 2}})
    # a fixed dotted key is read against the fixed pruner, and a wrong one is named
    with pytest.raises(ValueError, match=r"fixed\['prune.rounds'\]=2: .*prune.dns"):
        BayesSearch(method="pipeline.deep_compression", fixed={**fixed, "prune.rounds": 2},
                    space={"prune.c_rate": (0.5, 4.0)})


def test_grid_points_follow_the_steps_and_the_knobs_types():
    assert spaces.grid_values("prune.magnitude", {}, "sparsity", (0.5, 0.9, 0.2)) == \
        [0.5, 0.7, 0.9]
    assert spaces.grid_values("quant.kmeans", {}, "k", (2, 8, 2)) == [2, 4, 6, 8]
    grid = GridSearch(method="prune.magnitude").grid()["sparsity"]
    low, high, step = Magnitude.sliders["sparsity"]
    assert len(grid) == round((high - low) / step) + 1 and grid[0] == low and grid[-1] == high


@pytest.mark.parametrize("cls, settings, says", [
    (RandomSearch, {"space": {"nope": (0, 1)}}, "'nope'"),
    (RandomSearch, {"space": {"sparsity": (0.5, 2.0)}}, "sparsity"),
    (RandomSearch, {"space": {"k": [3]}}, "not knobs"),
    (RandomSearch, {"method": "pipeline.hybrid", "space": {"5.k": (2, 4)}}, "steps 0..1"),
    (GridSearch, {"space": {"sparsity": (0.5, 0.9)}}, "grid needs"),
    (BanditSearch, {"byte_budget": None}, "byte_budget"),
    (RandomSearch, {"method": "search.random"}, "other than search"),
])
def test_bad_spaces_say_what_is_wrong_naming_the_field(cls, settings, says):
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.") as err:
        cls(**settings)
    assert says in str(err.value)


def test_fixed_settings_are_checked_by_making_the_searched_method():
    with pytest.raises(ValueError, match=r"RandomSearch\.fixed\['sparsity'\]=5: "
                                         r"Magnitude\.sparsity=5"):
        RandomSearch(fixed={"sparsity": 5})
    with pytest.raises(ValueError, match=r"fixed\['no_such'\]"):
        RandomSearch(fixed={"no_such": 1})


def test_every_searchable_id_has_a_valid_default_space_or_says_why_not():
    """Each method with sliders can be searched at its defaults; one without says so."""
    for mid, cls in METHODS.items():
        if mid.startswith("search."):
            continue
        own = any(k in cls().settings() for k in cls.sliders)
        if not own and not spaces.is_chain_of_steps(cls):
            with pytest.raises(ValueError, match="nothing to search"):
                RandomSearch(method=mid)
        else:
            assert RandomSearch(method=mid).search_space()


@pytest.mark.parametrize("argv, says", [
    (["prune.magnitud"], "prune.magnitud"),
    (["prune.magnitude", "--sampler", "annealing"], "invalid choice"),
    (["prune.magnitude", "--set", "sparsity=5"], "fixed['sparsity']=5"),
    (["prune.magnitude", "--set", "sparsity"], "KNOB=VALUE"),
    (["prune.magnitude", "--space", "sparsity=0.5"], "allowed is (low, high)"),
    (["prune.magnitude", "--sampler", "hyperband", "--objectives", "accuracy", "bytes"],
     "cannot prune multi-objective"),
    (["prune.magnitude", "--storage", "postgresql://nobody@127.0.0.1:1/none"],
     "cannot open the database"),
])
def test_command_mistakes_are_one_line(argv, says, capsys, tmp_path):
    from workbench.__main__ import main
    with pytest.raises(SystemExit) as exit_info:
        main(["search", *argv, "--model", "lenet300", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert says in err
