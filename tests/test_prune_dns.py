"""Dynamic Network Surgery: hysteresis thresholds, straight-through updates, splicing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import untrained
from torch import nn
from torch.nn.utils import parametrize

from workbench import data, train, zoo
from workbench.prune import Magnitude, prunable_layers
from workbench.prune.dns import (DNS, SurgeryHook, SurgeryMask, surgery_probability,
                                 surgery_thresholds, update_mask)


@pytest.fixture(scope="module")
def train_1k():
    return data.mnist("train").subset(1024, seed=0)


# ------------------------------------------------------------------ functions

def test_update_mask_is_the_hysteresis_rule():
    """Oracle: the reference's per-weight loop, written out."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(500, generator=g)
    mask = (torch.rand(500, generator=g) < 0.5).float()
    a, b = 0.4, 0.9
    expected = mask.clone()
    for k in range(len(w)):
        if mask[k] == 1 and abs(w[k]) <= a:
            expected[k] = 0
        elif mask[k] == 0 and abs(w[k]) > b:
            expected[k] = 1
    new = update_mask(w, mask, a, b)
    assert torch.equal(new, expected)
    between = (w.abs() > a) & (w.abs() <= b)
    assert between.any() and torch.equal(new[between], mask[between])   # memory in the band


def test_thresholds_from_mean_and_std_of_magnitudes():
    w = torch.tensor([0.0, -1.0, 2.0, -3.0, 4.0, 0.0])     # zeros (pruned) are left out
    mags = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    t = mags.mean() + 1.5 * mags.std(unbiased=False)
    a, b = surgery_thresholds(w, 1.5, margin=0.1)
    assert a == pytest.approx(0.9 * t.item()) and b == pytest.approx(1.1 * t.item())
    assert surgery_thresholds(w, -10.0) == (0.0, 0.0)      # clamped at zero, as max(., 0)
    assert surgery_thresholds(torch.zeros(3), 1.0) == (0.0, 0.0)


def test_surgery_probability_decays():
    assert surgery_probability(0, 1e-4, 1.0) == 1.0
    assert surgery_probability(10000, 1e-4, 1.0) == pytest.approx(0.5)
    assert surgery_probability(3000, 1e-3, 2.0) == pytest.approx(4.0 ** -2)
    chances = [surgery_probability(s, 1e-4, 1.0) for s in range(0, 50000, 5000)]
    assert chances == sorted(chances, reverse=True)


# ------------------------------------------------------------------ straight-through update

def masked_layer(seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    layer = nn.Linear(8, 5)
    mask = (torch.rand(5, 8) < 0.5).float()
    parametrize.register_parametrization(layer, "weight", SurgeryMask(mask))
    return layer, mask


def test_forward_uses_masked_weights_and_gradient_reaches_all_weights():
    layer, mask = masked_layer()
    dense = layer.parametrizations.weight.original
    x = torch.randn(16, 8)
    out = layer(x)
    # Oracle: the plain layer with W * T, autograd on that effective weight.
    effective = (dense * mask).detach().requires_grad_()
    expected = F.linear(x, effective, layer.bias)
    assert torch.allclose(out, expected)
    (out ** 2).sum().backward()
    (expected ** 2).sum().backward()
    assert torch.allclose(dense.grad, effective.grad)         # dL/d(W*T) applied to W
    assert (dense.grad[mask == 0].abs() > 0).any()              # masked weights still learn
    # torch.nn.utils.prune, for contrast, gives masked weights no gradient at all.
    plain = nn.Linear(8, 5)
    torch.nn.utils.prune.custom_from_mask(plain, "weight", mask)
    (plain(x) ** 2).sum().backward()
    assert torch.all(plain.weight_orig.grad[mask == 0] == 0)


def test_a_pruned_weight_grows_back_and_is_spliced():
    """A weight the task needs starts pruned; its gradient keeps flowing, it grows past b and
    the hook splices it back (mask 0 -> 1)."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.05, 1.0, -1.0, 0.02]]))
    a, b = 0.2, 0.3
    parametrize.register_parametrization(layer, "weight", SurgeryMask(torch.ones(1, 4)))
    hook = SurgeryHook({"w": (layer, a, b)}, gamma=0.0, power=1.0, stop_step=10**6, seed=0)
    hook.revise_all()
    mask = layer.parametrizations.weight[0].mask
    assert mask.tolist() == [[0, 1, 1, 0]] and hook.pruned == 2
    target = torch.tensor([[2.0, 1.0, -1.0, 0.0]])             # weight 0 matters, weight 3 not
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    history = []
    for _ in range(60):
        x = torch.randn(32, 4)
        loss = F.mse_loss(layer(x), x @ target.t())
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            hook.after_step(layer)
        history.append(mask[0, 0].item())
    w = layer.parametrizations.weight.original.detach()
    assert history[0] == 0 and history[-1] == 1 and hook.spliced >= 1   # spliced back
    assert abs(w[0, 0] - 2.0) < 0.1                           # and learnt its value
    assert mask[0, 3] == 0                                     # the useless one stays out


def test_hook_revises_with_the_decaying_probability():
    layer, _ = masked_layer()
    calls = []

    class Counting(SurgeryHook):
        def revise(self, module, a, b):
            calls.append(self.step)

    hook = Counting({"l": (layer, 0.1, 0.2)}, gamma=1e-2, power=1.0, stop_step=3000, seed=0)
    for _ in range(4000):
        hook.after_step(layer)
    early = sum(1 for s in calls if s < 100)
    late = sum(1 for s in calls if 2000 <= s < 2100)
    assert early > 2 * late > 0            # chance 1/(1 + 0.01 s): ~0.7 vs ~0.05
    assert max(calls) < 3000               # no revision after stop_step


# ------------------------------------------------------------------ the method

def test_dns_on_mnist_prunes_splices_and_hands_over_torch_masks(train_1k):
    model = zoo.pretrained("lenet300") if "lenet300" in zoo.manifest() else untrained("lenet300")
    method = DNS(epochs=2, c_rate=2.0, output_c_rate=1.0, lr=0.02)
    with train.quiet():
        out, hook = method.run(model, train_1k)
    assert hook.pruned > 0 and hook.spliced > 0           # weights left and came back
    assert len(hook.history) == 2
    for name, module in prunable_layers(out):
        assert not parametrize.is_parametrized(module)
        mask = module.weight_mask
        assert torch.equal(module.weight, module.weight_orig * mask)
        assert 0 < mask.mean() < 0.5, name
        # The dense W survives in weight_orig: masked weights kept their (updated) values.
        assert (module.weight_orig[mask == 0] != 0).any(), name
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_dns_starts_from_an_already_pruned_model(train_1k):
    """The input's zeros are cut at step 0; with a zero threshold (c = -10: t = max(., 0)) any
    weight that moves off zero is spliced back, so the earlier pruning is undone."""
    model = Magnitude(sparsity=0.5).apply(untrained("lenet300"))
    zeros_in = sum(int((m.weight == 0).sum()) for _, m in prunable_layers(model))
    method = DNS(epochs=1, c_rate=-10.0, output_c_rate=-10.0, surgery_share=1.0)
    with train.quiet():
        out, hook = method.run(model, train_1k)
    assert hook.pruned == zeros_in and hook.spliced > 0.9 * zeros_in
    assert all(m.weight_mask.mean() > 0.95 for _, m in prunable_layers(out))


@pytest.mark.parametrize("bad, field", [
    ({"layer_c_rate": {"net.1": "x"}}, "layer_c_rate"), ({"margin": 1.0}, "margin"),
    ({"epochs": 0}, "epochs"), ({"surgery_share": 1.5}, "surgery_share"),
])
def test_invalid_settings_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        DNS(**bad)


def test_unknown_layer_and_missing_data(train_1k):
    with pytest.raises(ValueError, match="layer_c_rate"):
        DNS(layer_c_rate={"fc9": 1.0}).apply(untrained("lenet300"), train_1k)
    with pytest.raises(ValueError, match="data"):
        DNS().apply(untrained("lenet300"))
    with pytest.raises(ValueError, match="data"):
        DNS().run(untrained("lenet300"), None)
    assert DNS(epochs=1).tags().needs_data       # the surgery happens while training


def test_unknown_layer_is_reported_before_any_work(monkeypatch):
    """check_model runs before the data check and before compress: a wrong name is the first
    thing reported, even without data."""
    def no_work(*args, **kwargs):
        raise AssertionError("compress ran")
    monkeypatch.setattr(DNS, "compress", no_work)
    with pytest.raises(ValueError, match=r"DNS.layer_c_rate=.*\['fc9'\] are not layers"):
        DNS(layer_c_rate={"fc9": 1.0, "net.1": 2.0}).apply(untrained("lenet300"))
    with pytest.raises(ValueError, match="fc9"):
        DNS(layer_c_rate={"fc9": 1.0}).run(untrained("lenet300"), None)


def test_run_and_apply_give_the_same_network(train_1k):
    model = untrained("lenet300", seed=2)
    method = DNS(epochs=1)
    small = train_1k.subset(256, seed=0)
    with train.quiet():
        out, hook = method.run(model, small)
        again = method.apply(model, small)
    assert hook.history and not out.training
    for (name, a), (_, b) in zip(prunable_layers(out), prunable_layers(again)):
        assert torch.equal(a.weight, b.weight), name
