"""The shared pieces of the binary family: sign, its straight-through gradients, the
least-squares scale, the binary-weight parametrization and its clipping hook, the sign
activation and pass-through modules, and the choice of the layers a method binarizes."""
from __future__ import annotations

import pytest
import torch

from workbench import codec, models
from workbench.binary import core

GRADIENT_FUNCTIONS = [core.sign_ste, core.sign_htanh, core.sign_approx, core.sign_stochastic]


@pytest.mark.parametrize("f", GRADIENT_FUNCTIONS, ids=lambda f: f.__name__)
def test_forward_values_are_exactly_plus_or_minus_one(f):
    """No rounding residue: the 1-bit file needs exact +-1 (and sign(0) = +1)."""
    x = torch.cat([torch.randn(20000) * 0.7, torch.zeros(3)]).requires_grad_()
    y = f(x)
    assert set(y.detach().unique().tolist()) <= {-1.0, 1.0}
    if f is not core.sign_stochastic:
        assert torch.equal(y.detach(), torch.where(x >= 0, 1.0, -1.0))


def gradient(f, x):
    x = x.clone().requires_grad_()
    f(x).backward(torch.ones_like(x))
    return x.grad


def test_straight_through_gradients_against_their_formulas():
    x = torch.tensor([-2.0, -1.5, -0.9, -0.5, -0.1, 0.0, 0.3, 0.8, 1.2, 3.0])
    assert torch.equal(gradient(core.sign_ste, x), torch.ones_like(x))
    # hard tanh: 1 inside [-1, 1], 0 outside
    assert torch.equal(gradient(core.sign_htanh, x), (x.abs() <= 1).float())
    # ApproxSign (Bi-Real Net, eq. 6): 2 - 2|x| inside (-1, 1), 0 outside
    assert torch.allclose(gradient(core.sign_approx, x),
                          torch.where(x.abs() < 1, 2 - 2 * x.abs(), torch.zeros_like(x)))


def test_approx_sign_gradient_is_the_polynomials_derivative_by_autograd():
    # Oracle: autograd through Bi-Real's piecewise quadratic itself (Liu et al. 2018, eq. 5),
    # on a conv-sized tensor with the breakpoints -1, 0 and 1 included.
    x = torch.cat([torch.tensor([-1.0, 0.0, 1.0]), 3 * torch.randn(4000, generator=torch.
                                                                     Generator().manual_seed(0))])
    def quadratic(t):
        return torch.where(t < -1, -torch.ones_like(t), torch.where(
            t < 0, 2 * t + t * t, torch.where(t < 1, 2 * t - t * t, torch.ones_like(t))))
    assert torch.allclose(gradient(core.sign_approx, x), gradient(quadratic, x))
    assert torch.equal(core.sign_approx(x), core.sign(x))


def test_stochastic_sign_follows_the_hard_sigmoid():
    torch.manual_seed(0)
    x = torch.full((40000,), 0.4)
    share = (core.sign_stochastic(x) > 0).float().mean().item()
    p = (0.4 + 1) / 2
    assert abs(share - p) < 4 * (p * (1 - p) / 40000) ** 0.5
    assert torch.equal(core.sign_stochastic(torch.tensor([-3.0, 3.0])), torch.tensor([-1.0, 1.0]))


@pytest.mark.parametrize("per_channel", [True, False])
def test_ls_scale_is_the_least_squares_optimum_on_a_real_layer(per_channel):
    w = models.build("vgg_small").features[3].weight.detach()
    alpha = core.ls_scale(w, per_channel)
    b = core.sign(w)
    dims = core.scale_dims(w, per_channel)
    closed = (w * b).sum(dims, keepdim=True) / b.pow(2).sum(dims, keepdim=True)
    assert torch.allclose(alpha, closed)
    err = lambda a: (w - a * b).pow(2).sum()
    for nudge in (0.98, 1.02):
        assert err(alpha) < err(alpha * nudge)
    assert torch.equal(core.binarize(w, per_channel), alpha * b)


def test_sign_activation_modes_and_its_file():
    with pytest.raises(ValueError, match="allowed: ste, htanh, approx"):
        core.SignActivation("tanh")
    assert core.replace_relus(torch.nn.Sequential(torch.nn.ReLU()), core.SignActivation) == ["0"]
    model = models.build("lenet300")
    names = core.replace_relus(model, lambda: core.SignActivation("htanh", stochastic=True))
    assert names and all(isinstance(model.get_submodule(n), core.SignActivation) for n in names)
    back = codec.decode(codec.encode(model))
    x = torch.randn(5, 1, 28, 28)
    assert torch.equal(back.eval()(x), model.eval()(x))
    assert back.get_submodule(names[0]).config == {"mode": "htanh", "stochastic": True}


def test_end_layers_are_the_first_and_last_weight_layers():
    assert core.end_layers(models.build("lenet300")) == {"net.1", "net.5"}
    assert core.end_layers(torch.nn.Sequential(torch.nn.ReLU())) == set()


def test_chosen_layers_leave_out_the_ends_only_when_asked():
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    assert core.chosen_layers(mlp, keep_ends=False) == ["1", "3"]
    assert core.chosen_layers(mlp, keep_ends=True) == []          # nothing between the ends
    assert core.chosen_layers(models.build("lenet300"), keep_ends=True) == ["net.3"]


def weight_gradient_oracle(gradient, w, g):
    """The closed forms of ``binary_weight``'s backward, per output channel."""
    a = w.abs().mean((1, 2, 3), keepdim=True)
    inside = (w.abs() <= 1).to(w.dtype)
    if gradient == "ste":
        return g
    if gradient == "htanh":
        return g * inside
    if gradient == "magnitude":
        return a * g * inside
    # xnor: d/dw_i sum_j g_j a(w) s_j = a g_i + sign(w_i) / n * sum_j g_j s_j
    s = core.sign(w)
    n = w[0].numel()
    return a * g + s / n * (g * s).sum((1, 2, 3), keepdim=True)


@pytest.mark.parametrize("gradient", core.WEIGHT_GRADIENTS)
def test_binary_weight_values_and_gradients_against_closed_forms(gradient):
    """On a real layer (VGG-small's second convolution), scaled to put some weights beyond 1."""
    w0 = models.build("vgg_small").features[3].weight.detach().double() * 40
    g = torch.randn(w0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = w0.clone().requires_grad_()
    b = core.BinaryWeight(gradient)(w)
    assert torch.equal(b.detach(), core.binarize(w0))           # exactly +-a per channel
    b.backward(g)
    assert (w0.abs() > 1).any() and (w0.abs() <= 1).any()
    assert torch.allclose(w.grad, weight_gradient_oracle(gradient, w0, g), atol=1e-12)


def test_binary_weight_stochastic_in_training_only_and_refuses_unknown_gradients():
    w = torch.full((2, 20000), 0.4)
    torch.manual_seed(0)
    bw = core.BinaryWeight("ste", stochastic=True).train()
    drawn = bw(w)
    a = core.ls_scale(w)
    assert set((drawn / a).unique().tolist()) == {-1.0, 1.0}
    share = (drawn > 0).float().mean().item()
    p = core.hard_sigmoid(torch.tensor(0.4)).item()
    assert abs(share - p) < 4 * (p * (1 - p) / w.numel()) ** 0.5
    assert torch.equal(bw.eval()(w), core.binarize(w))          # test time: the sign
    with pytest.raises(ValueError, match="allowed: ste, htanh, magnitude, xnor"):
        core.BinaryWeight("approx")


def test_clip_shadow_clips_given_weights_or_every_shadow_of_the_model():
    from workbench.quantize.core import quantize_weights
    model = models.build("lenet300")
    quantize_weights(model, lambda n, m: core.BinaryWeight() if n != "net.5" else None)
    shadows = [w for _, w in core.shadow_weights(model)]
    assert len(shadows) == 2
    with torch.no_grad():
        for w in shadows:
            w.mul_(1000)
        model.net[5].weight.mul_(1000)
    before_last = model.net[5].weight.detach().clone()
    core.ClipShadow(shadows[:1]).after_step(model)
    assert shadows[0].abs().max() == 1 and shadows[1].abs().max() > 1
    core.ClipShadow().after_step(model)                          # None: every shadow weight
    assert all(w.abs().max() == 1 for w in shadows)
    assert torch.equal(model.net[5].weight, before_last)        # not a shadow: untouched


def test_pass_through_is_the_identity_and_is_stored():
    model = models.build("lenet300")
    names = core.replace_relus(model, core.PassThrough)
    x = torch.randn(3, 1, 28, 28)
    back = codec.decode(codec.encode(model))
    assert [type(back.get_submodule(n)).__name__ for n in names] == ["PassThrough"] * 2
    assert torch.equal(back(x), model(x))

