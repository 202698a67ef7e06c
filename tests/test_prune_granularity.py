"""Granularity: every mask has the structure it claims and meets the budget within one group;
weight granularity is magnitude pruning; a pruned filter is removed for real."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained
from torch import nn

from workbench import codec, measure
from workbench.prune import Magnitude
from workbench.prune.granularity import (GRANULARITIES, Granularity, conv_layers, group_ids,
                                         group_mask, norm_after, shrink_filters)
from workbench.prune.surgery import channel_groups

ARCHS = ["lenet5", "vgg_small", "resnet20"]


def group_size_of(granularity, shape, group_size=4):
    o, c, kh, kw = shape
    return {"weight": 1, "vector": kw, "kernel": kh * kw, "group": group_size * kh * kw,
            "filter": c * kh * kw, "strided": kh * kw}[granularity]  # strided: an upper bound


def constant_over(mask: torch.Tensor, granularity: str, group_size: int = 4) -> bool:
    """Whether the mask is constant over the blocks the granularity names."""
    o, c, kh, kw = mask.shape
    if granularity == "vector":
        return bool((mask == mask[..., :1]).all())
    if granularity == "kernel":
        return bool((mask == mask[..., :1, :1]).all())
    if granularity == "filter":
        return bool((mask == mask[:, :1, :1, :1]).all())
    if granularity == "group":
        blocks = [mask[i:i + group_size] for i in range(0, o, group_size)]
        return all(bool((b == b[:1, :, :1, :1]).all()) for b in blocks)
    if granularity == "strided":   # constant on each stride-2 sub-lattice of each kernel
        return all(bool((sub == sub[..., :1, :1]).all())
                   for a in range(2) for b in range(2) for sub in [mask[..., a::2, b::2]])
    return True


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_masks_have_their_structure_and_meet_the_budget(arch, granularity, sparsity):
    model = untrained(arch, seed=2)
    method = Granularity(sparsity=sparsity, granularity=granularity)
    masks = method.masks(model)
    assert set(masks) == {n for n, _ in conv_layers(model)}
    for name, mask in masks.items():
        assert constant_over(mask, granularity), (name, granularity)
        dropped = int((mask == 0).sum())
        size = group_size_of(granularity, mask.shape)
        assert abs(dropped - sparsity * mask.numel()) <= size / 2 + 0.5, (name, dropped)


@pytest.mark.parametrize("granularity", ["kernel", "filter", "group"])
def test_the_lowest_norm_groups_go(granularity):
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)
    ids = group_ids(tuple(w.shape), granularity, group_size=4)
    mask = group_mask(w, ids, 0.5, "l2")
    norms = torch.zeros(int(ids.max()) + 1).index_add_(0, ids.flatten(), w.flatten() ** 2)
    kept = torch.zeros_like(norms).index_add_(0, ids.flatten(), mask.flatten()) > 0
    assert norms[kept].min() > norms[~kept].max()


def test_group_ids_name_the_blocks():
    ids = group_ids((4, 2, 3, 3), "kernel")
    assert ids[1, 1].unique().tolist() == [3] and ids.max() == 7
    ids = group_ids((4, 2, 3, 3), "vector")
    assert ids[0, 0, 2].unique().tolist() == [2] and ids.max() == 23
    ids = group_ids((5, 2, 3, 3), "group", group_size=2)   # filters (0,1), (2,3), (4)
    assert ids[:, 1, 0, 0].tolist() == [1, 1, 3, 3, 5]
    ids = group_ids((1, 1, 3, 3), "strided")
    assert ids[0, 0].tolist() == [[0, 1, 0], [2, 3, 2], [0, 1, 0]]
    ids = group_ids((3, 2, 3, 3), "filter")
    assert ids[:, 1, 2, 2].tolist() == [0, 1, 2]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.9])
def test_weight_granularity_is_magnitude_pruning(arch, sparsity):
    model = untrained(arch, seed=3)
    mine = Granularity(sparsity=sparsity, granularity="weight").masks(model)
    theirs = Magnitude(sparsity=sparsity).masks(model)
    for name, mask in mine.items():
        assert torch.equal(mask, theirs[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_pruned_filters_output_zero_and_shrink_removes_them(arch):
    model = untrained(arch, seed=4)
    pruned = Granularity(sparsity=0.5, granularity="filter").apply(model)
    x = sample_input(model)
    for name, conv in conv_layers(pruned):
        dead = conv.weight.flatten(1).abs().sum(1) == 0
        assert dead.sum() == round(0.5 * len(dead))
        outputs = {}
        handle = (norm_after(pruned, name) or conv).register_forward_hook(
            lambda m, i, o: outputs.update(y=o))
        with torch.no_grad():
            pruned(x)
        handle.remove()
        assert (outputs["y"][:, dead] == 0).all(), name      # after its BatchNorm too
    smaller = shrink_filters(pruned)
    with torch.no_grad():
        torch.testing.assert_close(smaller(x), pruned(x), rtol=1e-5, atol=1e-5)
    big, small = measure.report(pruned, latency=False), measure.report(smaller, latency=False)
    assert small.macs < big.macs and small.params < big.params
    for group in channel_groups(smaller):       # every shrinkable conv lost half its filters
        if isinstance(smaller.get_submodule(group.name), nn.Conv2d):
            assert group.width(smaller) == group.width(model) - round(0.5 * group.width(model))
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(smaller))(x), smaller(x))


def test_linear_layers_stay_dense_and_input_is_untouched():
    model = untrained("lenet5")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = Granularity(sparsity=0.8, granularity="kernel").apply(model)
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Linear):
            assert not hasattr(m, "weight_mask") and m.weight.count_nonzero() == m.weight.numel()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_validation_and_settings():
    with pytest.raises(ValueError, match="granularity"):
        Granularity(granularity="channel-ish")
    with pytest.raises(ValueError, match="group_size"):
        Granularity(group_size=0)
    with pytest.raises(ValueError, match="norm"):
        Granularity(norm="l3")
    assert "group_size" in Granularity(granularity="group").settings()
    assert "group_size" not in Granularity(granularity="kernel").settings()
    assert "stride" in Granularity(granularity="strided").settings()


class Small(nn.Module):
    """Not a zoo network: a 3x3 conv, a 1x1 conv and a Linear."""
    input_shape = (2, 6, 6)

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4 * 36, 10)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.a(x))).flatten(1))


def test_supports_any_network_with_convolutions():
    torch.manual_seed(0)
    model = Small()
    method = Granularity(sparsity=0.5, granularity="kernel")
    assert method.supports(model) and not method.tags().needs_data
    pruned = method.apply(model)
    assert int((pruned.a.weight == 0).sum()) == 0.5 * pruned.a.weight.numel()
    assert not hasattr(pruned.fc, "weight_mask")
    assert not method.supports(untrained("lenet300"))       # no convolution at all
    with pytest.raises(ValueError, match="Conv2d"):
        method.apply(untrained("lenet300"))
