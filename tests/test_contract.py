"""The contract every method of ``workbench.METHODS`` keeps (scikit-learn's
``parametrize_with_checks`` idea): checked for each registered class at its smoke settings, on
every zoo network it supports (untrained: all are cheap), so a new method is tested as soon as
it is registered.

Besides "the input is untouched, the output runs, is deterministic, measurable and stored
losslessly", each method must show the effects it declares (fewer nonzeros, fewer bytes ...):
a stub whose ``compress`` returns its input fails (``test_a_stub_misses_the_declared_effects``).
Every field is tried with values outside its declared domain.

The contract itself (``test_method_contract``, about two hundred cases of seconds each) lives in
``tests/test_contract_<shard>.py``, one module per group of method families
(``contract_cases.SHARDS``), so that ``pytest -n auto --dist loadscope`` spreads it over the
workers; this module keeps the quick checks of each class. To run some cases by id, name every
contract module: ``pytest tests/test_contract*.py -k 'prune.l1_filter-resnet20'``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import sample_input
from contract_cases import (
    CHEAP_ARCHS,
    METHOD_IDS,
    METHOD_ITEMS,
    MODELS,
    OTHER,
    SHARDS,
    shard_of,
)

import workbench
from workbench import checks
from workbench.method import EFFECTS, Method, domain_of


def test_every_method_has_one_contract_module():
    """Each method's contract cases are collected by exactly one module, which exists (a new
    family goes to test_contract_other.py)."""
    here = Path(__file__).parent
    shards = [*SHARDS, OTHER]
    for shard in shards:
        module = here / f"test_contract_{shard}.py"
        assert module.exists() and f'contract_cases("{shard}")' in module.read_text()
    families = [f for names in SHARDS.values() for f in names]
    assert len(families) == len(set(families))
    assert {shard_of(mid) for mid in METHOD_IDS} <= set(shards)


@pytest.mark.parametrize("method_id, cls", METHOD_ITEMS, ids=METHOD_IDS)
def test_a_stub_misses_the_declared_effects(method_id, cls):
    """A method that returns its input unchanged fails the effect check on every network."""
    method = cls(**cls.smoke)
    assert method.effects, f"{method_id} declares no effect: a stub would pass its contract"
    assert set(method.effects) <= set(EFFECTS)
    assert set(method.effects) - {"same_outputs"}, "same_outputs alone is what a stub does"
    for arch in CHEAP_ARCHS:
        model = MODELS[arch]
        if method.supports(model):
            stub_output = workbench.method.clone_model(model)
            assert checks.missing_effects(method, model, stub_output, sample_input(model))


@pytest.mark.parametrize("method_id, cls", METHOD_ITEMS, ids=METHOD_IDS)
def test_method_is_a_dataclass_with_defaults(method_id, cls):
    assert issubclass(cls, Method) and cls.id == method_id
    assert dataclasses.is_dataclass(cls)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert not missing, f"{cls.__name__} fields without default: {missing}"
    method = cls()
    assert method.params() == {f.name: getattr(method, f.name) for f in dataclasses.fields(cls)}
    assert cls(**method.params()) == method
    assert cls.reference, "every method cites its source"
    assert set(cls.sliders) <= {f.name for f in dataclasses.fields(cls)}
    assert set(cls.smoke) <= {f.name for f in dataclasses.fields(cls)}
    for attribute in ("needs_data", "archs", "progress"):       # contract v1, gone
        assert not hasattr(cls, attribute), f"{cls.__name__}.{attribute} is contract v1"
    assert "apply" not in vars(cls), "methods write compress(); Method.apply is the same for all"
    assert isinstance(method.tags().needs_data, bool)
    assert any(method.supports(MODELS[a]) for a in CHEAP_ARCHS), "supports no zoo network"
    cls(**cls.smoke)   # the smoke settings are valid


def field_cases():
    """Every field of every method: each must declare its domain."""
    return [pytest.param(cls, f.name, id=f"{mid}-{f.name}")
            for mid, cls in METHOD_ITEMS for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls, field", field_cases())
def test_every_field_refuses_values_outside_its_domain(cls, field):
    domain = domain_of(cls, field)
    assert domain is not None, f"{cls.__name__}.{field} declares no domain (use knob())"
    bad_values = domain.bad_values()
    assert bad_values
    for value in bad_values:
        with pytest.raises(ValueError, match=field):
            cls(**{field: value})


def slider_cases():
    """A slider's range is what a notebook may set; it must lie inside the field's domain."""
    return [pytest.param(cls, field, value, id=f"{mid}-{field}-{end}")
            for mid, cls in METHOD_ITEMS for field, (low, high, step) in cls.sliders.items()
            for end, value in (("low", low), ("high", high))]


@pytest.mark.parametrize("cls, field, value", slider_cases())
def test_slider_bounds_construct(cls, field, value):
    low, high, step = cls.sliders[field]
    assert low < high and step > 0
    method = cls(**{field: value})
    assert getattr(method, field) == value
