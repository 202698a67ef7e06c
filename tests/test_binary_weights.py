"""Binary weights (post-training sign, BinaryConnect, LAB) against closed forms, brute force,
torch autograd and float networks carrying the folded weights."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained
from torch import nn

from workbench import codec, train, zoo
from workbench.binary import core
from workbench.binary.weights import (
    BinaryConnect,
    ClipShadow,
    ConnectWeight,
    LossAware,
    LossAwareWeight,
    Sign,
    adam_curvature,
    glorot_scale,
    lab_binarize,
    lab_scale,
    shadow_weights,
)
from workbench.quantize.core import quantizable_layers, quantize_weights


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def layer_weights(model):
    return {n: m.weight.detach() for n, m in quantizable_layers(model)}


# ------------------------------------------------------------------ binary.sign

@pytest.mark.parametrize("per_channel", [True, False])
def test_ls_scale_is_the_numerical_argmin_on_zoo_layers(per_channel):
    """On every layer of the trained LeNet-300-100: a = mean|w| minimizes ||W - a sign W||^2,
    checked against the squared error evaluated directly on a grid of scales around it
    (steps of 0.1 %), per layer or per output channel."""
    for name, w in layer_weights(zoo.pretrained("lenet300")).items():
        w = w.double()
        a = core.ls_scale(w, per_channel)
        rows = w if per_channel else w.reshape(1, -1)
        b = core.sign(rows)
        factors = torch.linspace(0.9, 1.1, 201, dtype=torch.float64)
        errors = torch.stack([((rows - f * a.reshape(-1, 1) * b) ** 2).sum(1)
                              for f in factors], 1)
        assert torch.all(factors[errors.argmin(1)] == 1.0), name


@pytest.mark.parametrize("per_channel", [True, False])
def test_sign_folds_every_dense_layer_to_plus_minus_a(per_channel):
    base = zoo.pretrained("lenet300")
    out = Sign(per_channel=per_channel).apply(base)
    for (name, w0), (_, w1) in zip(layer_weights(base).items(), layer_weights(out).items()):
        groups = zip(w0, w1) if per_channel else [(w0, w1)]
        for g0, g1 in groups:
            a = g0.abs().mean()
            assert set(g1.unique().tolist()) <= {-a.item(), a.item()}, name
            assert torch.equal(g1 > 0, g0 >= 0)
    # biases are untouched
    for (k, v0), v1 in zip(base.state_dict().items(), out.state_dict().values()):
        if k.endswith("bias"):
            assert torch.equal(v0, v1)


def test_sign_scope_dense_keeps_convolutions_float():
    base = untrained("lenet5")
    dense = Sign().apply(base)
    everything = Sign(scope="all").apply(base)
    assert torch.equal(dense.features[0].weight, base.features[0].weight)
    assert dense.classifier[1].weight.unique().numel() <= 2 * 500
    assert everything.features[0].weight.abs().unique().numel() <= 20   # one |a| per channel


def test_sign_accuracy_on_the_zoo_network_is_measured_not_destroyed(mnist_test_small):
    """Not a target: post-training binarization costs accuracy; the per-channel scale keeps
    the network far above chance (10%), and the file stores one bit per weight + scales."""
    base = zoo.pretrained("lenet300")
    out = Sign().apply(base)
    assert train.evaluate(out, mnist_test_small) > 0.5
    assert len(codec.encode(out)) < len(codec.encode(base)) / 4


# ------------------------------------------------------------------ BinaryConnect

def test_glorot_scale_counts_kernel_positions():
    assert glorot_scale(torch.zeros(300, 784)) == pytest.approx((1.5 / 1084) ** 0.5)
    assert glorot_scale(torch.zeros(50, 20, 5, 5)) == pytest.approx((1.5 / (70 * 25)) ** 0.5)


def test_connect_shadow_starts_at_clipped_w_over_h_and_forward_uses_plus_minus_h():
    torch.manual_seed(0)
    layer = nn.Linear(30, 8).double()
    w0 = layer.weight.detach().clone() * 40           # some of them beyond H: clipped
    layer.weight.data.copy_(w0)
    h = glorot_scale(w0)
    quantize_weights(nn.Sequential(layer), lambda n, m: ConnectWeight(h, False))
    shadow = layer.parametrizations.weight.original
    assert torch.allclose(shadow, torch.clamp(w0 / h, -1, 1))
    assert (shadow.abs() == 1).any()
    x = randn(5, 30, seed=1)
    expected = F.linear(x, h * core.sign(shadow.detach()), layer.bias.detach())
    assert torch.allclose(layer(x), expected, atol=1e-12)


def test_connect_gradient_reaches_the_shadow_unchanged():
    """STE: dL/dshadow = H dL/dW_b, dL/dW_b from autograd on a float layer holding W_b (the
    H is the chain rule of shadow = W / H; Adam's steps do not depend on it)."""
    torch.manual_seed(0)
    layer = nn.Linear(30, 8).double()
    h = glorot_scale(layer.weight)
    quantize_weights(nn.Sequential(layer), lambda n, m: ConnectWeight(h, False))
    shadow = layer.parametrizations.weight.original
    x, g = randn(5, 30, seed=2), randn(5, 8, seed=3)
    (layer(x) * g).sum().backward()
    w_b = (h * core.sign(shadow.detach())).requires_grad_()
    (F.linear(x, w_b, layer.bias.detach()) * g).sum().backward()
    assert torch.allclose(shadow.grad, h * w_b.grad, atol=1e-12)
    assert shadow.grad.abs().sum() > 0


def test_connect_clipping_holds_after_every_step(mnist_train_small):
    method = BinaryConnect(epochs=1, lr=0.5)                # a huge step: clipping must act
    model = untrained("lenet300")
    quantize_weights(model, lambda n, m: ConnectWeight(glorot_scale(m.weight), False))
    shadows = [w for _, w in shadow_weights(model)]
    seen = []

    class Watch(ClipShadow):
        def after_step(self, model):
            super().after_step(model)
            seen.append(max(w.abs().max().item() for w in self.weights))

    opt = torch.optim.Adam(shadows, lr=0.5)
    with train.quiet():
        method.fit(model, mnist_train_small, hooks=[Watch(shadows)], optimizer=opt)
    assert seen and max(seen) <= 1.0
    assert sum((w.abs() == 1).sum().item() for w in shadows) > 0     # the clip did bind


def test_stochastic_binarization_draws_plus_one_with_hard_sigmoid_probability():
    p = ConnectWeight(1.0, stochastic=True).train()
    w = torch.linspace(-1.2, 1.2, 25, dtype=torch.float64)
    torch.manual_seed(0)
    draws = torch.stack([p(w) for _ in range(4000)])
    assert set(draws.unique().tolist()) <= {-1.0, 1.0}
    freq = (draws > 0).double().mean(0)
    assert torch.allclose(freq, core.hard_sigmoid(w), atol=0.03)          # 4000 draws: sd <= 0.008
    assert torch.equal(p.eval()(w), core.sign(w))                      # test time: the sign


def test_binary_connect_folds_to_plus_minus_h_and_equals_a_float_network(mnist_train_small):
    base = untrained("lenet300")
    with train.quiet():
        out = BinaryConnect(epochs=1, stochastic=True).apply(base, mnist_train_small)
    x = sample_input(base)
    float_net = untrained("lenet300")
    for (name, w), (_, layer) in zip(layer_weights(out).items(), quantizable_layers(float_net)):
        h = torch.tensor(glorot_scale(w)).item()        # the float32 scale the layer holds
        assert set(w.unique().tolist()) <= {-h, h}, name
        layer.weight.data.copy_(torch.where(w > 0, h, -h))
        layer.bias.data.copy_(dict(out.named_modules())[name].bias)
    with torch.no_grad():
        assert torch.equal(out(x), float_net(x))
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))
    assert len(codec.encode(out)) < len(codec.encode(base)) / 8


def test_binary_connect_learns_and_keeps_ends_float_when_asked(mnist_train_small,
                                                               mnist_test_small):
    base = untrained("lenet300")
    with train.quiet():
        out = BinaryConnect(epochs=3, binarize_ends=False).apply(base, mnist_train_small)
    ws = list(layer_weights(out).values())
    assert ws[0].unique().numel() > 2 and ws[-1].unique().numel() > 2
    assert ws[1].unique().numel() == 2
    assert train.evaluate(out, mnist_test_small) > 0.6    # 512 images, 3 epochs; chance 0.1


# ------------------------------------------------------------------ LAB

def test_lab_proximal_step_equals_brute_force_minimisation():
    """min over alpha > 0, b in {-1,+1}^n of sum_i d_i (alpha b_i - w_i)^2, every b tried
    (for each b the best alpha is sum d b w / sum d, clipped at 0)."""
    for seed in range(5):
        w, d = randn(10, seed=seed), randn(10, seed=seed + 100).abs() + 0.05
        best, best_val = None, float("inf")
        for signs in itertools.product((-1.0, 1.0), repeat=10):
            b = torch.tensor(signs, dtype=torch.float64)
            alpha = max((d * b * w).sum() / d.sum(), 0.0)
            val = (d * (alpha * b - w) ** 2).sum()
            if val < best_val:
                best, best_val = alpha * b, val
        assert torch.allclose(lab_binarize(w, d), best, atol=1e-12)


def test_lab_scale_reduces_to_mean_abs_for_constant_d():
    w = zoo.pretrained("lenet300").net[1].weight.detach()
    for c in (1e-8, 1.0, 37.0):
        assert torch.allclose(lab_scale(w, torch.full_like(w, c)), core.ls_scale(w, False))


def test_adam_curvature_is_bias_corrected_sqrt_of_second_moment():
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], betas=(0.9, 0.999))
    grads = [randn(6, seed=s) for s in range(3)]
    v = torch.zeros(6, dtype=torch.float64)
    for g in grads:
        w.grad = g.clone()
        opt.step()
        v = 0.999 * v + 0.001 * g ** 2
    d = adam_curvature(opt.state[w]["exp_avg_sq"], int(opt.state[w]["step"]), 0.999, 1e-8)
    assert torch.allclose(d, (v / (1 - 0.999 ** 3)).sqrt() + 1e-8)


def test_lab_forward_gradient_and_curvature_follow_algorithm_1(mnist_train_small):
    """One LAB layer: the forward uses alpha sign(w) with alpha from d; the gradient at w_b
    reaches w unchanged; after training each layer folds to +-alpha with alpha weighted by
    Adam's second moments (not mean|w|)."""
    torch.manual_seed(0)
    layer = nn.Linear(30, 8).double()
    quantize_weights(nn.Sequential(layer), lambda n, m: LossAwareWeight(m.weight))
    param, w = layer.parametrizations.weight[0], layer.parametrizations.weight.original
    param.d.copy_(randn(8, 30, seed=4).abs() + 0.1)
    x, g = randn(5, 30, seed=5), randn(5, 8, seed=6)
    w_b = lab_binarize(w.detach(), param.d).requires_grad_()
    assert torch.allclose(layer(x), F.linear(x, w_b, layer.bias.detach()), atol=1e-12)
    (layer(x) * g).sum().backward()
    (F.linear(x, w_b, layer.bias.detach()) * g).sum().backward()
    assert torch.allclose(w.grad, w_b.grad, atol=1e-12)


def test_lab_training_sets_d_from_adams_second_moments(mnist_train_small):
    """After each step d = sqrt(v_hat) + eps of Adam's own state, the weights stay in
    [-1, 1], and the layer computes with alpha = ||d w||_1 / ||d||_1, a d-weighted mean that
    is not mean|w| (d varies across the weights)."""
    model = untrained("lenet300")
    quantize_weights(model, lambda n, m: LossAwareWeight(m.weight))
    pairs = shadow_weights(model)
    opt = torch.optim.Adam([w for _, w in pairs], lr=0.002)
    from workbench.binary.weights import LabCurvature
    with train.quiet():
        LossAware().fit(model, mnist_train_small, hooks=[LabCurvature(pairs, opt, 1e-8)],
                        optimizer=opt, epochs=1)
    for param, w in pairs:
        state = opt.state[w]
        assert torch.equal(param.d, adam_curvature(state["exp_avg_sq"], int(state["step"]),
                                                   0.999, 1e-8))
        assert w.abs().max() <= 1
    param, w = pairs[0]
    alpha = model.net[1].weight.detach().abs().unique()
    assert torch.allclose(alpha, lab_scale(w.detach(), param.d).reshape(1))
    assert param.d.max() > 10 * param.d.min()
    assert not torch.isclose(alpha, w.detach().abs().mean(), rtol=1e-4, atol=0)


def test_loss_aware_trains_folds_and_round_trips(mnist_train_small, mnist_test_small):
    base = untrained("lenet300")
    with train.quiet():
        out = LossAware(epochs=3, lr=0.002).apply(base, mnist_train_small)
    for name, w in layer_weights(out).items():
        assert w.abs().unique().numel() == 1 and w.unique().numel() == 2, name
    x = sample_input(base)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))
    assert train.evaluate(out, mnist_test_small) > 0.6


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="eps"):
        LossAware(eps=0.0)
    with pytest.raises(ValueError, match="scope"):
        Sign(scope="conv")
    with pytest.raises(ValueError, match="stochastic"):
        BinaryConnect(stochastic="yes")


def two_layer_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize("cls", [BinaryConnect, LossAware])
def test_float_ends_with_nothing_between_them_is_refused_not_returned_unchanged(cls):
    """Every layer of a two-layer MLP is an end: binarize_ends=False would binarize none."""
    mlp = two_layer_mlp()
    method = cls(epochs=0, binarize_ends=False)
    assert not method.supports(mlp)
    with pytest.raises(ValueError, match="set binarize_ends=True"):
        method.apply(mlp)
    out = cls(epochs=0).apply(mlp)              # the default binarizes both layers
    for name in ("1", "3"):
        w = out.get_submodule(name).weight
        assert w.abs().unique().numel() == 1 and not torch.equal(w, mlp.get_submodule(name).weight)
