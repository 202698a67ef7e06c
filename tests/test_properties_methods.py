"""Property-based tests of the method contract (Hypothesis): for every method of
``workbench.METHODS`` and every field,

- generated values outside the field's domain (wrong types, bad items inside lists and dicts,
  non-whole counts, NaN and infinities, values past a bound) are refused at once with a
  ValueError of the one shape "Class.field=value: ... allowed is ...";
- generated values inside the domains, a few fields at a time on top of the smoke settings,
  apply on a small zoo network and small data: no other exception than such a ValueError, finite
  outputs, and a file that decodes to the same outputs (``apply_problem``, run by
  ``test_properties_apply.py``);
- a layer name the network does not have, in any field that takes layer names (also inside a
  pipeline's settings), is reported before any work, naming the field and the allowed layers;
- every field that multiplies the work has an upper bound (``COST_LIMITS``).

Each check is a function returning ``None`` or ``(class of defect, detail)``, so that
``/work/figs/s23/count_defects.py`` counts the failing cases per class with the same code.
CI runs few examples, derandomized; ``WORKBENCH_PROPERTIES=long`` runs many, at random.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
from datetime import timedelta

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import workbench
from workbench import codec, data, train
from workbench.domains import Choice, Flag, Int, Mapping, Name, Optional, Real, Seq
from workbench.method import domain_of, layers_of

LONG = os.environ.get("WORKBENCH_PROPERTIES") == "long"
METHOD_ITEMS = sorted(workbench.METHODS.items())
METHOD_IDS = [mid for mid, _ in METHOD_ITEMS]
IMAGES = 64                  # training images given to a method that needs data


def budget(ci: int, long: int, seconds: float = 20.0) -> settings:
    """Few derandomized examples in CI, many random ones in a long run."""
    return settings(max_examples=long if LONG else ci, derandomize=not LONG, database=None,
                    deadline=timedelta(seconds=seconds),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# ------------------------------------------------------------------ fields that cost time

# A field that multiplies the work, and the largest value a lecturer may set. Epoch counts stop
# at 1000 (the longest schedules in the catalogue's papers); iterations of an inner solver at
# 10**4; the others at a size past which a layer of the zoo gains nothing.
COST_LIMITS = {"epochs": 1000, "hint_epochs": 1000, "fsp_epochs": 1000, "penalty_epochs": 1000,
               "finetune_epochs": 1000, "head_epochs": 1000, "quant_epochs": 1000,
               "rounds": 50, "iterations": 10_000, "sweeps": 100, "steps": 10_000,
               "max_iter": 10_000, "samples": 1 << 16, "copies": 20, "stages": 64, "k": 65_536,
               "clusters": 4096, "width": 4096, "depth": 32, "blocks": 1000}


def cheap_cap(cls, name: str, default):
    """The largest value the good-value test sets for a field that costs time: its smoke
    value, else its default (the largest that still runs in a second or so)."""
    def number(value):            # a tuple of counts (ShuffleNet's repeats) costs its largest
        if isinstance(value, (tuple, list)) and value and all(
                isinstance(v, (int, float)) for v in value):
            return max(value)
        return value
    smoke, default = number(cls.smoke.get(name)), number(default)
    values = [v for v in (smoke, default) if isinstance(v, (int, float))
              and not isinstance(v, bool)]
    return min(values) if smoke is None and values else (smoke if smoke is not None else None)


def is_cost(name: str, domain) -> bool:
    return name in COST_LIMITS or name in ("width", "expansion", "last_channels", "base_e",
                                           "incr_e", "M", "tensors", "order", "rank",
                                           "subvector", "compression", "rank_ratio",
                                           "selection_images", "phi", "cardinality",
                                           "group_width", "repeats", "middle_blocks", "n")


# ------------------------------------------------------------------ bad values, by kind

_LAYER = "features.0"


def _wrong_types(domain) -> st.SearchStrategy:
    """Values of a type the domain never takes."""
    options = [st.binary(max_size=3), st.complex_numbers(max_magnitude=3), st.just(object()),
               st.just(print)]
    if not isinstance(domain, Name):          # any string is a name (checked on the model)
        options.append(st.text(max_size=5))
    if not isinstance(domain, (Seq, Mapping)):
        options.append(st.lists(st.integers(0, 3), max_size=2))
    # a method's settings (a pipeline step's, a search's fixed knobs and space) are dicts
    if not isinstance(domain, (Seq, Mapping)) and type(domain).__name__ not in (
            "Settings", "FlatSettings", "SpaceSpec"):
        options.append(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    if not isinstance(domain, Flag):
        options.append(st.booleans())
    if not isinstance(domain, Optional):
        options.append(st.none())
    if isinstance(domain, (Flag, Name, Seq, Mapping)):
        options.append(st.integers(-3, 3))
    if isinstance(domain, (Int, Real)):
        options = [st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2),
                   st.none(), st.complex_numbers(max_magnitude=3)]
    if isinstance(domain, Choice):
        options = [st.text(max_size=5).filter(lambda s: s not in domain.options),
                   st.integers(-5, 5), st.booleans(), st.none(), st.lists(st.text(), max_size=2)]
    return st.one_of(options)


def bad_values(domain) -> st.SearchStrategy:
    """(kind, value) pairs that ``domain`` must refuse; kinds: type, non_finite,
    non_integer_count, out_of_range, nested."""
    if isinstance(domain, Optional):
        return bad_values(domain.inner).filter(lambda kv: kv[1] is not None)
    kinds = [st.tuples(st.just("type"), _wrong_types(domain))]
    if isinstance(domain, (Int, Real)):
        kinds.append(st.tuples(st.just("non_finite"), st.sampled_from(
            [math.nan] + [v for v in (math.inf, -math.inf)
                          if not (isinstance(domain, Real) and v in (domain.low, domain.high))])))
        outside = []
        if domain.low > -math.inf:
            below = float(domain.low) if float(domain.low) < domain.low else \
                math.nextafter(float(domain.low), -math.inf)
            outside.append(st.floats(max_value=below, allow_nan=False, allow_infinity=False))
            outside.append(st.integers(max_value=math.ceil(domain.low) - 1))
        if domain.high < math.inf:
            above = float(domain.high) if float(domain.high) > domain.high else \
                math.nextafter(float(domain.high), math.inf)
            outside.append(st.floats(min_value=above, allow_nan=False, allow_infinity=False))
            outside.append(st.integers(min_value=math.floor(domain.high) + 1))
        if outside:
            kinds.append(st.tuples(st.just("out_of_range"), st.one_of(outside)))
    if isinstance(domain, Int):
        kinds.append(st.tuples(st.just("non_integer_count"), st.floats(
            domain.low, min(domain.high, 1e15), allow_nan=False).filter(
                lambda v: not float(v).is_integer())))
    if isinstance(domain, Seq):
        kinds.append(st.tuples(st.just("nested"), st.builds(
            lambda good, bad, at: good[:at] + [bad] + good[at:],
            st.lists(good_items(domain.item), min_size=0, max_size=2),
            bad_values(domain.item).map(lambda kv: kv[1]), st.integers(0, 2))))
        if domain.min_len > 0:
            kinds.append(st.tuples(st.just("out_of_range"), st.sampled_from([[], ()])))
        if domain.max_len < 100:
            kinds.append(st.tuples(st.just("out_of_range"), st.lists(
                good_items(domain.item), min_size=domain.max_len + 1,
                max_size=domain.max_len + 2)))
    if isinstance(domain, Mapping):
        kinds.append(st.tuples(st.just("nested"), st.one_of(
            st.dictionaries(st.sampled_from([_LAYER, "classifier.1"]),
                            bad_values(domain.value).map(lambda kv: kv[1]), min_size=1,
                            max_size=2),
            st.dictionaries(st.one_of(st.integers(), st.none(), st.tuples(st.text())),
                            good_items(domain.value), min_size=1, max_size=2))))
    known = domain.bad_values() if not isinstance(domain, (Int, Real, Choice, Flag, Name, Seq,
                                                           Mapping)) else []
    if known:      # a domain of its own (a teacher, a pipeline's settings): its own bad values
        kinds.append(st.tuples(st.just("nested"), st.sampled_from(known)))
    return st.one_of(kinds)


def good_items(domain) -> st.SearchStrategy:
    """Values a domain accepts (for containers around a bad value)."""
    if isinstance(domain, Real):
        return st.floats(domain.low, domain.high, allow_nan=False, allow_infinity=False)
    if isinstance(domain, Int):
        return st.integers(domain.low, domain.high)
    if isinstance(domain, Choice):
        return st.sampled_from(domain.options)
    if isinstance(domain, Flag):
        return st.booleans()
    if isinstance(domain, Optional):
        return st.one_of(st.none(), good_items(domain.inner))
    return st.just(_LAYER)


def refusal_problem(cls, field: str, value) -> tuple[str, str] | None:
    """None if ``cls(field=value)`` is refused with a ValueError of the house shape."""
    prefix = f"{cls.__name__}.{field}="
    try:
        cls(**{field: value})
    except ValueError as err:
        text = str(err)
        if text.startswith(prefix) and "allowed" in text:
            return None
        return "unclear_message", f"{prefix}{value!r}: {text[:160]}"
    except Exception as err:         # noqa: BLE001 - any other exception is the defect
        return "crash", f"{prefix}{value!r}: {type(err).__name__}: {str(err)[:120]}"
    return "accepted", f"{prefix}{value!r} was accepted"


@pytest.mark.parametrize("method_id, cls", METHOD_ITEMS, ids=METHOD_IDS)
@budget(ci=4, long=200, seconds=5)
@given(st.data())
def test_bad_values_are_refused_naming_the_field(method_id, cls, data):
    """Every field of the method, each with a generated bad value (one field at a time)."""
    problems = []
    for f in dataclasses.fields(cls):
        kind, value = data.draw(bad_values(domain_of(cls, f.name)), label=f.name)
        problem = refusal_problem(cls, f.name, value)
        if problem:
            problems.append((kind, *problem))
    assert not problems, problems


# ------------------------------------------------------------------ good values apply

_MODEL_CACHE: dict = {}
_DATA_CACHE: dict = {}


def small_model(method):
    """The smallest zoo network the method supports (untrained, seeded): LeNet-300-100, else
    LeNet-5, else ResNet-20."""
    from conftest import untrained
    for arch in ("lenet300", "lenet5", "resnet20"):
        if arch not in _MODEL_CACHE:
            _MODEL_CACHE[arch] = untrained(arch, seed=11)
        if method.supports(_MODEL_CACHE[arch]):
            return arch, _MODEL_CACHE[arch]
    raise AssertionError(f"{method.id} supports no small zoo network")


def small_data(arch: str):
    name = workbench.zoo.dataset_of(arch)
    if name not in _DATA_CACHE:
        _DATA_CACHE[name] = data.load(name, "train").subset(IMAGES, seed=0)
    return _DATA_CACHE[name]


def good_value(cls, name: str, domain, default) -> st.SearchStrategy | None:
    """A value inside the domain; for fields that cost time, no more than their smoke value;
    None for fields left at the smoke settings (layer names, teachers, pipeline steps)."""
    if isinstance(domain, Optional):
        inner = good_value(cls, name, domain.inner, default)
        return None if inner is None else st.one_of(st.none(), inner)
    cap = cheap_cap(cls, name, default) if is_cost(name, domain) else None
    if isinstance(domain, Real):
        high = min(domain.high, cap) if cap is not None else domain.high
        ends = [v for v in (domain.low, high) if not math.isnan(v)]
        return st.one_of(st.sampled_from(ends), st.floats(domain.low, high, allow_nan=False,
                                                          allow_infinity=high == math.inf))
    if isinstance(domain, Int):
        high = min(domain.high, max(domain.low, int(cap))) if cap is not None else domain.high
        return st.one_of(st.sampled_from([domain.low, high]), st.integers(domain.low, high),
                         st.integers(domain.low, min(high, 2**40)).map(float))
    if isinstance(domain, Choice):
        return st.sampled_from(domain.options)
    if isinstance(domain, Flag):
        return st.booleans()
    if isinstance(domain, Seq) and isinstance(domain.item, (Int, Real)):
        return st.lists(good_value(cls, name, domain.item, None), min_size=domain.min_len,
                        max_size=min(domain.max_len, 4))
    return None


def changeable_fields(cls) -> dict:
    out = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in ("kd_teacher",):
            continue
        strategy = good_value(cls, f.name, domain_of(cls, f.name), getattr(defaults, f.name))
        if strategy is not None:
            out[f.name] = strategy
    return out


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def apply_problem(cls, changes: dict, seconds: int = 0) -> tuple[str, str] | None:
    """None if the method with ``changes`` on its smoke settings either is refused with a
    house-shaped ValueError or applies: finite outputs, a file that decodes to the same
    outputs. ``seconds``: a time limit (0: none)."""
    where = f"{cls.id}({changes})"
    try:
        method = cls(**{**cls.smoke, **changes})
    except ValueError as err:
        if str(err).startswith(f"{cls.__name__}.") and "allowed" in str(err):
            return None                  # a rule between fields, stated in the house shape
        return "unclear_message", f"{where}: {str(err)[:160]}"
    except Exception as err:         # noqa: BLE001
        return "crash", f"{where}: {type(err).__name__}: {str(err)[:120]}"
    arch, model = small_model(method)
    inputs = torch.randn(4, *model.input_shape, generator=torch.Generator().manual_seed(0))
    previous = signal.signal(signal.SIGALRM, _alarm) if seconds else None
    try:
        if seconds:
            signal.alarm(seconds)
        with train.quiet():
            out = method.apply(model, small_data(arch) if method.tags().needs_data else None)
        with torch.no_grad():
            y = out(inputs)
            if not torch.isfinite(y).all():
                return "non_finite_outputs", f"{where} on {arch}"
            if not torch.equal(codec.decode(codec.encode(out))(inputs), y):
                return "file_differs", f"{where} on {arch}"
    except _Timeout:
        return "too_slow", f"{where} on {arch}: over {seconds} s"
    except ValueError as err:
        text = str(err)
        if text.startswith((f"{cls.__name__}.", f"{cls.id} ")):
            return None                  # the settings do not fit this network, said so
        return "unclear_message", f"{where} on {arch}: {text[:160]}"
    except Exception as err:         # noqa: BLE001
        return "crash", f"{where} on {arch}: {type(err).__name__}: {str(err)[:120]}"
    finally:
        if seconds:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
    return None


def draw_changes(cls, draw) -> dict:
    choices = changeable_fields(cls)
    names = draw(st.lists(st.sampled_from(sorted(choices)), min_size=1, max_size=3,
                          unique=True), label="fields") if choices else []
    return {name: draw(choices[name], label=name) for name in names}


# ------------------------------------------------------------------ layer names, before work

class WorkStarted(Exception):
    """Raised by a method's compress in the test: the method began to work."""


def layer_fields(cls) -> list[tuple[str, str]]:
    """(field, how to fill it) for fields that name layers of the model: 'name', 'names',
    'mapping', or 'settings' for a pipeline's nested settings."""
    out = []
    for f in dataclasses.fields(cls):
        d = domain_of(cls, f.name)
        inner = d.inner if isinstance(d, Optional) else d
        if isinstance(inner, Name):
            out.append((f.name, "name"))
        elif isinstance(inner, Seq) and isinstance(inner.item, Name):
            out.append((f.name, "names"))
        elif isinstance(inner, Mapping):
            out.append((f.name, "mapping"))
        elif type(inner).__name__ == "SettingsOf":
            out.append((f.name, "settings"))
    return out


def unknown_layer_value(cls, field: str, how: str, wrong: str, known: str):
    if how == "name":
        return wrong
    if how == "names":
        return (known, wrong)
    if how == "mapping":
        value = domain_of(cls, field)
        value = value.inner.value if isinstance(value, Optional) else value.value
        return {wrong: value.low if isinstance(value, (Int, Real)) else good_default(value)}
    return {"layer_sparsity": {wrong: 0.5}}          # deep_compression's pruning settings


def good_default(domain):
    return domain.options[0] if isinstance(domain, Choice) else True


def late_names_problem(cls, field: str, how: str, wrong: str) -> tuple[str, str] | None:
    """None if a layer name the model lacks is refused before compress, naming the field and
    at least one layer the model has."""
    method = cls(**cls.smoke)
    arch, model = small_model(method)
    known = [n for n, _ in layers_of(model)]
    value = unknown_layer_value(cls, field, how, wrong, known[0])
    where = f"{cls.id}({field}={value!r}) on {arch}"
    try:
        method = cls(**{**cls.smoke, field: value})
    except ValueError as err:
        return None if str(err).startswith(f"{cls.__name__}.{field}=") else (
            "unclear_message", f"{where}: {str(err)[:160]}")

    def refuse_work(*args, **kwargs):
        raise WorkStarted

    method.compress = refuse_work
    try:
        with train.quiet():
            method.apply(model, small_data(arch))
    except WorkStarted:
        return "late_layer_names", f"{where}: not reported before the work began"
    except ValueError as err:
        text = str(err)
        # the allowed names are the model's layers, or the student's for a student's field
        if text.startswith(f"{cls.__name__}.{field}=") and "allowed" in text:
            return None
        return "unclear_message", f"{where}: {text[:200]}"
    except Exception as err:         # noqa: BLE001
        return "crash", f"{where}: {type(err).__name__}: {str(err)[:120]}"
    return "late_layer_names", f"{where}: accepted"


# Messages in files this change could not touch (another engineer's), to be put in the house
# shape there; strict, so the mark goes once they are.
def layer_cases():
    return [pytest.param(cls, field, how, id=f"{mid}-{field}")
            for mid, cls in METHOD_ITEMS for field, how in layer_fields(cls)]


@pytest.mark.parametrize("cls, field, how", layer_cases())
@pytest.mark.parametrize("wrong", ["no_such_layer", "features.99"])
def test_unknown_layer_names_are_reported_before_any_work(cls, field, how, wrong):
    problem = late_names_problem(cls, field, how, wrong)
    assert problem is None, problem


# ------------------------------------------------------------------ bounds on the work

def cost_problems(cls) -> list[tuple[str, str]]:
    """Fields that multiply the work and accept more than ``COST_LIMITS``."""
    out = []
    for f in dataclasses.fields(cls):
        d = domain_of(cls, f.name)
        inner = d.inner if isinstance(d, Optional) else d
        limit = COST_LIMITS.get(f.name)
        if limit is not None and isinstance(inner, Int) and inner.high > limit:
            text = f"{cls.__name__}.{f.name} allows up to {inner.high}, more than {limit}"
            out.append(("unbounded_cost", text))
    return out


@pytest.mark.parametrize("method_id, cls", METHOD_ITEMS, ids=METHOD_IDS)
def test_fields_that_multiply_the_work_are_bounded(method_id, cls):
    assert not cost_problems(cls)
