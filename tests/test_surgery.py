"""workbench.prune.surgery: removing channels that carry nothing changes no output."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec, hooks, measure
from workbench.models.groups import ChannelGroup
from workbench.prune import surgery
from workbench.prune.surgery import channel_groups, shrink

ARCHS = ["lenet300", "lenet5", "vgg_small", "resnet20"]


def silence(model, group, channels):
    """Make ``channels`` of ``group`` output exactly zero after their ReLU."""
    with torch.no_grad():
        producer = model.get_submodule(group.name)
        producer.weight[channels] = 0
        if producer.bias is not None:
            producer.bias[channels] = 0
        if group.norm:   # BN(0) = bias - gamma * mean / std: push it below zero for the ReLU
            norm = model.get_submodule(group.norm)
            norm.bias[channels] = -1.0
            norm.running_mean[channels] = 0.0


@pytest.mark.parametrize("arch", ARCHS)
def test_removing_silent_channels_keeps_outputs(arch):
    model = untrained(arch, seed=4)
    keep = {}
    for group in channel_groups(model):
        width = group.width(model)
        dropped = torch.arange(0, width, 3)                 # every third channel
        silence(model, group, dropped)
        keep[group.name] = torch.tensor([c for c in range(width) if c % 3])
    smaller = shrink(model, keep)
    x = sample_input(model)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), model(x), rtol=1e-5, atol=1e-5)
    # physically smaller: fewer params and MACs, and the codec rebuilds it from its config
    big, small = measure.report(model, latency=False), measure.report(smaller, latency=False)
    assert small.params < big.params and small.macs < big.macs
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(smaller))(x), smaller(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_keeping_everything_is_the_identity(arch):
    model = untrained(arch, seed=5)
    keep = {g.name: torch.arange(g.width(model)) for g in channel_groups(model)}
    smaller = shrink(model, keep)
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(smaller(x), model(x))
    assert smaller.config == model.config


def test_residual_blocks_prune_only_their_inner_channels():
    model = untrained("resnet20")
    groups = channel_groups(model)
    assert len(groups) == 9
    assert all(g.name.endswith("conv1") and g.consumer.endswith("conv2") for g in groups)


def test_bad_keep_indices_raise():
    model = untrained("lenet300")
    with pytest.raises(ValueError, match="unknown channel groups"):
        shrink(model, {"net.9": torch.tensor([0])})
    with pytest.raises(ValueError, match="distinct"):
        shrink(model, {"net.1": torch.tensor([0, 0])})
    with pytest.raises(ValueError, match="0..299"):
        shrink(model, {"net.1": torch.tensor([300])})
    with pytest.raises(ValueError, match="at least one"):
        shrink(model, {"net.1": torch.tensor([], dtype=torch.long)})


def test_groups_are_declared_by_the_architectures():
    """The zoo networks declare their groups; surgery only asks (and a network that declares
    none has none): no zoo name anywhere."""
    for arch in ARCHS:
        model = untrained(arch)
        assert channel_groups(model) == model.channel_groups()
        assert all(isinstance(g, ChannelGroup) for g in channel_groups(model))
    assert channel_groups(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(),
                                              torch.nn.Linear(3, 2))) == []


class Mlp(torch.nn.Module):
    """Not a zoo network: a subclass of nothing the zoo knows, with its groups declared."""
    input_shape = (1, 4, 4)

    def __init__(self, widths=(7, 5)):
        super().__init__()
        self.config = {"widths": list(widths)}
        a, b = widths
        self.layers = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, a),
                                          torch.nn.ReLU(), torch.nn.Linear(a, b), torch.nn.ReLU(),
                                          torch.nn.Linear(b, 3))

    def forward(self, x):
        return self.layers(x)

    def channel_groups(self):
        return [ChannelGroup("layers.1", None, "layers.3", 1, ("widths", 0)),
                ChannelGroup("layers.3", None, "layers.5", 1, ("widths", 1))]


def test_shrink_rebuilds_any_class_from_its_config():
    torch.manual_seed(0)
    model = Mlp()
    smaller = shrink(model, {"layers.1": torch.tensor([0, 2, 3]), "layers.3": [1, 4]})
    assert type(smaller) is Mlp and smaller.config == {"widths": [3, 2]}
    assert torch.equal(smaller.layers[1].weight, model.layers[1].weight[[0, 2, 3]])
    assert torch.equal(smaller.layers[3].weight, model.layers[3].weight[[1, 4]][:, [0, 2, 3]])
    assert model.config == {"widths": [7, 5]}       # the input's config is untouched


def test_shrink_leaves_the_global_random_state_alone():
    model = untrained("vgg_small")
    torch.manual_seed(3)
    state = torch.random.get_rng_state()
    shrink(model, {"features.0": torch.arange(10)})
    assert torch.equal(torch.random.get_rng_state(), state)


def test_layer_io_is_the_hooks_one():
    assert surgery.layer_io is hooks.layer_io
