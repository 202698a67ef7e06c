"""ABC-Net bases and network sketching against least squares, on toy tensors and real layers of
the zoo's trained networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import sample_input, untrained

from workbench import codec, train, zoo
from workbench.binary import core
from workbench.binary.bases import (
    ABCNet,
    Sketch,
    abc_approximation,
    abc_bases,
    abc_shifts,
    relative_error,
    sketch_filters,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture(scope="module")
def zoo_layers():
    """Weights of real trained layers: LeNet-300-100's hidden layer, a LeNet-5 and a ResNet-20
    convolution (float64 copies)."""
    lenet300, lenet5 = zoo.pretrained("lenet300"), zoo.pretrained("lenet5")
    resnet = zoo.pretrained("resnet20")
    return {"lenet300.net.3": lenet300.net[3].weight.detach().double(),
            "lenet5.features.2": lenet5.features[2].weight.detach().double(),
            "resnet20.stages.1.0.conv2": resnet.get_submodule("stages.1.0.conv2").weight.detach()
            .double()}


def numpy_lstsq(bases, w):
    b = bases.reshape(-1, bases.shape[-1]).numpy()
    return torch.from_numpy(np.linalg.lstsq(b, w.reshape(-1).numpy(), rcond=None)[0])


# ------------------------------------------------------------------ ABC-Net

def test_abc_shifts_and_bases_are_the_papers():
    assert torch.equal(abc_shifts(1), torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(abc_shifts(3), torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    w = randn(7, 9, seed=1)
    bases = abc_bases(w, 4)
    for i, u in enumerate([-1, -1 / 3, 1 / 3, 1]):
        expected = torch.where(w - w.mean() + u * w.std() >= 0, 1.0, -1.0).double()
        assert torch.equal(bases[..., i], expected)


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_abc_scales_are_the_least_squares_optimum(m, zoo_layers):
    for w in [randn(40, 30, seed=m), *zoo_layers.values()]:
        approx, scales, bases = abc_approximation(w, m)
        assert torch.allclose(scales, numpy_lstsq(bases, w), rtol=1e-8, atol=1e-12)
        # optimality: the residual is orthogonal to every basis
        residual = (w - approx).reshape(-1)
        gram = bases.reshape(-1, m).T @ residual
        assert gram.abs().max() <= 1e-8 * w.abs().sum()
        assert torch.allclose(approx, (bases * scales).sum(-1))


def test_abc_one_base_is_the_least_squares_single_scale(zoo_layers):
    for w in zoo_layers.values():
        approx, scales, bases = abc_approximation(w, 1)
        b = bases[..., 0]
        assert torch.equal(b, core.sign(w - w.mean()))
        assert torch.isclose(scales[0], (w * b).mean())      # <W, B> / n
        # on a centred tensor it is BWN's mean|W| sign(W) of the whole layer (core.binarize)
        centred = w - w.mean()
        assert torch.allclose(abc_approximation(centred, 1)[0],
                              core.binarize(centred, per_channel=False))


def test_abc_error_falls_with_m_on_zoo_layers(zoo_layers):
    for name, w in zoo_layers.items():
        errors = [relative_error(w, abc_approximation(w, m)[0]) for m in range(1, 6)]
        assert all(b < a for a, b in zip(errors, errors[1:])), (name, errors)


def test_abc_layer_has_at_most_m_plus_one_values_and_codebook_bytes():
    base = zoo.pretrained("lenet300")
    for m in (1, 2, 3, 5):
        out = ABCNet(M=m, quantize_ends=True).apply(base)
        for layer in (out.net[1], out.net[3], out.net[5]):
            assert layer.weight.unique().numel() <= min(2 ** m, m + 1)
            assert not hasattr(layer, "parametrizations")
        # a codebook of m + 1 values: about log2(m + 1) bits per weight (radix-packed)
        n = sum(layer.weight.numel() for layer in (out.net[1], out.net[3], out.net[5]))
        floats = sum(layer.bias.numel() for layer in (out.net[1], out.net[3], out.net[5]))
        size = len(codec.encode(out))
        assert size <= n * np.log2(m + 1) / 8 * 1.02 + 4 * floats + 4096, (m, size)


def test_abc_keeps_the_ends_float_by_default():
    base = zoo.pretrained("lenet300")
    out = ABCNet(M=2).apply(base)
    assert torch.equal(out.net[1].weight, base.net[1].weight)
    assert torch.equal(out.net[5].weight, base.net[5].weight)
    assert out.net[3].weight.unique().numel() <= 3


def test_abc_fine_tuning_passes_gradients_through_the_bases(mnist_train_small):
    """The parametrized layer's shadow weight gets the STE gradient: sum_i a_i dL/dWq."""
    from workbench.binary.bases import ABCWeight
    w = randn(6, 5, seed=3).requires_grad_()
    q = ABCWeight(3)(w)
    upstream = randn(6, 5, seed=4)
    (q * upstream).sum().backward()
    scales = abc_approximation(w.detach(), 3)[1]
    assert torch.allclose(q.detach(), abc_approximation(w.detach(), 3)[0])
    assert torch.allclose(w.grad, upstream * scales.sum())
    # and fine-tuning changes the folded layer (it trains the shadow weights)
    base = untrained("lenet300")
    with train.quiet():
        tuned = ABCNet(M=2, epochs=1, quantize_ends=True).apply(base, mnist_train_small)
    post = ABCNet(M=2, quantize_ends=True).apply(base)
    assert not torch.equal(tuned.net[3].weight, post.net[3].weight)
    assert tuned.net[3].weight.unique().numel() <= 3


# ------------------------------------------------------------------ sketching

@pytest.mark.parametrize("refined", [False, True])
def test_sketch_error_falls_strictly_with_each_tensor(refined, zoo_layers):
    for name, w in zoo_layers.items():
        flat = w.reshape(w.shape[0], -1)
        previous = None
        for j in range(1, 7):
            approx = sketch_filters(w, j, refined)[0].reshape(flat.shape)
            per_filter = (flat - approx).norm(dim=1)
            if previous is not None:
                assert (per_filter < previous).all(), (name, j)
            previous = per_filter


def test_refined_is_no_worse_than_direct(zoo_layers):
    for name, w in zoo_layers.items():
        for j in range(1, 7):
            direct = relative_error(w, sketch_filters(w, j, False)[0])
            refined = relative_error(w, sketch_filters(w, j, True)[0])
            assert refined <= direct + 1e-12, (name, j, direct, refined)
            if j == 1:
                assert refined == pytest.approx(direct, abs=1e-12)


def test_sketch_scales_are_least_squares(zoo_layers):
    w = zoo_layers["lenet5.features.2"]
    approx, scales, bases = sketch_filters(w, 4, refined=True)
    for i in range(0, w.shape[0], 7):   # refined: all scales of a filter solve the lstsq
        assert torch.allclose(scales[i], numpy_lstsq(bases[i], w[i]), rtol=1e-8, atol=1e-12)
    _, direct_scales, direct_bases = sketch_filters(w, 4, refined=False)
    flat = w.reshape(w.shape[0], -1)
    residual = flat.clone()
    for j in range(4):    # direct: each scale is the lstsq scale of its sign of the residual
        b = direct_bases[..., j]
        assert torch.equal(b, core.sign(residual))
        assert torch.allclose(direct_scales[:, j], (residual * b).mean(1))
        residual = residual - direct_scales[:, j:j + 1] * b


def test_sketch_method_per_filter_values_and_ends():
    base = untrained("lenet5")
    out = Sketch(tensors=2, mode="direct").apply(base)
    conv2 = out.features[2].weight.reshape(50, -1)
    for row in conv2:
        assert row.unique().numel() <= 4          # 2 tensors: a1 +- a2 with signs
    assert torch.equal(out.features[0].weight, base.features[0].weight)   # first: float
    assert torch.equal(out.classifier[4].weight, base.classifier[4].weight)  # last: float
    x = sample_input(base)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


@pytest.mark.parametrize("cls, field, value", [(ABCNet, "M", 0), (ABCNet, "M", 6),
                                               (Sketch, "tensors", 0), (Sketch, "mode", "x"),
                                               (ABCNet, "quantize_ends", 2)])
def test_bad_values_are_refused_by_name(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_tags():
    assert ABCNet(M=4).tags().bits_per_weight == 4
    assert not ABCNet().tags().needs_data and ABCNet(epochs=1).tags().needs_data
    assert Sketch(tensors=3).bits_per_weight() == 3 and not Sketch().tags().needs_data


@pytest.mark.parametrize("cls", [ABCNet, Sketch])
def test_float_ends_with_nothing_between_them_is_refused_not_returned_unchanged(cls):
    """Every layer of a two-layer MLP is an end: the default (ends float) would change none."""
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    assert not cls().supports(mlp)
    with pytest.raises(ValueError, match="set quantize_ends=True"):
        cls().apply(mlp)
    out = cls(quantize_ends=True).apply(mlp)
    for name in ("1", "3"):
        assert not torch.equal(out.get_submodule(name).weight, mlp.get_submodule(name).weight)
