"""TWN and TTQ against their closed forms, a brute-force optimal threshold and autograd."""
from __future__ import annotations

import math
import time

import pytest
import torch
from conftest import sample_input, untrained
from torch import nn

from workbench import codec, train, zoo
from workbench.binary.ternary import (
    TTQ,
    TWN,
    TTQWeight,
    optimal_threshold,
    ternary_codes,
    ternary_error,
    ttq_init,
    ttq_quantize,
    ttq_threshold,
    twn_scale,
    twn_ternarize,
    twn_threshold,
    zero_fraction,
)
from workbench.quantize.core import fold, quantize_weights


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.fixture(scope="module")
def lenet5():
    return zoo.pretrained("lenet5")


# ------------------------------------------------------------------ TWN

def test_twn_threshold_and_scale_equal_the_closed_form():
    w = randn(64, 27)
    delta = twn_threshold(w)
    assert torch.isclose(delta, 0.7 * w.abs().sum() / w.numel())
    kept = [abs(v) for v in w.flatten().tolist() if abs(v) > delta]
    assert torch.isclose(twn_scale(w, delta), torch.tensor(sum(kept) / len(kept),
                                                            dtype=w.dtype))
    q = twn_ternarize(w)
    alpha = twn_scale(w, delta)
    assert torch.equal(q, alpha * torch.sign(w) * (w.abs() > delta))
    # alpha is the least-squares scale of those codes: the error is flat in alpha there
    t = ternary_codes(w, delta)
    assert torch.isclose(((w - alpha * t) * t).sum(), torch.zeros((), dtype=w.dtype),
                         atol=1e-10)


def test_twn_straight_through_gradient_is_the_identity():
    w = randn(10, 12, seed=1).requires_grad_()
    g = randn(10, 12, seed=2)
    (twn_ternarize(w) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_optimal_threshold_is_the_brute_force_minimum():
    """Our sort-and-cumsum optimum against trying every threshold one by one."""
    w = zoo.pretrained("lenet5").get_submodule(layers(zoo.pretrained("lenet5"))[0][0]).weight
    w = w.detach().double().flatten()
    delta, error = optimal_threshold(w)
    a = w.abs().sort().values
    candidates = torch.cat([torch.zeros(1, dtype=w.dtype), a[:-1]])   # keep the top k, every k
    brute = torch.stack([ternary_error(w, d) for d in candidates])
    assert torch.isclose(error, brute.min(), rtol=1e-9)
    assert torch.isclose(ternary_error(w, delta), brute.min(), rtol=1e-9)


def test_seventy_percent_of_mean_is_near_optimal_on_every_lenet5_layer(lenet5):
    """TWN's 0.7 E|W| against the exact optimum on the trained LeNet-5: the squared error of
    the approximation stays within 5 % of the optimal one on every layer, and its threshold
    within a third of the optimal threshold."""
    for name, m in layers(lenet5):
        w = m.weight.detach().double()
        delta, best = optimal_threshold(w)
        approx = ternary_error(w, twn_threshold(w))
        assert best <= approx <= 1.05 * best, name
        assert abs(twn_threshold(w) / delta - 1) < 1 / 3, name


def test_fraction_of_zeros_for_a_normal_layer_matches_the_closed_form():
    """|w| <= 0.7 E|w| = 0.7 sigma sqrt(2/pi): a share erf(0.7 / sqrt(pi)) of a normal."""
    w = randn(400_000, seed=3)
    zeros = (ternary_codes(w, twn_threshold(w)) == 0).double().mean()
    assert zeros == pytest.approx(math.erf(0.7 / math.sqrt(math.pi)), abs=3e-3)


def test_twn_post_training_folds_every_layer_to_minus_a_zero_plus_a(lenet5):
    out = TWN(epochs=0).apply(lenet5)
    total = zeros = 0
    for (name, m), (_, orig) in zip(layers(out), layers(lenet5)):
        w = orig.weight.detach()
        delta = twn_threshold(w)
        alpha = twn_scale(w, delta)
        assert not hasattr(m, "parametrizations")
        assert torch.equal(m.weight, alpha * ternary_codes(w, delta)), name
        assert sorted(m.weight.unique().tolist()) == pytest.approx(
            [-alpha.item(), 0.0, alpha.item()])
        assert torch.equal(m.bias, orig.bias)                 # biases stay float
        total, zeros = total + w.numel(), zeros + int((m.weight == 0).sum())
    assert zero_fraction(out) == zeros / total and 0.2 < zeros / total < 0.8
    # a bigger c zeroes more weights
    assert zero_fraction(TWN(c=1.2, epochs=0).apply(lenet5)) > zeros / total


def test_twn_training_keeps_three_values_and_keep_ends(mnist_train_small):
    with train.quiet():
        out = TWN(epochs=1, keep_ends=True).apply(untrained("lenet5"), mnist_train_small)
    (first, *middle, last) = [m for _, m in layers(out)]
    for m in middle:
        values = m.weight.unique()
        assert values.numel() == 3 and values[1] == 0 and values[0] == -values[2]
    assert first.weight.unique().numel() > 100 and last.weight.unique().numel() > 100


def test_twn_post_training_is_fast_enough_for_a_slider(lenet5):
    seconds = []
    for c in (0.3, 0.7, 1.1):
        start = time.perf_counter()
        TWN(c=c, epochs=0).apply(lenet5)
        seconds.append(time.perf_counter() - start)
    assert min(seconds) < 0.5


def test_twn_codec_round_trip(lenet5):
    out = TWN(epochs=0).apply(lenet5)
    blob = codec.encode(out)
    back = codec.decode(blob)
    x = sample_input(out)
    assert torch.equal(back(x), out(x))
    assert len(blob) * 8 < len(codec.encode(lenet5, formats=("dense",), dtype="float32"))


# ------------------------------------------------------------------ TTQ

def test_ttq_scale_gradients_and_shadow_scaling_equal_the_papers_formulas():
    w = randn(8, 4, 3, 3, seed=4).requires_grad_()
    w_p = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    w_n = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    g = randn(8, 4, 3, 3, seed=5)
    q = ttq_quantize(w, w_p, w_n, t=0.3)
    delta = 0.3 * w.detach().abs().max()
    pos, neg = w.detach() > delta, w.detach() < -delta
    assert torch.equal(ttq_threshold(w, 0.3), delta)
    assert torch.equal(q.detach(), 0.8 * pos.double() - 1.3 * neg.double())
    assert pos.any() and neg.any() and (~pos & ~neg).any()
    (q * g).sum().backward()
    # eq. 6: dL/dW_p = sum of dL/dw_t over I_p; W_n enters as -W_n, hence the minus
    assert torch.isclose(w_p.grad, g[pos].sum(), atol=1e-12)
    assert torch.isclose(w_n.grad, -g[neg].sum(), atol=1e-12)
    # eq. 7: the shadow gradient is dL/dw_t times W_p, 1, W_n in the three regions
    expected = torch.where(pos, 0.8 * g, torch.where(neg, 1.3 * g, g))
    assert torch.allclose(w.grad, expected, atol=1e-15)


def test_ttq_initial_scales_are_the_mean_magnitudes_of_each_sign(lenet5):
    w = lenet5.get_submodule(layers(lenet5)[1][0]).weight.detach()
    w_p, w_n = ttq_init(w, 0.05)
    delta = 0.05 * w.abs().max()
    assert torch.isclose(w_p, w[w > delta].mean()) and torch.isclose(w_n, -w[w < -delta].mean())


def test_ttq_fold_gives_minus_wn_zero_plus_wp_per_layer(lenet5):
    """The shadow is the weight over its max |w| (the paper's normalization), the layer
    computes that fixed max times {-W_n, 0, +W_p}, and fold leaves exactly those values."""
    model = zoo.pretrained("lenet5")
    quantize_weights(model, lambda name, m: TTQWeight(m.weight.detach(), 0.05))
    scales = {}
    for i, ((name, m), (_, orig)) in enumerate(zip(layers(model), layers(lenet5))):
        p = m.parametrizations.weight[0]
        w = orig.weight.detach()
        assert torch.equal(p.scale, w.abs().max())
        assert torch.allclose(m.parametrizations.weight.original, w / w.abs().max())
        with torch.no_grad():
            p.w_p.fill_(0.3 + 0.01 * i)
            p.w_n.fill_(0.4 + 0.01 * i)
        scales[name] = (p.scale * p.w_p).item(), (p.scale * p.w_n).item()
    fold(model)
    for (name, m), (_, orig) in zip(layers(model), layers(lenet5)):
        w_p, w_n = scales[name]
        assert sorted(m.weight.unique().tolist()) == pytest.approx([-w_n, 0.0, w_p])
        w = orig.weight.detach()
        delta = 0.05 * w.abs().max()
        assert torch.equal(m.weight == 0, w.abs() <= delta)


def test_ttq_trains_the_scales_keeps_ends_float_and_round_trips(mnist_train_small):
    base = untrained("lenet5")
    with train.quiet():
        out = TTQ(epochs=1).apply(base, mnist_train_small)
    first, *middle, last = [m for _, m in layers(out)]
    bfirst, *bmiddle, _ = [m for _, m in layers(base)]
    assert first.weight.unique().numel() > 100 and last.weight.unique().numel() > 100
    assert not torch.equal(first.weight, bfirst.weight)        # trained, in float
    for m, b in zip(middle, bmiddle):
        neg, zero, pos = m.weight.unique().tolist()
        assert zero == 0 and neg < 0 < pos
        top = b.weight.detach().abs().max()
        init_p, init_n = ttq_init(b.weight / top, 0.05)
        # the scales were learned: they moved away from their starting values
        assert (pos, -neg) != pytest.approx(((top * init_p).item(), (top * init_n).item()),
                                            rel=1e-4)
    back = codec.decode(codec.encode(out))
    x = sample_input(out)
    assert torch.equal(back(x), out(x))


def test_ttq_needs_three_layers_and_refuses_bad_values():
    assert TTQ().supports(untrained("lenet300"))
    with pytest.raises(ValueError, match="three"):
        TTQ(epochs=0).apply(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2)))
    for cls, field, value in [(TTQ, "t", 1.0), (TTQ, "t", -0.1), (TWN, "c", -1.0),
                              (TWN, "keep_ends", 1), (TWN, "epochs", 1.5)]:
        with pytest.raises(ValueError, match=field):
            cls(**{field: value})


def test_nominal_bits_and_data_needs():
    assert TWN().bits_per_weight() == pytest.approx(math.log2(3))
    assert TTQ().bits_per_weight() == pytest.approx(math.log2(3))
    assert TWN().tags().needs_data and not TWN(epochs=0).tags().needs_data


def test_twn_keep_ends_with_nothing_between_them_is_refused_not_returned_unchanged():
    """Every layer of a two-layer MLP is an end: keep_ends=True would ternarize none (as TTQ,
    whose ends always stay float, refuses such a network)."""
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    assert not TWN(keep_ends=True).supports(mlp) and not TTQ().supports(mlp)
    with pytest.raises(ValueError, match="set keep_ends=False"):
        TWN(epochs=0, keep_ends=True).apply(mlp)
    out = TWN(epochs=0).apply(mlp)
    for name in ("1", "3"):
        assert out.get_submodule(name).weight.unique().numel() <= 3
