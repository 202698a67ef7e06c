"""workbench.prune.surgery: removing channels that carry nothing changes no output."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec, measure
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
