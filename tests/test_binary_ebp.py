"""Expectation backpropagation: the mean-field moments against Monte Carlo sampling of binary
weights, the update against a hand computation and against autograd, and a short MNIST run."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec
from workbench.binary.core import SignActivation
from workbench.binary.ebp import (
    EBP,
    deterministic_forward,
    ebp_step,
    input_affine,
    mean_field_forward,
    output_delta,
    targets,
)
from workbench.train import evaluate


def gen(seed):
    return torch.Generator().manual_seed(seed)


def tiny_net(sizes, seed=0):
    g = gen(seed)
    h = [torch.randn(o, i, generator=g, dtype=torch.float64) for i, o in zip(sizes, sizes[1:])]
    b = [0.3 * torch.randn(o, generator=g, dtype=torch.float64) for o in sizes[1:]]
    return h, b


def test_mean_field_moments_match_monte_carlo():
    """Sample binary weights W = +1 with probability (1 + tanh h) / 2 and push a fixed input
    through the sign network: the sampled mean and variance of each layer's input u match the
    mean-field ones (layer 1 exactly, later layers up to the Gaussian approximation)."""
    sizes = [120, 60, 40, 3]
    h, b = tiny_net(sizes)
    means = [torch.tanh(t) for t in h]
    x = torch.rand(1, sizes[0], generator=gen(1), dtype=torch.float64)
    mus, variances, _ = mean_field_forward(means, b, x, bias_var=0.0)
    g, samples = gen(2), []
    for _ in range(8):                      # 8 x 500 networks, in chunks
        v = x.expand(500, -1)
        us = []
        for m, bias in zip(means, b):
            w = torch.where(torch.rand(500, *m.shape, generator=g, dtype=torch.float64)
                            < (1 + m) / 2, 1.0, -1.0).double()
            u = (torch.einsum("soi,si->so", w, v) + bias) / math.sqrt(m.shape[1] + 1)
            us.append(u)
            v = torch.where(u >= 0, 1.0, -1.0).double()
        samples.append(us)
    for layer in range(3):
        u = torch.cat([s[layer] for s in samples])
        n = len(u)
        mc_mean, mc_var = u.mean(0), u.var(0)
        se = (mc_var / n).sqrt()
        tolerance = 5 * se + (0 if layer == 0 else 0.03) * mc_var.sqrt()
        assert ((mc_mean - mus[layer][0]).abs() <= tolerance).all(), layer
        rel = (mc_var / variances[layer][0] - 1).abs()
        assert (rel <= (0.12 if layer == 0 else 0.15)).all(), (layer, rel.max())
    # the sign unit's mean 2 Phi(mu / sigma) - 1 against the sampled sign of layer 1
    sampled = torch.cat([torch.where(s[0] >= 0, 1.0, -1.0) for s in samples]).mean(0)
    predicted = 2 * torch.special.ndtr(mus[0][0] / variances[0][0].sqrt()) - 1
    assert (sampled - predicted).abs().max() < 0.06


def test_update_matches_a_hand_computation():
    """A 2-2-1 network, one example, every quantity written out with math.erf."""
    h = [torch.tensor([[0.5, -1.0], [0.2, 0.3]], dtype=torch.float64),
         torch.tensor([[0.7, -0.4]], dtype=torch.float64)]
    b = [torch.tensor([0.1, -0.2], dtype=torch.float64), torch.tensor([0.05], dtype=torch.float64)]
    x, y = [0.8, 0.3], -1.0
    phi = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))          # noqa: E731
    density0 = lambda mu, var: math.exp(-mu * mu / (2 * var)) / math.sqrt(2 * math.pi * var)  # noqa
    m1 = [[math.tanh(v) for v in row] for row in h[0].tolist()]
    m2 = [math.tanh(v) for v in h[1][0].tolist()]
    mu1 = [(m1[k][0] * x[0] + m1[k][1] * x[1] + b[0][k].item()) / math.sqrt(3) for k in range(2)]
    var1 = [((1 - m1[k][0] ** 2) * x[0] ** 2 + (1 - m1[k][1] ** 2) * x[1] ** 2 + 1) / 3
            for k in range(2)]
    v1 = [2 * phi(mu1[k] / math.sqrt(var1[k])) - 1 for k in range(2)]
    mu2 = (m2[0] * v1[0] + m2[1] * v1[1] + b[1].item()) / math.sqrt(3)
    var2 = (sum(1 - m2[j] ** 2 * v1[j] ** 2 for j in range(2)) + 1) / 3
    delta2 = y * density0(mu2, var2) / phi(y * mu2 / math.sqrt(var2))
    delta1 = [2 * density0(mu1[k], var1[k]) * m2[k] * delta2 / math.sqrt(3) for k in range(2)]
    expected_h2 = [h[1][0, j].item() + delta2 * v1[j] / math.sqrt(3) for j in range(2)]
    expected_h1 = [[h[0][k, j].item() + delta1[k] * x[j] / math.sqrt(3) for j in range(2)]
                   for k in range(2)]
    expected_b = [b[0][k].item() + delta1[k] / math.sqrt(3) for k in range(2)]
    ebp_step(h, b, torch.tensor([x], dtype=torch.float64), torch.tensor([[y]], dtype=torch.float64))
    assert torch.allclose(h[1], torch.tensor([expected_h2], dtype=torch.float64), atol=1e-14)
    assert torch.allclose(h[0], torch.tensor(expected_h1, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(b[0], torch.tensor(expected_b, dtype=torch.float64), atol=1e-14)
    assert b[1].item() == pytest.approx(0.05 + delta2 / math.sqrt(3), abs=1e-14)


def test_update_is_the_gradient_of_the_log_marginal_likelihood_wrt_the_means():
    """The paper's update is d ln P(y | x) / d <W> with the variances held fixed: autograd on
    the mean-field pass (sigma detached) gives the same h change, summed over a batch."""
    sizes = [30, 12, 8, 4]
    h, b = tiny_net(sizes, seed=5)
    x = torch.rand(6, sizes[0], generator=gen(6), dtype=torch.float64)
    y = targets(torch.tensor([0, 1, 2, 3, 1, 0]), 4)
    means = [torch.tanh(t).requires_grad_() for t in h]
    bias = [t.clone().requires_grad_() for t in b]
    v, var_v = x, None
    for i, (m, c) in enumerate(zip(means, bias)):
        fan = m.shape[1] + 1
        mu = (v @ m.T + c) / math.sqrt(fan)
        if var_v is None:
            var = ((v * v) @ (1 - m * m).T + 1) / fan
        else:
            var = (var_v.sum(1, keepdim=True) + (1 - var_v) @ (1 - m * m).T + 1) / fan
        sigma = var.sqrt().detach()
        if i == len(means) - 1:
            log_p = torch.special.log_ndtr(y * mu / sigma).sum()
        p = torch.special.ndtr(mu / sigma)
        v, var_v = 2 * p - 1, (4 * p * (1 - p)).detach()
    log_p.backward()
    before = [t.clone() for t in h], [t.clone() for t in b]
    ebp_step(h, b, x, y)
    for layer in range(3):
        assert torch.allclose(h[layer] - before[0][layer], means[layer].grad, atol=1e-12)
        assert torch.allclose(b[layer] - before[1][layer], bias[layer].grad, atol=1e-12)


def test_output_delta_is_finite_for_a_confident_mistake():
    mu, var = torch.tensor([40.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    delta = output_delta(mu, var, torch.tensor([-1.0], dtype=torch.float64))
    assert torch.isfinite(delta).all() and delta.item() == pytest.approx(-40.0, rel=0.01)
    # the usual case against the plain formula
    mu = torch.tensor([0.3], dtype=torch.float64)
    plain = math.exp(-0.045) / math.sqrt(2 * math.pi) / (0.5 * (1 + math.erf(0.3 / 2 ** 0.5)))
    assert output_delta(mu, var, torch.ones(1, dtype=torch.float64)).item() == \
        pytest.approx(plain, rel=1e-12)


@pytest.fixture(scope="module")
def mnist_6000():
    from workbench import data
    return data.mnist("train").subset(6000, seed=0)


@pytest.fixture(scope="module")
def ebp_mnist(mnist_6000):
    """EBP on 6000 training images, from scratch, 3 epochs (a few seconds)."""
    base = untrained("lenet300")
    return base, EBP(epochs=3, batch_size=32).apply(base, mnist_6000)


def test_a_few_epochs_on_mnist_are_clearly_above_chance(ebp_mnist, mnist_test_small):
    _, out = ebp_mnist
    assert evaluate(out, mnist_test_small) > 0.6          # chance is 0.1


def test_result_is_the_deterministic_binary_network(ebp_mnist, mnist_6000):
    base, out = ebp_mnist
    linears = [m for m in out.modules() if isinstance(m, torch.nn.Linear)]
    for layer in linears:
        assert layer.weight.unique().numel() == 2
        assert torch.isclose(layer.weight.unique().sum(), torch.zeros(()), atol=1e-7)
    assert sum(isinstance(m, SignActivation) for m in out.modules()) == 2
    # the module computes the EBP-D network of the same h on the raw intensities
    h, b = EBP(epochs=3, batch_size=32).train_h(untrained("lenet300"), mnist_6000)
    x = sample_input(base, n=16)
    scale, shift = input_affine(mnist_6000)
    raw = x.flatten(1) * scale + shift
    with torch.no_grad():
        expected = deterministic_forward(h, b, raw) / math.sqrt(101)
        assert torch.allclose(out(x), expected, atol=1e-4)
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))
    assert len(codec.encode(out)) < len(codec.encode(base)) / 10


def test_only_mlps_are_supported_and_bad_values_refused():
    assert EBP().supports(untrained("lenet300"))
    assert not EBP().supports(untrained("lenet5"))
    with pytest.raises(ValueError, match="MLP"):
        EBP().apply(untrained("lenet5"), None)
    for field, value in [("epochs", 0), ("init", "zeros"), ("batch_size", 0)]:
        with pytest.raises(ValueError, match=field):
            EBP(**{field: value})
    assert EBP().tags().needs_data and EBP().tags().bits_per_weight == 1


def test_init_from_the_networks_weights_keeps_their_signs():
    from workbench.binary.ebp import initial_h
    base = untrained("lenet300")
    weights = [base.net[i].weight for i in (1, 3, 5)]
    h = initial_h([784, 300, 100, 10], "weights", 1.0, gen(0), weights)
    for t, w in zip(h, weights):
        assert torch.equal(t > 0, w.detach().double() > 0)
        assert t.var().item() == pytest.approx(1.0 / w.shape[1], rel=1e-6)
