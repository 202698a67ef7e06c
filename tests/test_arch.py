"""Section F's methods: a compact network for the input's task, the zoo's or one trained at
the chosen knobs (``workbench.arch``)."""
from __future__ import annotations

import pytest
import torch

from workbench import METHODS, arch, codec, data, train, zoo
from workbench.models import ARCHITECTURES, build

ARCH_IDS = sorted(mid for mid, cls in METHODS.items() if issubclass(cls, arch.CompactNetwork))


@pytest.fixture(scope="module")
def resnet20():
    return zoo.pretrained("resnet20")


@pytest.fixture(scope="module")
def cifar_train():
    return data.cifar10("train").subset(1024, seed=0)


def test_every_arch_method_names_a_zoo_network_and_its_knobs():
    assert ARCH_IDS
    for mid in ARCH_IDS:
        cls = METHODS[mid]
        assert cls.network in ARCHITECTURES and ARCHITECTURES[cls.network][1] == "cifar10"
        defaults = arch.zoo_defaults(cls.network)
        method = cls()
        # at its defaults a method describes the zoo's network (the one with a checkpoint)
        assert set(cls.knobs) <= set(defaults)
        assert method.at_zoo_defaults(), mid
        assert set(cls.sliders) <= set(cls.knobs)


@pytest.mark.parametrize("method_id", [m for m in ARCH_IDS
                                       if METHODS[m].network in zoo.trained()])
def test_epochs_0_gives_the_zoo_checkpoint_and_leaves_the_input(method_id, resnet20):
    cls = METHODS[method_id]
    before = {k: v.clone() for k, v in resnet20.state_dict().items()}
    out = cls().apply(resnet20)
    entry = zoo.manifest()[cls.network]
    assert out.config == zoo.pretrained(cls.network).config
    assert train.evaluate(out, data.cifar10("test").subset(500, seed=0)) > 0.8
    assert entry["test_acc"] >= zoo.TARGETS[cls.network]["min_acc"]
    for key, value in before.items():
        assert torch.equal(resnet20.state_dict()[key], value), key


def test_epochs_0_without_a_checkpoint_says_how_to_make_one(resnet20, monkeypatch):
    monkeypatch.setattr(zoo, "manifest", lambda: {})
    with pytest.raises(zoo.CheckpointError, match="python -m workbench zoo train nin"):
        METHODS["arch.nin"]().apply(resnet20)


@pytest.mark.parametrize("method_id, knobs", [
    ("arch.efficientnet", {"phi": 8, "width": 4, "depth": 4, "last_channels": 2048}),
    ("arch.resnext", {"cardinality": 64, "group_width": 64, "width": 1024, "blocks": 16})])
def test_knobs_in_range_that_together_make_a_huge_network_are_refused(method_id, knobs):
    # each knob is inside its domain; together they would be billions of weights
    with pytest.raises(ValueError, match=r"allowed is knobs whose network has at most"):
        METHODS[method_id](**knobs)


def test_epochs_0_at_other_knobs_is_refused_with_what_to_do(resnet20):
    with pytest.raises(ValueError, match=r"width.*epochs > 0"):
        METHODS["arch.mobilenet_v2"](width=0.25).apply(resnet20)


def test_mnist_networks_are_not_supported():
    lenet = zoo.pretrained("lenet5")
    method = METHODS["arch.nin"]()
    assert not method.supports(lenet)
    with pytest.raises(ValueError, match="CIFAR-10 classifier"):
        method.apply(lenet)


def test_rules_between_knobs_are_checked_when_the_method_is_made():
    # two poolings at one place, an even n: what only the network itself can refuse, said of
    # the method's own field
    with pytest.raises(ValueError, match=r"^SqueezeNetMethod\.pool_after=\[1, 1\]: distinct"):
        METHODS["arch.squeezenet"](pool_after=(1, 1), epochs=1)
    with pytest.raises(ValueError, match=r"^InceptionMethod\.n=4: allowed is an odd"):
        METHODS["arch.inception"](n=4)


def test_training_is_the_zoo_recipe_on_a_network_built_at_the_knobs(resnet20, cifar_train):
    # the oracle: the same network built by hand at the knobs, trained by train.fit with
    # the recipe the method states (SGD, one-cycle, crop and flip)
    small = cifar_train.subset(256, seed=2)
    method = METHODS["arch.mobilenet"](width=0.25, resolution=0.5, epochs=1, seed=3)
    with train.quiet():
        out = method.apply(resnet20, small)
        with train.seeded(3):
            expected = build("mobilenet", width=0.25, resolution=0.5)
        train.fit(expected, small, train.Recipe(epochs=1, lr=0.1, weight_decay=5e-4, seed=3,
                                                augment=True))
    assert out.config["width"] == 0.25 and out.config["resolution"] == 0.5
    for key, value in expected.state_dict().items():
        assert torch.equal(out.state_dict()[key], value), key
    # a trained compact network is stored and restored like any other
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_the_input_network_can_teach_the_compact_one(resnet20, cifar_train, monkeypatch):
    from workbench.distill.losses import TeacherLoss
    teachers = []
    original = TeacherLoss.loss

    def record(self, model, x, *args):
        teachers.append(self.teacher)
        return original(self, model, x, *args)

    monkeypatch.setattr(TeacherLoss, "loss", record)
    method = METHODS["arch.nin"](width=0.0625, epochs=1, kd_teacher="input")
    with train.quiet():
        method.apply(resnet20, cifar_train.subset(256, seed=1))
    assert teachers and all(type(t) is type(resnet20) for t in teachers)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teachers[0](x), resnet20(x))   # the input, frozen, not a new net
