"""The contract every method of ``workbench.METHODS`` keeps (scikit-learn's
``parametrize_with_checks`` idea): checked for each registered class, with its default
hyperparameters, so a new method is tested as soon as it is registered.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import sample_input, untrained

import workbench
from workbench import codec, measure
from workbench.method import Method

METHOD_ITEMS = sorted(workbench.METHODS.items())
METHOD_IDS = [mid for mid, _ in METHOD_ITEMS]
CHEAP_ARCHS = ("lenet300", "lenet5", "vgg_small", "resnet20")   # untrained: all are cheap


def contract_cases():
    """(method, arch) for every method and each architecture it declares."""
    return [pytest.param(mid, cls, arch, id=f"{mid}-{arch}")
            for mid, cls in METHOD_ITEMS for arch in cls.archs if arch in CHEAP_ARCHS]


def module_hooks(model: torch.nn.Module) -> dict[str, tuple]:
    """Every hook and parametrization a module carries, by module name."""
    out = {}
    for name, m in model.named_modules():
        out[name] = tuple(len(getattr(m, attr)) for attr in (
            "_forward_pre_hooks", "_forward_hooks", "_backward_hooks",
            "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")) + \
            (type(m).__name__, tuple(getattr(m, "parametrizations", {}) or ()))
    return out


def storages(model: torch.nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in model.state_dict().values() if t.numel()}


@pytest.fixture(scope="module")
def train_data():
    """A small training subset of the arch's dataset, loaded only when a method needs data."""
    cache = {}

    def get(arch):
        name = workbench.zoo.dataset_of(arch)
        if name not in cache:
            cache[name] = workbench.data.load(name, "train").subset(256, seed=0)
        return cache[name]
    return get


def apply(cls, model, train_data):
    """The method at its smoke settings (defaults otherwise), with data if it needs some."""
    data = train_data(workbench.models.name_of(model)) if cls.needs_data else None
    return cls(**cls.smoke).apply(model, data)


@pytest.mark.parametrize("method_id, cls, arch", contract_cases())
def test_method_contract(method_id, cls, arch, train_data):
    model = untrained(arch, seed=11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = module_hooks(model)
    training_before = model.training
    x = sample_input(model)
    with torch.no_grad():
        y_before = model(x)

    out = apply(cls, model, train_data)

    # A new network; the input untouched (values, hooks, mode) and sharing no memory with it.
    assert out is not model and isinstance(out, torch.nn.Module)
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert torch.equal(after[key], value), f"{method_id} changed the input's {key}"
    assert module_hooks(model) == hooks_before
    assert model.training == training_before
    assert not storages(out) & storages(model)
    with torch.no_grad():
        assert torch.equal(model(x), y_before)

    # Deterministic: the same hyperparameters give the same network, whatever the global RNG.
    torch.manual_seed(12345)
    torch.rand(100)
    again = apply(cls, model, train_data)
    first, second = codec.plain_state_dict(out), codec.plain_state_dict(again)
    assert list(first) == list(second)
    for key in first:
        assert torch.equal(first[key], second[key]), f"{method_id} is not deterministic: {key}"

    # Runs on the model's input shape and gives class scores.
    out.eval()
    with torch.no_grad():
        y = out(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()

    # Measurable, and its file decodes to the same outputs.
    rep = measure.report(out, data=None, latency=False)
    assert rep.params > 0 and 0 < rep.nonzeros <= rep.params
    assert rep.effective_macs <= rep.macs
    blob = codec.encode(out)
    assert rep.bytes == len(blob)
    with torch.no_grad():
        assert torch.equal(codec.decode(blob)(x), y)


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
    assert cls.archs and set(cls.archs) <= set(workbench.models.ARCHITECTURES)
    cls(**cls.smoke)   # the smoke settings are valid


def slider_cases():
    """A slider's range is what a notebook may set; it must lie inside what validate() allows.

    The allowed domain may be wider than the slider (a threshold of 0.35 is legitimate even if
    the slider stops at 0.3), so the values that must fail are the ones no numeric knob takes:
    a string and NaN. Each method's own tests check the bounds of its domain.
    """
    ok, bad = [], []
    for method_id, cls in METHOD_ITEMS:
        for field, (low, high, step) in cls.sliders.items():
            assert low < high and step > 0, (method_id, field)
            ok += [pytest.param(cls, field, low, id=f"{method_id}-{field}-low"),
                   pytest.param(cls, field, high, id=f"{method_id}-{field}-high")]
            bad.append(pytest.param(cls, field, "x", id=f"{method_id}-{field}-string"))
            bad.append(pytest.param(cls, field, float("nan"), id=f"{method_id}-{field}-nan"))
    return ok, bad


SLIDERS_OK, SLIDERS_BAD = slider_cases()


@pytest.mark.parametrize("cls, field, value", SLIDERS_OK)
def test_slider_bounds_construct(cls, field, value):
    method = cls(**{field: value})
    assert getattr(method, field) == value


@pytest.mark.parametrize("cls, field, value", SLIDERS_BAD)
def test_slider_out_of_range_raises_naming_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


@pytest.mark.parametrize("method_id, cls", METHOD_ITEMS, ids=METHOD_IDS)
def test_choice_fields_reject_unknown_values(method_id, cls):
    """String hyperparameters are choices: an unknown one is refused by name."""
    for f in dataclasses.fields(cls):
        if isinstance(f.default, str):
            with pytest.raises(ValueError, match=f.name):
                cls(**{f.name: "no-such-choice"})
