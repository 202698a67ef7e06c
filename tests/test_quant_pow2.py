"""Power-of-two quantization and INQ (workbench.quantize.pow2): exact powers of two in the
window, the two rounding rules against a brute-force nearest level, shifts against a matmul,
and INQ's frozen, growing share."""
import math

import pytest
import torch

from workbench import codec, models, train
from workbench.method import clone_model
from workbench.quantize.pow2 import (INQ, Log, PartlyFrozen, exponent_window, inq_levels,
                                     inq_partition, inq_quantize, is_pow2_or_zero, log_quantize,
                                     operation_counts, shift_matmul)


def brute_force(w, levels, distance):
    """Nearest of the candidate ``levels`` (signed), by ``distance``."""
    cand = torch.tensor(levels, dtype=torch.float64)
    d = distance(w[:, None].double(), cand[None])
    return cand[d.argmin(1)].float()


def test_values_are_powers_of_two_in_the_window():
    w = torch.randn(10000) * 0.1
    for bits in (3, 4, 5):
        q = log_quantize(w, bits, fsr=-1)
        low, high = exponent_window(-1, bits)
        assert high - low + 1 == 2 ** (bits - 1) - 1           # one code left for zero
        nz = q[q != 0]
        e = torch.log2(nz.abs())
        assert torch.equal(e, e.round()) and e.min() >= low and e.max() <= high
        assert torch.equal(torch.sign(nz), torch.sign(w[q != 0]))
        assert bool(is_pow2_or_zero(q).all())


def test_log_domain_rounds_log2_and_linear_domain_rounds_the_value():
    w = torch.rand(4000) * 0.9 + 0.01
    w = torch.cat([w, -w])
    low, high = exponent_window(0, 5)                        # exponents -15 .. -1
    levels = [0.0] + [s * 2.0 ** e for e in range(low, high + 1) for s in (1, -1)]
    # linear: nearest level by |w - q| (INQ); log: nearest by |log2|w| - log2|q||
    linear = brute_force(w, levels, lambda a, b: (a - b).abs())
    assert torch.equal(log_quantize(w, 5, fsr=0, domain="linear"), linear)

    def log_distance(a, b):
        d = (torch.log2(a.abs()) - torch.log2(b.abs().clamp_min(1e-300))).abs()
        return torch.where(torch.sign(a) == torch.sign(b), d, torch.inf)
    assert torch.equal(log_quantize(w, 5, fsr=0, domain="log"), brute_force(w, levels, log_distance))
    # the thresholds differ: 1.45 * 2^-3 goes up in the log domain (> sqrt 2), not in linear
    x = torch.tensor([1.45 / 8])
    assert log_quantize(x, 5, 0, "log") == 0.25 and log_quantize(x, 5, 0, "linear") == 0.125


def test_window_clips_and_zeros():
    x = torch.tensor([8.0, 0.3, 2.0 ** -20, 0.0, -3.0])
    q = log_quantize(x, 3, fsr=1)                            # exponents -2 .. 0
    assert torch.equal(q, torch.tensor([1.0, 0.25, 0.0, 0.0, -1.0]))


def test_default_fsr_keeps_the_largest_weight():
    w = torch.randn(300, 100)
    q = log_quantize(w, 5)
    top = w.abs().argmax()
    assert q.flatten()[top].abs() == 2.0 ** round(math.log2(w.abs().max()))


def test_shifts_compute_the_layer_exactly():
    g = torch.Generator().manual_seed(0)
    w = log_quantize(torch.randn(7, 12, generator=g), 5)
    x = torch.randint(-128, 128, (5, 12), generator=g)
    assert torch.equal(shift_matmul(x, w), x.double() @ w.double().T)
    with pytest.raises(ValueError):
        shift_matmul(x, torch.full((2, 12), 0.3))


def test_operation_counts_replace_multiplications_by_shifts():
    out = Log(bits=4).apply(models.build("lenet300"))
    rows = operation_counts(out, (1, 28, 28))
    assert [r["multiplications"] for r in rows] == [0, 0, 0]
    for r, (name, m) in zip(rows, [("net.1", out.net[1]), ("net.3", out.net[3]),
                                   ("net.5", out.net[5])]):
        assert r["shifts"] == int(m.weight.count_nonzero())
        assert r["shifts"] + r["skipped_zero"] == m.weight.numel()


def test_inq_levels_and_rule_follow_the_paper():
    w = torch.tensor([0.9, -0.5, 0.3, 0.01, -0.2])
    n1, n2 = inq_levels(w, 5)                     # s = 0.9: floor(log2(1.2)) = 0
    assert (n1, n2) == (0, -7)
    q = inq_quantize(w, 5)
    # INQ eq. 4: beta if (alpha + beta)/2 <= |w| < 3 beta / 2
    assert torch.equal(q, torch.tensor([1.0, -0.5, 0.25, 0.0078125, -0.25]))
    assert inq_quantize(torch.tensor([0.9, 2.0 ** -9]), 5)[1] == 0   # below 2^(n2-1): zero


def test_inq_partition_takes_the_largest_free_magnitudes():
    w = torch.tensor([0.1, -0.9, 0.5, -0.05, 0.7, 0.3, -0.2, 0.05])
    frozen = torch.zeros(8, dtype=torch.bool)
    half = inq_partition(w, frozen, 0.5)
    assert half.tolist() == [False, True, True, False, True, True, False, False]
    frozen[0] = True                  # an already frozen small weight stays frozen
    more = inq_partition(w, frozen, 0.75)
    assert int(more.sum()) == 6 and more[0] and more[1] and more[4] and more[2] and more[5]


def test_inq_freezes_its_share_and_grows_it_as_scheduled(tiny_mnist):
    base = models.build("lenet300")
    method = INQ(bits=5, epochs=1, lr=0.05)
    model = clone_model(base)
    previous = {}
    with train.quiet():   # the rounds run lazily: the whole loop is quiet
        for share, m in method.rounds(model, tiny_mnist):
            for name, layer in [("net.1", m.net[1]), ("net.5", m.net[5])]:
                p = layer.parametrizations.weight[0]
                assert isinstance(p, PartlyFrozen)
                frozen = p.frozen
                assert int(frozen.sum()) == round(share * frozen.numel())
                w = layer.weight.detach()
                # the quantized share is exactly its frozen values, powers of two, after
                # retraining
                assert torch.equal(w[frozen], p.values[frozen])
                assert bool(is_pow2_or_zero(w[frozen]).all())
                if name in previous:
                    old_mask, old_values = previous[name]
                    assert torch.all(frozen[old_mask])                 # still frozen
                    assert torch.equal(w[old_mask], old_values)         # unchanged by retraining
                previous[name] = (frozen.clone(), w[frozen].clone())
            if share < 1:   # the free weights did train
                free = ~m.net[1].parametrizations.weight[0].frozen
                assert not torch.equal(m.net[1].weight[free], base.net[1].weight[free])


def test_inq_result_is_all_powers_of_two_in_its_levels(tiny_mnist):
    base = models.build("lenet5")
    with train.quiet():
        out = INQ(bits=5, epochs=1, shares=(0.5, 1.0)).apply(base, tiny_mnist)
    for name, m in [("features.0", out.features[0]), ("classifier.4", out.classifier[4])]:
        w = m.weight
        assert bool(is_pow2_or_zero(w).all())
        n1, n2 = inq_levels(base.get_submodule(name).weight, 5)
        e = torch.log2(w[w != 0].abs())
        assert e.min() >= n2 and e.max() <= n1
    blob = codec.encode(out)
    assert torch.equal(codec.decode(blob)(torch.ones(2, 1, 28, 28)), out(torch.ones(2, 1, 28, 28)))


@pytest.mark.parametrize("shares", ["x", (0.5, "a"), (0.5, None), (0.5, [1.0]), {"a": 1.0},
                                    (), (0.5, 1.5), (0.75, 0.5, 1.0), (0.5, 0.75), (0.0, 1.0),
                                    (float("nan"), 1.0)])
def test_inq_refuses_bad_shares_by_name(shares):
    """Nested values are checked by the field's domain: a ValueError naming the field, never
    a TypeError from comparing a string with a number."""
    with pytest.raises(ValueError, match="shares"):
        INQ(shares=shares)


def test_inq_shares_and_tags():
    assert INQ(shares=[0.5, 1]).shares == (0.5, 1)          # a list is taken, stored as tuple
    assert INQ(bits=4).tags().bits_per_weight == 4 and INQ().tags().needs_data
    assert not INQ(epochs=0).tags().needs_data and not INQ(shares=(1.0,)).tags().needs_data
    assert Log(bits=3).tags().bits_per_weight == 3 and not Log().tags().needs_data
    for bad, field in ((dict(bits=1), "bits"), (dict(fsr=2.5), "fsr"), (dict(domain="x"),
                                                                         "domain")):
        with pytest.raises(ValueError, match=field):
            Log(**bad)


def test_inq_without_retraining_needs_no_data():
    base = models.build("lenet300")
    out = INQ(bits=5, epochs=0).apply(base)
    assert all(bool(is_pow2_or_zero(m.weight).all()) for m in (out.net[1], out.net[3]))


@pytest.fixture(scope="module")
def tiny_mnist():
    from workbench import data
    return data.mnist("train").subset(512, seed=0)
