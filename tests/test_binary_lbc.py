"""Local binary convolution: the fixed sparse anchors, the least-squares 1x1 fit, the
parameter counts by hand, and the file."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec, data, train, zoo
from workbench.binary.lbc import (
    LocalBinary,
    LocalBinaryConv,
    anchor_filters,
    fit_mix,
    parameter_counts,
)


@pytest.fixture(scope="module")
def mnist_small():
    return data.mnist("train").subset(256, seed=0)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_anchors_are_ternary_with_exactly_the_requested_sparsity(sparsity):
    a = anchor_filters(32, 16, (3, 3), sparsity, seed=3)
    assert a.shape == (32, 16, 3, 3)
    assert set(a.unique().tolist()) <= {-1.0, 0.0, 1.0}
    n = a.numel()
    assert int((a == 0).sum()) == n - round((1 - sparsity) * n)
    plus, minus = int((a == 1).sum()), int((a == -1).sum())
    assert abs(plus - minus) < 0.1 * (plus + minus)        # +-1 with even odds
    assert torch.equal(a, anchor_filters(32, 16, (3, 3), sparsity, seed=3))
    assert not torch.equal(a, anchor_filters(32, 16, (3, 3), sparsity, seed=4))


def test_least_squares_mix_recovers_an_exact_combination():
    g = torch.Generator().manual_seed(0)
    features = torch.rand(4, 6, 5, 5, generator=g)
    v = torch.randn(3, 6, generator=g)
    target = torch.einsum("om,nmhw->nohw", v, features)
    assert torch.allclose(fit_mix(features, target)[:, :, 0, 0], v, atol=1e-4)


def test_anchors_stay_fixed_in_training_and_only_the_1x1_learns(mnist_small):
    base = zoo.pretrained("lenet5")
    with train.quiet():
        before = LocalBinary(epochs=0).apply(base, mnist_small)
        after = LocalBinary(epochs=1, batch_size=64).apply(base, mnist_small)
    (lbc,) = [m for m in after.modules() if isinstance(m, LocalBinaryConv)]
    (lbc0,) = [m for m in before.modules() if isinstance(m, LocalBinaryConv)]
    assert "anchors" in dict(lbc.named_buffers())
    assert all(p is not lbc.anchors for p in after.parameters())
    assert not lbc.anchors.requires_grad
    assert torch.equal(lbc.anchors, lbc0.anchors)
    assert torch.equal(lbc.anchors, anchor_filters(*lbc.anchors.shape[:2],
                                                   tuple(lbc.anchors.shape[2:]), 0.5, 0))
    assert not torch.equal(lbc.mix.weight, lbc0.mix.weight)        # the 1x1 weights learned
    # the first convolution and the linear layers stay the float ones before training
    assert torch.equal(before.features[0].weight, base.features[0].weight)
    assert torch.equal(before.classifier[1].weight, base.classifier[1].weight)


def test_learnable_and_fixed_counts_match_a_hand_count():
    base = untrained("lenet5")
    conv = base.features[2]                         # the one kxk conv after the first
    c_in, c_out, (k, _) = conv.in_channels, conv.out_channels, conv.kernel_size
    for width in (1.0, 2.0):
        out = LocalBinary(epochs=0, init="random", width=width).apply(base)
        m = round(width * c_in)
        total = sum(p.numel() for p in base.parameters())
        learnable = total - c_in * c_out * k * k - c_out + m * c_out + c_out
        assert parameter_counts(out) == (learnable, m * c_in * k * k)
    # ResNet-20: each 3x3 conv c_in -> c_out becomes c_in anchors and a c_in x c_out 1x1,
    # k^2 = 9 times fewer learnable weights in the replaced layers (the paper's lower end)
    resnet = untrained("resnet20")
    out = LocalBinary(epochs=0, init="random").apply(resnet)
    names = LocalBinary().target_layers(resnet)
    replaced = sum(resnet.get_submodule(n).weight.numel() for n in names)
    mixes = sum(m.mix.weight.numel() for m in out.modules() if isinstance(m, LocalBinaryConv))
    assert len(names) == 18 and replaced == 9 * mixes


def test_least_squares_start_is_closer_to_the_original_layer(mnist_small):
    base = zoo.pretrained("lenet5")
    x = next(iter(mnist_small.loader(256)))[0]
    with torch.no_grad():
        h = base.features[1](base.features[0](x))
        target = base.features[2](h)
        errors = {}
        for init in ("lstsq", "random"):
            out = LocalBinary(epochs=0, init=init).apply(base, mnist_small)
            errors[init] = ((out.features[2](h) - target).norm() / target.norm()).item()
            if init == "lstsq":      # the fit on the batch is a minimum: a nudge makes it worse
                layer = out.features[2]
                layer.mix.weight.mul_(1.05)
                errors["nudged"] = ((layer(h) - target).norm() / target.norm()).item()
    # better than no output at all, than a random start, and than its own neighbour
    assert errors["lstsq"] < min(1.0, errors["random"], errors["nudged"])


def test_codec_round_trip_keeps_the_anchors(mnist_small):
    with train.quiet():
        out = LocalBinary(epochs=1, batch_size=64, sparsity=0.8).apply(untrained("lenet5"),
                                                                        mnist_small)
    x = sample_input(out)
    blob = codec.encode(out)
    again = codec.decode(blob)
    assert torch.equal(again.features[2].anchors, out.features[2].anchors)
    with torch.no_grad():
        assert torch.equal(again(x), out(x))


def test_bad_values_and_support():
    for field, value in (("sparsity", 1.0), ("width", 0.0), ("init", "zeros")):
        with pytest.raises(ValueError, match=field):
            LocalBinary(**{field: value})
    assert not LocalBinary().supports(untrained("lenet300"))
    assert LocalBinary().supports(untrained("vgg_small"))
    assert LocalBinary(epochs=0).tags().needs_data                   # the least-squares start
    assert not LocalBinary(epochs=0, init="random").tags().needs_data


def test_ops_of_lenet5_count_the_anchors_as_additions_against_a_hand_count():
    from workbench import measure
    base = zoo.pretrained("lenet5")
    out = LocalBinary(epochs=0, init="random").apply(base)
    rows = {r["layer"]: r for r in measure.layer_table(out, base.input_shape)}
    conv = base.features[2]                          # 20 -> 50, 5x5, on 12x12: 8x8 outputs
    c_out, c_in, kh, kw = conv.weight.shape
    pixels = 8 * 8
    taps = c_in * c_in * kh * kw                     # width 1: c_in anchors of c_in x 5 x 5
    nonzero = round(0.5 * taps)                      # sparsity 0.5, exactly
    row = rows["features.2"]
    assert row["add_ops"] == nonzero * pixels and row["binary_ops"] == 0
    assert row["float_macs"] == c_out * c_in * pixels            # the 1x1 mix
    assert row["macs"] == (taps + c_out * c_in) * pixels
    # measure's identity: the additions skip the anchors' zeros
    assert row["float_macs"] + row["add_ops"] == row["effective_macs"]
