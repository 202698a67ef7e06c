"""The contract every method of ``workbench.METHODS`` keeps (scikit-learn's
``parametrize_with_checks`` idea): checked for each registered class at its smoke settings, on
every zoo network it supports (untrained: all are cheap), so a new method is tested as soon as
it is registered.

Besides "the input is untouched, the output runs, is deterministic, measurable and stored
losslessly", each method must show the effects it declares (fewer nonzeros, fewer bytes ...):
a stub whose ``compress`` returns its input fails (``test_a_stub_misses_the_declared_effects``).
Every field is tried with values outside its declared domain.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import sample_input, untrained

import workbench
from workbench import checks, codec, measure
from workbench.method import EFFECTS, Method, domain_of

METHOD_ITEMS = sorted(workbench.METHODS.items())
METHOD_IDS = [mid for mid, _ in METHOD_ITEMS]
CHEAP_ARCHS = ("lenet300", "lenet5", "vgg_small", "resnet20")   # untrained: all are cheap
_MODELS = {arch: untrained(arch, seed=11) for arch in CHEAP_ARCHS}


# Each kind of network once: an MLP, a plain CNN, a residual CNN with BatchNorm. VGG-small (a
# plain CNN with BatchNorm on CIFAR-10) has no kind of layer the three lack, so it only stands in
# for a method that supports neither LeNet-5 nor ResNet-20 (it cost CI a quarter more time).
CONTRACT_ARCHS = ("lenet300", "lenet5", "resnet20")


def contract_archs(method: Method) -> list[str]:
    """The zoo networks the contract test runs ``method`` on."""
    chosen = [a for a in CONTRACT_ARCHS if method.supports(_MODELS[a])]
    if not {"lenet5", "resnet20"} & set(chosen) and method.supports(_MODELS["vgg_small"]):
        chosen.append("vgg_small")
    return chosen


def contract_cases():
    """(method, arch) for every method and the zoo architectures it is checked on."""
    cases = []
    for mid, cls in METHOD_ITEMS:
        cases += [pytest.param(mid, cls, arch, id=f"{mid}-{arch}")
                  for arch in contract_archs(cls(**cls.smoke))]
    return cases


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
    return {t.untyped_storage().data_ptr() for t in model.state_dict().values()
            if isinstance(t, torch.Tensor) and t.numel()}


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


def apply(method, arch, model, train_data):
    """The method with data if it needs some, quietly."""
    data = train_data(arch) if method.tags().needs_data else None
    with workbench.train.quiet():
        return method.apply(model, data)


@pytest.mark.parametrize("method_id, cls, arch", contract_cases())
def test_method_contract(method_id, cls, arch, train_data):
    model = untrained(arch, seed=11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks_before = module_hooks(model)
    training_before = model.training
    x = sample_input(model)
    with torch.no_grad():
        y_before = model(x)
    method = cls(**cls.smoke)

    out = apply(method, arch, model, train_data)

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

    # It did what it declares, at these settings.
    assert not checks.missing_effects(method, model, out, x), \
        f"{method_id} on {arch} misses {checks.missing_effects(method, model, out, x)}"

    # Deterministic: the same hyperparameters give the same network, whatever the global RNG,
    # and the caller's RNG is not reseeded.
    torch.manual_seed(12345)
    state = torch.random.get_rng_state()
    again = apply(method, arch, model, train_data)
    assert torch.equal(torch.random.get_rng_state(), state), \
        f"{method_id} changed the global random state"
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
def test_a_stub_misses_the_declared_effects(method_id, cls):
    """A method that returns its input unchanged fails the effect check on every network."""
    method = cls(**cls.smoke)
    assert method.effects, f"{method_id} declares no effect: a stub would pass its contract"
    assert set(method.effects) <= set(EFFECTS)
    assert set(method.effects) - {"same_outputs"}, "same_outputs alone is what a stub does"
    for arch in CHEAP_ARCHS:
        model = _MODELS[arch]
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
    assert any(method.supports(_MODELS[a]) for a in CHEAP_ARCHS), "supports no zoo network"
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
