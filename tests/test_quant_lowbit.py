"""DoReFa, LSQ / PACT and SYQ against their closed forms and hand-derived gradients."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import untrained

from workbench import train
from workbench.quantize import lowbit, lowbit_tensors
from workbench.quantize.lowbit import (DoReFa, LearnedStep, QuantReLU, Symmetric,
                                       dorefa_activations, dorefa_weights, lsq_quantize,
                                       lsq_range, lsq_step_gradient, pact_activations,
                                       symmetric_init, symmetric_quantize)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ DoReFa

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dorefa_weights_equal_the_closed_form(bits):
    w = randn(50, 7)
    t = torch.tanh(w)
    n = 2 ** bits - 1
    expected = 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * n) / n - 1
    got = dorefa_weights(w, bits)
    assert torch.equal(got, expected)
    assert got.unique().numel() <= 2 ** bits and got.min() >= -1 and got.max() <= 1


def test_dorefa_ste_gradient_equals_the_hand_derived_one():
    """L = sum g_i Q_i. With the STE (d round = 1), t = tanh w, M = max|t| at index m:
    dL/dw_j = g_j (1 - t_j^2) / M  -  [j = m] sign(t_m) (1 - t_m^2) / M^2 * sum_i g_i t_i."""
    w = randn(6, 5, seed=1).requires_grad_()
    g = randn(6, 5, seed=2)
    (dorefa_weights(w, 3) * g).sum().backward()
    t = torch.tanh(w.detach())
    m = t.abs().argmax()
    big_m = t.abs().max()
    expected = g * (1 - t ** 2) / big_m
    expected.view(-1)[m] -= (torch.sign(t.view(-1)[m]) * (1 - t.view(-1)[m] ** 2) / big_m ** 2
                             * (g * t).sum())
    assert torch.allclose(w.grad, expected, atol=1e-12)


def test_dorefa_one_bit_is_sign_times_mean_with_identity_gradient():
    w = randn(40, seed=3).requires_grad_()
    q = dorefa_weights(w, 1)
    scale = w.detach().abs().mean()
    assert torch.equal(q.detach().abs(), torch.full_like(q, scale.item()))
    assert torch.equal(torch.sign(q.detach()), torch.sign(w.detach()))
    q.sum().backward()
    assert torch.allclose(w.grad, torch.ones_like(w))


def test_dorefa_activations_clip_round_and_pass_gradient_inside():
    x = torch.tensor([-0.5, 0.0, 0.1, 0.2, 0.5, 0.74, 0.9, 1.0, 1.7], dtype=torch.float64,
                     requires_grad=True)
    y = dorefa_activations(x, 2)
    assert torch.equal(y.detach(), torch.round(x.detach().clamp(0, 1) * 3) / 3)
    y.sum().backward()
    inside = ((x.detach() >= 0) & (x.detach() <= 1)).double()
    assert torch.equal(x.grad, inside)


# ------------------------------------------------------------------ LSQ and PACT

def test_lsq_step_gradient_matches_eq3_times_the_gradient_scale():
    v = torch.tensor([-1.3, -0.71, -0.2, 0.05, 0.26, 0.44, 0.9, 2.0], dtype=torch.float64,
                     requires_grad=True)
    s = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    upstream = randn(8, seed=4)
    qn, qp = lsq_range(2, signed=True)                 # -2 .. 1
    g = 1 / math.sqrt(v.numel() * qp)
    v_hat = lsq_quantize(v, s, qn, qp, g)
    u = v.detach() / 0.3
    assert torch.equal(v_hat.detach(), torch.clamp(u, -qn, qp).round() * s.detach())
    (v_hat * upstream).sum().backward()
    eq3 = lsq_step_gradient(v.detach(), 0.3, qn, qp)
    # by hand for the first elements: clipped at -Qn, inside (round(u) - u) ...
    assert eq3[0] == -2 and eq3[-1] == 1 and torch.isclose(eq3[3], -u[3] + u[3].round())
    assert torch.isclose(s.grad, g * (upstream * eq3).sum(), atol=1e-12)
    inside = ((u > -qn) & (u < qp)).double()
    assert torch.equal(v.grad, upstream * inside)


def test_lsq_ranges_and_initial_step():
    assert lsq_range(2, True) == (2, 1) and lsq_range(4, True) == (8, 7)
    assert lsq_range(2, False) == (0, 3)
    w = randn(100, seed=5)
    assert torch.isclose(lowbit.lsq_init(w, 7), 2 * w.abs().mean() / math.sqrt(7))
    p = lowbit.LSQWeight(w.float(), 3)
    assert p.g == pytest.approx(1 / math.sqrt(100 * 3))


def test_pact_clips_with_a_learned_alpha_and_its_gradient():
    x = torch.tensor([-1.0, 0.3, 1.1, 2.0, 2.5, 4.0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    y = pact_activations(x, alpha, 2)
    step = 2.0 / 3
    expected = torch.round(x.detach().clamp(0, 2.0) / step) * step
    assert torch.allclose(y.detach(), expected, atol=1e-15)
    upstream = randn(6, seed=6)
    (y * upstream).sum().backward()
    above = x.detach() >= 2.0
    assert torch.isclose(alpha.grad, upstream[above].sum())          # PACT eq. 3
    assert torch.equal(x.grad, upstream * ((x.detach() > 0) & ~above).double())


# ------------------------------------------------------------------ SYQ

def test_syq_values_are_exactly_plus_minus_a_and_zero_per_pixel_group():
    w = randn(4, 3, 5, 5, seed=7).float()
    scale = symmetric_init(w, ternary=True, eta=0.05, group="pixel")
    assert scale.shape == (1, 1, 5, 5)
    q = symmetric_quantize(w, scale, ternary=True, eta=0.05)
    threshold = 0.05 * w.abs().max()
    for i in range(5):
        for j in range(5):
            a = scale[0, 0, i, j]
            block, vals = w[:, :, i, j], q[:, :, i, j]
            assert set(vals.unique().tolist()) <= {-a.item(), 0.0, a.item()}
            assert torch.equal(vals == 0, block.abs() <= threshold)
            assert torch.equal(torch.sign(vals[vals != 0]), torch.sign(block[vals != 0]))
            # the initial scale is the mean |w| of the group's nonzero codes
            assert torch.isclose(a, block.abs()[block.abs() > threshold].mean())


def test_syq_binary_row_groups_and_scale_gradient():
    w = randn(2, 2, 3, 3, seed=8)
    scale = symmetric_init(w, ternary=False, eta=0.05, group="row").requires_grad_()
    assert scale.shape == (1, 1, 3, 1)
    shadow = w.clone().requires_grad_()
    q = symmetric_quantize(shadow, scale, ternary=False, eta=0.05)
    assert torch.equal(q.detach().abs(), scale.detach().expand_as(w))
    upstream = randn(2, 2, 3, 3, seed=9)
    (q * upstream).sum().backward()
    codes = torch.sign(w)
    assert torch.allclose(scale.grad, (upstream * codes).sum((0, 1, 3), keepdim=True))
    assert torch.allclose(shadow.grad, upstream * scale.detach())   # STE scaled by a


def test_syq_fully_connected_layer_has_one_scale():
    assert lowbit.group_shape(torch.zeros(10, 20), "pixel") == (1, 1)


# ------------------------------------------------------------------ the methods

@pytest.fixture(scope="module")
def small(mnist_train_small):
    return mnist_train_small


def middle_layers(model):
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return {n: model.get_submodule(n) for n in names[1:-1]}, names


def test_dorefa_apply_folds_to_2bit_middle_layers_and_float_ends(small):
    base = untrained("lenet5")
    with train.quiet():
        out = DoReFa(weight_bits=2, epochs=1).apply(base, small)
    middle, names = middle_layers(out)
    for layer in middle.values():
        assert layer.weight.unique().numel() <= 4
        assert not hasattr(layer, "parametrizations")
    assert out.get_submodule(names[0]).weight.unique().numel() > 16      # kept float


def test_lsq_apply_weights_are_step_times_integers(small):
    base = untrained("lenet300")
    method = LearnedStep(learn="lsq", weight_bits=3, act_bits=2, end_bits=8, epochs=1)
    with train.quiet():
        out = method.apply(base, small)
    middle, names = middle_layers(out)
    (layer,) = middle.values()
    values = layer.weight.unique()
    assert values.numel() <= 8
    step = (values[1:] - values[:-1]).min()
    ints = values / step
    assert torch.allclose(ints, ints.round(), atol=1e-4) and ints.round().min() >= -4
    assert out.get_submodule(names[0]).weight.unique().numel() <= 256
    relus = [m for m in out.modules() if isinstance(m, QuantReLU)]
    assert len(relus) == 2 and all(m.mode == "lsq" and m.step.item() > 0 for m in relus)


def test_symmetric_apply_all_layers_ternary(small):
    with train.quiet():
        out = Symmetric(quantize_ends=True, epochs=1).apply(untrained("lenet300"), small)
    for layer in middle_layers(out)[0].values():
        values = layer.weight.unique()
        assert values.numel() == 3 and values[1] == 0 and values[0] == -values[2]


@pytest.mark.parametrize("cls, field, value", [
    (DoReFa, "weight_bits", 0), (DoReFa, "act_bits", 9), (LearnedStep, "learn", "apot"),
    (LearnedStep, "weight_bits", 1), (Symmetric, "group", "channel"), (Symmetric, "eta", 1.5),
    (Symmetric, "quantize_ends", 1), (DoReFa, "epochs", 2.5), (LearnedStep, "pact_alpha", "x")])
def test_bad_values_are_refused_by_name(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_nominal_bits():
    assert DoReFa(weight_bits=3).tags().bits_per_weight == 3
    assert Symmetric().tags().bits_per_weight == pytest.approx(math.log2(3))
    assert Symmetric(codebook="binary").bits_per_weight() == 1


def test_rules_between_fields_and_data_needs():
    with pytest.raises(ValueError, match="end_bits"):
        LearnedStep(learn="lsq", end_bits=1)
    assert LearnedStep(learn="pact", end_bits=1).end_bits == 1
    # LSQ calibrates its activation steps on a batch: data even without training
    assert LearnedStep(epochs=0).tags().needs_data
    assert not LearnedStep(learn="pact", epochs=0).tags().needs_data
    assert not DoReFa(epochs=0).tags().needs_data and DoReFa().tags().needs_data
    out = DoReFa(weight_bits=2, epochs=0).apply(untrained("lenet300"))   # quantize only
    assert middle_layers(out)[0]["net.3"].weight.unique().numel() <= 4


def test_lsq_calibration_sets_steps_and_leaves_no_hooks():
    model = untrained("lenet300")
    lowbit.quantize_relus(model, 2, "lsq")
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    model.train()
    lowbit.calibrate_lsq_steps(model, x)
    assert model.training
    assert not any(m._forward_pre_hooks for m in model.modules())
    relu = model.net[2]
    with torch.no_grad():
        inputs = model.net[1](model.net[0](x))
    assert torch.isclose(relu.step, lowbit.lsq_init(torch.relu(inputs), 3))


def test_functions_on_tensors_stay_importable_from_lowbit():
    for name in dir(lowbit_tensors):
        obj = getattr(lowbit_tensors, name)
        if callable(obj) and getattr(obj, "__module__", None) == lowbit_tensors.__name__:
            assert getattr(lowbit, name) is obj, name
