"""Iterative prune + retrain (Han et al. 2015) and L1 regularization + thresholding."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import untrained
from torch import nn
from torch.nn.utils import prune

from workbench import models, train, zoo
from workbench.prune import Magnitude, prunable_layers
from workbench.prune.iterative import (Iterative, L1Penalty, L1Reg, density_schedule,
                                       dropout_owners, l1_penalty, retrain_dropout)


def zeros(module: nn.Module) -> int:
    return int((module.weight == 0).sum())


# ------------------------------------------------------------------ functions

@pytest.mark.parametrize("sparsity, rounds", [(0.92, 3), (0.5, 1), (0.99, 5), (0.0, 2)])
def test_density_schedule_removes_the_same_share_each_round(sparsity, rounds):
    steps = density_schedule(sparsity, rounds)
    assert len(steps) == rounds and steps[-1] == pytest.approx(sparsity)
    kept = [1.0] + [1 - s for s in steps]
    ratios = [b / a for a, b in zip(kept, kept[1:])]
    assert all(r == pytest.approx(ratios[0]) for r in ratios)
    assert all(b <= a for a, b in zip(kept, kept[1:]))


def test_retrain_dropout_is_han_equation_2():
    # C_r = C_o sqrt(N_r / N_o): a quarter of the connections left halves the dropout rate.
    assert retrain_dropout(0.5, 0.25) == pytest.approx(0.25)
    assert retrain_dropout(0.5, 1.0) == 0.5
    assert retrain_dropout(0.0, 0.1) == 0.0
    assert retrain_dropout(0.3, 0.09) == pytest.approx(0.3 * 0.3)


def test_dropout_owner_is_the_layer_in_front():
    model = models.build("lenet300", dropout=0.5)
    linears = [n for n, _ in prunable_layers(model)]           # net.1, net.4, net.7
    assert [owner for _, owner in dropout_owners(model)] == linears[:2]


# ------------------------------------------------------------------ Iterative

@pytest.fixture(scope="module")
def small_train():
    from workbench import data
    return data.mnist("train").subset(512, seed=0)


def test_one_round_without_retraining_is_magnitude_pruning(small_train):
    """Oracle: torch.nn.utils.prune.l1_unstructured, via Magnitude, layer by layer."""
    model = untrained("lenet300")
    out = Iterative(sparsity=0.8, output_sparsity=0.5, rounds=1, epochs=0).apply(model,
                                                                                small_train)
    layers = prunable_layers(model)
    for (name, mine), (_, orig) in zip(prunable_layers(out), layers):
        reference = nn.Linear(orig.in_features, orig.out_features)
        reference.weight.data.copy_(orig.weight.detach())
        amount = 0.5 if name == layers[-1][0] else 0.8
        prune.l1_unstructured(reference, "weight", amount=amount)
        assert torch.equal(mine.weight_mask, reference.weight_mask), name


class Recording(Iterative):
    """Iterative that keeps a copy of the masks after every pruning step."""

    def prune_step(self, model, sparsities):
        super().prune_step(model, sparsities)
        self.seen = getattr(self, "seen", []) + [
            {n: m.weight_mask.clone() for n, m in prunable_layers(model)}]


def test_rounds_reach_the_targets_and_masks_stay_zero_through_retraining(small_train):
    model = untrained("lenet300")
    method = Recording(sparsity=0.9, output_sparsity=0.6, layer_sparsity={"net.3": 0.75},
                       rounds=3, epochs=1)
    with train.quiet():
        out = method.apply(model, small_train)
    targets = {"net.1": 0.9, "net.3": 0.75, "net.5": 0.6}
    for name, module in prunable_layers(out):
        n = module.weight.numel()
        # Exactly the target share is zero at the end...
        assert zeros(module) == round(targets[name] * n), name
        # ... each round pruned a further step, never un-pruning a weight ...
        masks = [seen[name] for seen in method.seen]
        assert [int((m == 0).sum()) for m in masks] == [
            round(s * n) for s in density_schedule(targets[name], 3)]
        assert all(torch.all(later <= earlier) for earlier, later in zip(masks, masks[1:]))
        # ... and the weights pruned in round 1 are still zero after two more retrainings,
        assert torch.all(module.weight[masks[0] == 0] == 0)
        # while the survivors did retrain.
        orig = dict(prunable_layers(model))[name].weight
        keep = module.weight_mask.bool()
        assert not torch.equal(module.weight[keep], orig[keep])


def test_retrain_layer_trains_only_that_layer(small_train):
    model = untrained("lenet300")
    method = Iterative(rounds=1, epochs=1, retrain_layer="net.3")
    with train.quiet():
        out = method.apply(model, small_train)
    before = dict(prunable_layers(model))
    for name, module in prunable_layers(out):
        keep = module.weight_mask.bool()
        same_w = torch.equal(module.weight[keep], before[name].weight[keep])
        same_b = torch.equal(module.bias, before[name].bias)
        assert (same_w and same_b) == (name != "net.3"), name
    assert all(p.requires_grad for p in out.parameters())
    with pytest.raises(ValueError, match="retrain_layer"):
        Iterative(retrain_layer="net.2", epochs=0).apply(model, small_train)


def test_dropout_lowered_with_the_connections(small_train):
    torch.manual_seed(0)
    model = models.build("lenet300", dropout=0.5).eval()
    out = Iterative(sparsity=0.84, rounds=1, epochs=0).apply(model, small_train)
    for dropout, owner in dropout_owners(out):
        kept = (out.get_submodule(owner).weight != 0).float().mean().item()
        assert dropout.p == pytest.approx(0.5 * math.sqrt(kept))
        assert dropout.p == pytest.approx(0.2, abs=1e-3)    # 0.5 * sqrt(0.16)
    assert all(d.p == 0.5 for d, _ in dropout_owners(model))  # the input keeps its own


def test_quality_targets_are_the_share_below_quality_std(small_train):
    model = untrained("lenet5")
    out = Iterative(by="quality", quality=1.0, rounds=1, epochs=0).apply(model, small_train)
    for (name, mine), (_, orig) in zip(prunable_layers(out), prunable_layers(model)):
        w = orig.weight.detach()
        assert zeros(mine) == round((w.abs() < w.std()).float().mean().item() * w.numel())


@pytest.mark.parametrize("bad, field", [
    ({"layer_sparsity": {"net.1": 1.5}}, "layer_sparsity"), ({"rounds": 0}, "rounds"),
    ({"epochs": 1.5}, "epochs"), ({"by": "std"}, "by"), ({"retrain_layer": 3}, "retrain_layer"),
])
def test_invalid_settings_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        Iterative(**bad)


def test_unknown_layer_names_and_missing_data_are_refused(small_train):
    model = untrained("lenet300")
    with pytest.raises(ValueError, match="layer_sparsity"):
        Iterative(layer_sparsity={"conv9": 0.5}, epochs=0).apply(model, small_train)
    with pytest.raises(ValueError, match="data"):
        Iterative().apply(model)


def test_retraining_recovers_what_one_shot_pruning_loses(mnist_test_small):
    """On the trained LeNet-300-100, 95 % sparsity: one-shot loses points, two rounds of
    retraining on 2,000 images win most of them back."""
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    from workbench import data
    base = zoo.pretrained("lenet300")
    subset = data.mnist("train").subset(2000, seed=1)
    one_shot = train.evaluate(Magnitude(sparsity=0.95).apply(base), mnist_test_small)
    method = Iterative(sparsity=0.95, output_sparsity=0.95, rounds=2, epochs=2, lr=0.05)
    with train.quiet():
        retrained = train.evaluate(method.apply(base, subset), mnist_test_small)
    assert retrained > one_shot + 0.02


# ------------------------------------------------------------------ L1

def test_l1_penalty_gradient_is_lambda_sign_w():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    with torch.no_grad():
        layer.weight[0, :3] = 0.0                       # sign(0) = 0: no push at zero
    strength = 0.003
    l1_penalty([layer.weight], strength).backward()
    assert torch.allclose(layer.weight.grad, strength * torch.sign(layer.weight.detach()))
    assert l1_penalty([layer.weight], strength).item() == pytest.approx(
        strength * layer.weight.detach().abs().sum().item())


def test_l1_training_leaves_more_near_zero_weights(small_train):
    def near_zero_share(strength):
        model = untrained("lenet300")
        with train.quiet():
            train.fit(model, small_train, train.Recipe(epochs=4, lr=0.05, weight_decay=0.0,
                                                       schedule="cosine"),
                      hooks=[L1Penalty(strength)])
        w = torch.cat([m.weight.detach().flatten() for _, m in prunable_layers(model)])
        return (w.abs() < 1e-3).float().mean().item()
    plain, mild, strong = near_zero_share(0.0), near_zero_share(1e-3), near_zero_share(3e-3)
    assert plain < mild < strong and strong > plain + 0.1, (plain, mild, strong)


def test_l1reg_thresholds_then_keeps_the_zeros(small_train):
    model = untrained("lenet300")
    for scope in ("layer", "global"):
        method = L1Reg(epochs=1, finetune_epochs=1, sparsity=0.8, scope=scope)
        with train.quiet():
            out = method.apply(model, small_train)      # fine-tuning keeps the zeros
        layers = prunable_layers(out)
        if scope == "layer":
            for name, module in layers:
                assert zeros(module) == round(0.8 * module.weight.numel()), name
        total = sum(m.weight.numel() for _, m in layers)
        assert sum(zeros(m) for _, m in layers) == pytest.approx(0.8 * total, abs=3)
    by_t = L1Reg(epochs=1, finetune_epochs=0, by="threshold", threshold=0.02)
    with train.quiet():
        out = by_t.apply(model, small_train)
    for name, module in prunable_layers(out):
        w = module.weight.detach()
        assert torch.all(w[w != 0].abs() >= 0.02), name
        assert torch.equal(module.weight_mask.bool(), module.weight_orig.abs() >= 0.02)
