"""Fixed point, fp16 / bf16 and bit allocation (workbench.quantize.scalar) against oracles:
the grid written out by hand, the mean of many stochastic roundings, torch's own casts, and
Lin et al.'s closed form on a toy network where it is integer."""
import math

import pytest
import torch

from workbench import codec, models, train
from workbench.quantize.scalar import (BitAllocation, FixedPoint, Float16, allocate_bits,
                                       best_frac, compute_in, fixed_point,
                                       fixed_point_activations, fixed_point_range, sqnr_bits,
                                       sqnr_noise)


def test_fixed_point_grid_and_nearest_rounding():
    # Q(4, 1): integers -8..7 times 0.5, i.e. -4.0 .. 3.5
    assert fixed_point_range(4, 1) == (-4.0, 3.5, 0.5)
    x = torch.tensor([0.2, 0.25, 0.26, 0.74, 0.75, -0.25, -0.3, 1.1, -1.3])
    expected = torch.tensor([0.0, 0.5, 0.5, 0.5, 1.0, 0.0, -0.5, 1.0, -1.5])  # halves go up
    assert torch.equal(fixed_point(x, 4, 1), expected)
    grid = torch.arange(-8, 8) * 0.5
    assert torch.equal(fixed_point(grid, 4, 1), grid)          # grid points are fixed points


def test_saturation_at_both_ends():
    x = torch.tensor([-100.0, -4.0, -4.2, 3.5, 3.74, 3.76, 100.0])
    assert torch.equal(fixed_point(x, 4, 1), torch.tensor([-4.0, -4.0, -4.0, 3.5, 3.5, 3.5, 3.5]))
    g = torch.Generator().manual_seed(0)
    sat = fixed_point(torch.full((1000,), 50.0), 8, 4, "stochastic", g)
    assert torch.all(sat == 127 / 16)


def test_values_land_on_the_grid_for_negative_and_large_fractions():
    x = torch.randn(1000) * 40
    for word, frac in [(8, -2), (16, 12), (12, 20)]:
        q = fixed_point(x, word, frac, "stochastic", torch.Generator().manual_seed(1))
        k = q * 2.0 ** frac
        assert torch.equal(k, k.round()) and k.min() >= -(2 ** (word - 1)) \
            and k.max() <= 2 ** (word - 1) - 1


def test_stochastic_rounding_is_unbiased_and_between_neighbours():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([0.1, 0.3, -0.7, 1.01, 2.49]).repeat(20000, 1)
    q = fixed_point(x, 8, 1, "stochastic", g)          # step 0.5
    low = torch.floor(x * 2) / 2
    assert torch.all((q == low) | (q == low + 0.5))
    mean = q.mean(0)
    # standard error of a Bernoulli(p) mean over 20000 draws times the step is < 0.002
    assert torch.allclose(mean, x[0], atol=0.01), mean
    # round-to-nearest is biased on the same values: 0.1 -> 0, 0.3 -> 0.5
    assert fixed_point(x[0], 8, 1)[0] == 0.0 and fixed_point(x[0], 8, 1)[1] == 0.5


def test_stochastic_rounding_is_reproducible_with_a_seed():
    x = torch.randn(100)
    a = fixed_point(x, 8, 4, "stochastic", torch.Generator().manual_seed(3))
    b = fixed_point(x, 8, 4, "stochastic", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="rounding"):
        fixed_point(x, 8, 4, "up")


def test_best_frac_beats_its_neighbours():
    w = torch.randn(5000) * 0.05
    f = best_frac(w, 4)
    err = lambda frac: (fixed_point(w, 4, frac) - w).pow(2).sum()   # noqa: E731
    assert err(f) <= err(f - 1) and err(f) <= err(f + 1)


def test_fixed_point_training_keeps_weights_on_grid_and_learns(tiny_mnist):
    base = models.build("lenet300")
    with train.quiet():
        out = FixedPoint(word=16, frac=12, rounding="stochastic", epochs=2, lr=0.1,
                         batch_size=32, init="scratch").apply(base, tiny_mnist)
    for p in out.parameters():
        assert torch.equal(p * 4096, (p * 4096).round())
    x, y = tiny_mnist.tensors()
    with fixed_point_activations(out, 16, 12) as m:
        acc = (m(x).argmax(1) == y).float().mean()
    assert acc > 0.6                                          # it learned (chance is 0.1)
    assert not torch.equal(out.net[1].weight, base.net[1].weight)


def test_round_to_nearest_loses_small_updates_stochastic_keeps_them(tiny_mnist):
    """Q(8, 4): steps of 1/16, far larger than lr * grad; nearest rounds every update away."""
    base = models.build("lenet300")
    kwargs = dict(word=8, frac=4, epochs=1, lr=0.01, batch_size=64, init="scratch")
    with train.quiet():
        start = FixedPoint(word=8, frac=4, rounding="nearest").apply(
            FixedPoint(**kwargs, rounding="nearest").apply(base, tiny_mnist.subset(1)))
        nearest = FixedPoint(**kwargs, rounding="nearest").apply(base, tiny_mnist)
        stochastic = FixedPoint(**kwargs, rounding="stochastic").apply(base, tiny_mnist)
    moved = lambda m: (m.net[1].weight != start.net[1].weight).float().mean()   # noqa: E731
    assert moved(nearest) == 0
    assert moved(stochastic) > 0.01


def test_post_training_fixed_point_equals_the_function():
    base = models.build("lenet5")
    out = FixedPoint(word=8, frac=6, rounding="nearest").apply(base)
    assert torch.equal(out.features[0].weight, fixed_point(base.features[0].weight, 8, 6))
    assert torch.equal(out.classifier[1].bias, fixed_point(base.classifier[1].bias, 8, 6))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_values_equal_torchs_casts(dtype):
    base = models.build("lenet5")
    out = Float16(dtype=dtype).apply(base)
    t = getattr(torch, dtype)
    for (name, a), (_, b) in zip(base.state_dict().items(), out.state_dict().items()):
        assert torch.equal(b, a.to(t).float()), name
        assert b.dtype == torch.float32
    # 2 bytes per value in the file, about half of fp32
    assert len(codec.encode(out)) < 0.52 * len(codec.encode(base))
    x = torch.randn(4, 1, 28, 28)
    ref = out(x)
    native = compute_in(out, dtype)(x)
    assert native.dtype == torch.float32 and torch.allclose(native, ref, rtol=0.05, atol=0.05)


def test_sqnr_closed_form_on_a_toy_case():
    kappa = 20 * math.log10(2)          # exactly 2 bits of noise power per bit: 4x per bit
    sizes = [1, 4, 16, 64]
    budget = (7 * 1 + 6 * 4 + 5 * 16 + 4 * 64) / sum(sizes)
    beta = sqnr_bits(sizes, budget, kappa)
    assert beta == pytest.approx([7, 6, 5, 4])
    for i in range(4):
        for j in range(4):      # b_i - b_j = 10 log10(n_j / n_i) / kappa
            assert beta[i] - beta[j] == pytest.approx(10 * math.log10(sizes[j] / sizes[i]) / kappa)
    bits = allocate_bits(sizes, lambda i, b: sqnr_noise(b, kappa), budget, 0, 16)
    assert bits == [7, 6, 5, 4]


def test_allocation_meets_the_budget_and_equals_brute_force():
    import itertools
    sizes = [300, 50, 7]
    noise = lambda i, b: [3.0, 1.0, 5.0][i] * 4.0 ** -b    # noqa: E731
    for budget in (2.0, 2.7, 3.3, 5.0):
        bits = allocate_bits(sizes, noise, budget, 2, 8)
        assert sum(n * b for n, b in zip(sizes, bits)) <= budget * sum(sizes) + 1e-9
        best = min((sum(noise(i, b) for i, b in enumerate(c)), c) for c in
                   itertools.product(range(2, 9), repeat=3)
                   if sum(n * b for n, b in zip(sizes, c)) <= budget * sum(sizes))
        assert sum(noise(i, b) for i, b in enumerate(bits)) == pytest.approx(best[0])
    with pytest.raises(ValueError, match="below the minimum"):
        allocate_bits(sizes, noise, 1.5, 2, 8)


def test_bit_allocation_applies_its_bits(tiny_mnist):
    base = models.build("lenet300")
    method = BitAllocation(budget=3.0, rule="sensitivity", calibration=64)
    bits = method.allocate(base, tiny_mnist)
    sizes = {n: m.weight.numel() for n, m in base.named_modules() if n in bits}
    assert sum(sizes[n] * b for n, b in bits.items()) <= 3.0 * sum(sizes.values())
    out = method.apply(base, tiny_mnist)
    for name, b in bits.items():
        assert len(torch.unique(out.get_submodule(name).weight)) <= 2 ** b
    uniform = BitAllocation(budget=3.0, rule="uniform").allocate(base)
    assert set(uniform.values()) == {3}


def test_tags_say_bits_and_when_data_is_needed():
    assert FixedPoint(word=8).tags().bits_per_weight == 8
    assert not FixedPoint(epochs=0).tags().needs_data and FixedPoint(epochs=1).tags().needs_data
    assert FixedPoint(word=8).apply(models.build("lenet5")) is not None     # no data needed
    for dtype in ("float16", "bfloat16"):    # rounding changes outputs: never lossless
        tags = Float16(dtype=dtype).tags()
        assert not tags.lossless and not tags.needs_data and tags.bits_per_weight == 16
    assert BitAllocation(budget=3.5, rule="uniform").tags().bits_per_weight == 3
    assert BitAllocation(budget=3.5).tags().bits_per_weight == 3.5
    assert BitAllocation(rule="sensitivity").tags().needs_data
    assert not BitAllocation(rule="sqnr").tags().needs_data


def test_scratch_init_is_seeded_without_touching_the_global_rng(tiny_mnist):
    """The fresh initialization comes from the method's seed on a forked RNG: the same
    network from any two inputs, and the caller's random stream goes on undisturbed."""
    first, second = models.build("lenet300"), models.build("lenet300")
    method = FixedPoint(word=16, frac=12, epochs=1, init="scratch")
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    with train.quiet():
        a = method.apply(first, tiny_mnist.subset(64, seed=0))
    assert torch.equal(torch.random.get_rng_state(), state)
    with train.quiet():
        b = method.apply(second, tiny_mnist.subset(64, seed=0))
    assert torch.equal(a.net[1].weight, b.net[1].weight)


@pytest.mark.parametrize("bad, field", [
    (dict(word=1), "word"), (dict(rounding="up"), "rounding"), (dict(act_frac=2.5), "act_frac"),
    (dict(init="zeros"), "init"), (dict(epochs=-1), "epochs")])
def test_fixed_point_refuses_bad_values_by_name(bad, field):
    with pytest.raises(ValueError, match=field):
        FixedPoint(**bad)


def test_bit_allocation_rules_between_fields():
    with pytest.raises(ValueError, match="max_bits"):
        BitAllocation(min_bits=6, max_bits=4, budget=5.0)
    with pytest.raises(ValueError, match="budget"):
        BitAllocation(budget=5.0, max_bits=4)
    with pytest.raises(ValueError, match="dtype"):
        Float16(dtype="float8")


@pytest.fixture(scope="module")
def tiny_mnist():
    from workbench import data
    return data.mnist("train").subset(512, seed=0)
