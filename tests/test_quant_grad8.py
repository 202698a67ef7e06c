"""Dettmers's dynamic tree 8-bit format and 8-bit gradients in training."""
from __future__ import annotations

import pytest
import torch
from conftest import untrained

from workbench import codec, models, train
from workbench.quantize.grad8 import (GradientCodec, Grad8, decode_byte, dequantize_dynamic_tree,
                                      dynamic_tree_codebook, encoded_bytes, gradient_traffic,
                                      quantize_dynamic_tree)


def bitsandbytes_dynamic_map():
    """The oracle: bitsandbytes.functional.create_dynamic_map(signed=True) rebuilt from its
    algorithm (per exponent i, 2^i + 1 boundaries on [0.1, 1], their midpoints times
    10^(i - 6), both signs; then 0 and 1.0)."""
    data = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float64)
        means = (bounds[:-1] + bounds[1:]) / 2 * 10.0 ** (i - 6)
        data += means.tolist() + (-means).tolist()
    return torch.tensor(sorted(data + [0.0, 1.0]), dtype=torch.float64)


def test_codebook_has_256_distinct_values_equal_to_bitsandbytes():
    book = dynamic_tree_codebook()
    assert book.shape == (256,) and book.unique().numel() == 256
    assert torch.allclose(book.sort().values, bitsandbytes_dynamic_map(), rtol=1e-12, atol=0)


def test_codebook_is_monotone_in_the_code():
    """More leading zeros = a smaller decimal exponent: for each sign the magnitude grows with
    the 7-bit code; 0x00 is 0 and 0x80 is +1."""
    book = dynamic_tree_codebook()
    assert book[0] == 0 and book[128] == 1
    assert (book[1:128].diff() > 0).all() and (book[129:].diff() < 0).all()
    assert torch.equal(book[129:], -book[1:128])


def test_bit_fields_read_as_the_paper_describes():
    # 0 | 1 | 000000: no exponent zeros, indicator, fraction 0 -> first leaf of [0.1, 1] / 64
    assert decode_byte(0b0100_0000) == pytest.approx(0.1 + 0.9 * 0.5 / 64)
    # 1 | 001 | 1111: sign, two zeros (10^-2), indicator, 4 fraction bits all ones
    assert decode_byte(0b1001_1111) == pytest.approx(-0.01 * (0.1 + 0.9 * 15.5 / 16))
    # 0 | 000000 | 1: six zeros, indicator, no fraction bits: the middle of [0.1, 1] x 1e-6
    assert decode_byte(0b0000_0001) == pytest.approx(0.55e-6)


@pytest.mark.parametrize("exponent", range(7))
def test_error_is_within_half_a_leaf_in_each_decade(exponent):
    g = torch.Generator().manual_seed(exponent)
    y = (0.1 + 0.9 * torch.rand(2000, generator=g, dtype=torch.float64)) * 10.0 ** -exponent
    y = torch.cat([y, -y, torch.ones(1, dtype=torch.float64)])      # max = 1: scale 1
    codes, scale = quantize_dynamic_tree(y)
    assert scale == 1 and codes.dtype == torch.uint8
    error = (dequantize_dynamic_tree(codes, scale).double() - y).abs()
    half_leaf = 0.45 * 10.0 ** -exponent / 2 ** (6 - exponent)
    assert (error <= half_leaf * (1 + 1e-5)).all()
    assert (error / y.abs() <= 4.5 / 2 ** (6 - exponent) + 1e-5).all()   # relative bound
    # nearest code: no other code is closer
    book = dynamic_tree_codebook()
    best = (y[:, None] - book[None, :]).abs().min(1).values
    assert torch.allclose(error, best, atol=1e-7)


def test_round_trip_of_codes_and_bytes():
    codes = torch.arange(256, dtype=torch.int64).to(torch.uint8)
    values = dequantize_dynamic_tree(codes, torch.tensor(3.5))
    again, scale = quantize_dynamic_tree(values)
    assert scale == 3.5 and torch.equal(again, codes)
    assert encoded_bytes(again, scale) == 256 + 4


def test_gradients_are_replaced_by_their_8bit_approximation_and_counted():
    torch.manual_seed(0)
    model = untrained("lenet300")
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    loss = torch.nn.functional.cross_entropy(model(x), y)
    exact = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    with GradientCodec(model) as counter:
        loss.backward()
    for p, g in zip(model.parameters(), exact):
        assert torch.equal(p.grad, dequantize_dynamic_tree(*quantize_dynamic_tree(g)))
    numel = sum(p.numel() for p in model.parameters())
    traffic = counter.traffic()
    assert traffic["bytes_sent"] == numel + 4 * 6 and traffic["bytes_fp32"] == 4 * numel
    assert all(p._backward_hooks is None or not p._backward_hooks for p in model.parameters())


def test_grad8_trains_like_fp32_on_a_small_set(mnist_train_small, mnist_test_small):
    from workbench.train import evaluate
    scores, traffic = {}, {}
    for fmt in ("fp32", "dynamic_tree"):
        with train.quiet():
            out = Grad8(gradients=fmt, epochs=2, lr=0.05).apply(untrained("lenet300"),
                                                                mnist_train_small)
        scores[fmt], traffic[fmt] = evaluate(out, mnist_test_small), gradient_traffic(out)
    assert scores["dynamic_tree"] >= scores["fp32"] - 0.03
    assert traffic["fp32"]["ratio"] == 1
    assert traffic["dynamic_tree"]["ratio"] == pytest.approx(4, rel=1e-3)
    steps = 2 * 4                                      # 512 images, batch 128, 2 epochs
    assert traffic["dynamic_tree"]["gradient_tensors"] == steps * 6


def test_bad_format_is_refused():
    with pytest.raises(ValueError, match="gradients"):
        Grad8(gradients="fp8")
    with pytest.raises(ValueError, match="epochs"):
        Grad8(epochs=-1)


def test_traffic_is_attached_and_travels_with_copies_and_the_file(mnist_train_small):
    import copy
    base = untrained("lenet300")
    assert gradient_traffic(base) is None
    with train.quiet():
        out = Grad8(epochs=1).apply(base, mnist_train_small.subset(128, seed=0))
    traffic = gradient_traffic(out)
    assert traffic["format"] == "dynamic_tree" and traffic["gradient_tensors"] == 6
    assert models.attached(out, "gradient_traffic") == traffic
    assert not hasattr(base, "gradient_traffic")                    # the input untouched
    assert gradient_traffic(copy.deepcopy(out)) == traffic
    assert gradient_traffic(codec.decode(codec.encode(out))) == traffic
    assert Grad8().tags().bits_per_weight == 32 and not Grad8(epochs=0).tags().needs_data
