"""Magnitude pruning against torch.nn.utils.prune and against its own definition."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import sample_input, untrained
from torch import nn
from torch.nn.utils import prune

from workbench import codec, train, zoo
from workbench.prune import Magnitude, magnitude_mask, prunable_layers

SPARSITIES = [0.0, 0.1, 0.5, 0.77, 0.9, 0.99, 1.0]


def layer_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.weight_mask for n, m in prunable_layers(model)}


@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("make", [
    lambda: nn.Linear(37, 23),
    lambda: nn.Conv2d(5, 7, 3),
    lambda: nn.Conv2d(3, 4, (1, 5), bias=False),
], ids=["linear", "conv3x3", "conv1x5"])
def test_magnitude_mask_equals_torch_l1_unstructured(make, sparsity):
    torch.manual_seed(0)
    module = make()
    w = module.weight.detach().clone()
    prune.l1_unstructured(module, "weight", amount=sparsity)
    mask = magnitude_mask(w, sparsity)
    assert mask.shape == w.shape and mask.dtype == w.dtype
    assert torch.equal(mask, module.weight_mask)
    assert int((mask == 0).sum()) == round(sparsity * w.numel())


def test_magnitude_mask_drops_the_smallest():
    w = torch.tensor([[0.3, -0.01, 2.0], [-0.5, 0.02, -0.04]])
    assert magnitude_mask(w, 0.5).tolist() == [[1, 0, 1], [1, 0, 0]]


@pytest.mark.parametrize("sparsity", [0.3, 0.9, 0.99])
def test_layer_scope_apply_equals_torch(sparsity):
    model = untrained("lenet5")
    reference = copy.deepcopy(model)
    for _, m in prunable_layers(reference):
        prune.l1_unstructured(m, "weight", amount=sparsity)
    pruned = Magnitude(sparsity=sparsity, scope="layer").apply(model)
    for (name, mine), (_, ref) in zip(layer_masks(pruned).items(), layer_masks(reference).items()):
        assert torch.equal(mine, ref), name
        n = mine.numel()
        assert (mine == 0).sum().item() / n == round(sparsity * n) / n
    x = sample_input(model)
    with torch.no_grad():
        assert torch.equal(pruned(x), reference(x))


@pytest.mark.parametrize("sparsity", [0.2, 0.8, 0.95])
def test_global_scope_equals_torch_global_unstructured(sparsity):
    model = untrained("lenet300")
    reference = copy.deepcopy(model)
    prune.global_unstructured([(m, "weight") for _, m in prunable_layers(reference)],
                              pruning_method=prune.L1Unstructured, amount=sparsity)
    pruned = Magnitude(sparsity=sparsity, scope="global").apply(model)
    masks, ref_masks = layer_masks(pruned), layer_masks(reference)
    for name in ref_masks:
        assert torch.equal(masks[name], ref_masks[name]), name
    total = sum(m.numel() for m in masks.values())
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(sparsity * total)
    # One threshold: every kept weight is at least as large as every dropped one.
    w = torch.cat([m.weight_orig.detach().abs().flatten() for _, m in prunable_layers(pruned)])
    keep = torch.cat([m.flatten() for m in masks.values()]).bool()
    assert w[keep].min() >= w[~keep].max()


def test_threshold_keeps_exactly_at_least_t():
    model = untrained("lenet300")
    first = model.net[1].weight.detach()
    t = first.abs().flatten()[123].item()            # a value that occurs: >= keeps it
    pruned = Magnitude(by="threshold", threshold=t).apply(model)
    for (name, m), (_, orig) in zip(prunable_layers(pruned), prunable_layers(model)):
        assert torch.equal(m.weight_mask, (orig.weight.detach().abs() >= t).float()), name
    assert pruned.net[1].weight_mask.flatten()[123] == 1


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("quality", [0.5, 1.5])
def test_quality_times_std(scope, quality):
    model = untrained("lenet5")
    weights = {n: m.weight.detach() for n, m in prunable_layers(model)}
    pooled = torch.cat([w.flatten() for w in weights.values()]).std().item()
    pruned = Magnitude(by="quality", quality=quality, scope=scope).apply(model)
    for name, m in prunable_layers(pruned):
        w = weights[name]
        t = quality * (w.std().item() if scope == "layer" else pooled)
        assert torch.equal(m.weight_mask, (w.abs() >= t).float()), name
    if scope == "layer":   # per-layer std: every layer loses about the same (normal-ish) share
        shares = [(m.weight_mask == 0).float().mean().item() for _, m in prunable_layers(pruned)]
        assert max(shares) - min(shares) < 0.25


def test_repeated_pruning_composes():
    model = untrained("lenet300")
    half = Magnitude(sparsity=0.5).apply(model)
    half(sample_input(model)).sum().backward()       # a forward with autograd, as in training
    more = Magnitude(sparsity=0.8).apply(half)
    for (name, m), (_, h) in zip(prunable_layers(more), prunable_layers(half)):
        n = m.weight.numel()
        assert int((m.weight == 0).sum()) == round(0.8 * n), name
        assert torch.all(m.weight_mask <= h.weight_mask)         # dropped weights stay dropped
        assert torch.equal(m.weight_orig, h.weight_orig)
    # The same zeros as pruning the dense model to 0.8 at once (magnitudes are unchanged).
    once = Magnitude(sparsity=0.8).apply(model)
    for (_, m), (_, o) in zip(prunable_layers(more), prunable_layers(once)):
        assert torch.equal(m.weight_mask, o.weight_mask)
    # half itself still has its 50 %.
    assert int((half.net[1].weight == 0).sum()) == round(0.5 * 784 * 300)


def test_state_dict_holds_orig_and_mask():
    model = untrained("lenet5")
    pruned = Magnitude(sparsity=0.5).apply(model)
    keys = set(pruned.state_dict())
    for name, _ in prunable_layers(pruned):
        assert {f"{name}.weight_orig", f"{name}.weight_mask", f"{name}.bias"} <= keys
        assert f"{name}.weight" not in keys
        assert torch.equal(pruned.state_dict()[f"{name}.weight_orig"],
                           model.state_dict()[f"{name}.weight"])
    assert set(codec.plain_state_dict(pruned)) == set(model.state_dict())
    # The masks can be removed (torch's prune.remove) to get a plain network with the zeros.
    for _, m in prunable_layers(pruned):
        prune.remove(m, "weight")
    assert set(pruned.state_dict()) == set(model.state_dict())


def test_biases_are_not_pruned():
    model = untrained("lenet300")
    pruned = Magnitude(sparsity=0.99).apply(model)
    for (_, m), (_, orig) in zip(prunable_layers(pruned), prunable_layers(model)):
        assert torch.equal(m.bias, orig.bias)


@pytest.fixture(scope="module")
def lenet300_trained():
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    return zoo.pretrained("lenet300")


def test_pruned_pretrained_accuracy(lenet300_trained, mnist_test_small):
    dense = train.evaluate(lenet300_trained, mnist_test_small)
    half = train.evaluate(Magnitude(sparsity=0.5).apply(lenet300_trained), mnist_test_small)
    extreme = train.evaluate(Magnitude(sparsity=0.99).apply(lenet300_trained), mnist_test_small)
    assert dense > 0.95
    assert abs(half - dense) <= 0.01
    assert extreme < half - 0.02


def test_layers_restricts_pruning_to_the_named_layers():
    model = untrained("lenet300")
    pruned = Magnitude(sparsity=0.9, layers=("net.3",)).apply(model)
    assert hasattr(pruned.net[3], "weight_mask")
    assert not hasattr(pruned.net[1], "weight_mask") and not hasattr(pruned.net[5], "weight_mask")
    assert torch.equal(pruned.net[3].weight_mask, magnitude_mask(model.net[3].weight.detach(), 0.9))
    with pytest.raises(ValueError, match=r"Magnitude.layers=.*\[.net.2.\] are not layers"):
        Magnitude(layers=("net.2",)).apply(model)
    with pytest.raises(ValueError, match="layers"):
        Magnitude(layers="net.1")


def test_layer_sensitivity_prunes_one_layer_at_a_time(lenet300_trained, mnist_test_small):
    from workbench.prune import layer_sensitivity
    rows = layer_sensitivity(lenet300_trained, mnist_test_small, sparsities=(0.5, 0.99))
    assert [(r["layer"], r["sparsity"]) for r in rows] == [
        ("net.1", 0.5), ("net.1", 0.99), ("net.3", 0.5), ("net.3", 0.99),
        ("net.5", 0.5), ("net.5", 0.99)]
    by = {(r["layer"], r["sparsity"]): r["accuracy"] for r in rows}
    expected = train.evaluate(Magnitude(sparsity=0.99, layers=("net.5",)).apply(lenet300_trained),
                              mnist_test_small)
    assert by[("net.5", 0.99)] == round(expected, 4)
    # the small output layer is the most sensitive at 99% (Han et al.: keep 26% of ip3)
    assert by[("net.5", 0.99)] < by[("net.1", 0.99)]
