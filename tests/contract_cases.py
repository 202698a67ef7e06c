"""The method contract's cases and checks, shared by ``tests/test_contract_*.py`` (this module
is not collected: its name does not start with ``test_``).

The contract runs every method of ``workbench.METHODS`` on the zoo networks it supports, about
two hundred cases of seconds each. CI runs the suite with ``pytest -n auto --dist loadscope``,
which keeps a module on one worker, so the cases are split by method family into several
modules (``SHARDS``) that the workers share; ``test_contract_other.py`` takes every family no
other shard names, so a method is checked as soon as it is registered, whatever its family.
"""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained

import workbench
from workbench import checks, codec, measure
from workbench.method import Method

METHOD_ITEMS = sorted(workbench.METHODS.items())
METHOD_IDS = [mid for mid, _ in METHOD_ITEMS]
CHEAP_ARCHS = ("lenet300", "lenet5", "vgg_small", "resnet20")   # untrained: all are cheap
MODELS = {arch: untrained(arch, seed=11) for arch in CHEAP_ARCHS}

# Each kind of network once: an MLP, a plain CNN, a residual CNN with BatchNorm. VGG-small (a
# plain CNN with BatchNorm on CIFAR-10) has no kind of layer the three lack, so it only stands in
# for a method that supports neither LeNet-5 nor ResNet-20 (it cost CI a quarter more time).
CONTRACT_ARCHS = ("lenet300", "lenet5", "resnet20")

# shard (tests/test_contract_<shard>.py) -> the method families (the id before the dot) it
# checks, grouped so that the shards hold similar numbers of cases; "other" takes the rest.
SHARDS = {
    "prune": ("prune",),
    "quant": ("quant",),
    "binary": ("binary", "ternary"),
    "lowrank": ("lowrank", "approx", "hash"),
    "training": ("arch", "distill"),
}
OTHER = "other"


def family(method_id: str) -> str:
    return method_id.split(".", 1)[0]


def shard_of(method_id: str) -> str:
    """The contract module that checks ``method_id``."""
    return next((shard for shard, families in SHARDS.items()
                 if family(method_id) in families), OTHER)


def contract_archs(method: Method) -> list[str]:
    """The zoo networks the contract test runs ``method`` on."""
    chosen = [a for a in CONTRACT_ARCHS if method.supports(MODELS[a])]
    if not {"lenet5", "resnet20"} & set(chosen) and method.supports(MODELS["vgg_small"]):
        chosen.append("vgg_small")
    return chosen


def contract_cases(shard: str):
    """(method, arch) for every method of ``shard`` and the zoo architectures it is checked
    on."""
    cases = []
    for mid, cls in METHOD_ITEMS:
        if shard_of(mid) == shard:
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


def check_contract(method_id, cls, arch, train_data):
    """The contract of one method on one zoo network (``test_method_contract`` of each
    shard)."""
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
