"""The shared pieces of the binary family: sign, its straight-through gradients, the
least-squares scale, and the sign activation module."""
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
