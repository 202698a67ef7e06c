"""The bit-packed XNOR-popcount kernel and OpenVINO's BinaryConvolution, bit-exact against the
float computation of the same +-1 layer, on real layers of zoo models and on odd sizes."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import data, zoo
from workbench.binary import kernels, runtime
from workbench.binary.core import binarize, ls_scale, replace_relus, sign
from workbench.binary.kernels import (
    binary_conv2d,
    binary_linear,
    pack_signs,
    pack_weight,
    xnor_dot_explained,
)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def reference_conv(x, w, stride=1, padding=1):
    """The float +-1 convolution, -1 padding done explicitly (float64: exact integers)."""
    xs = F.pad(sign(x).double(), (padding,) * 4, value=-1.0)
    return F.conv2d(xs, sign(w).double(), stride=stride).numpy()


def reference_linear(x, w):
    return F.linear(sign(x).double(), sign(w).double()).numpy()


def exact(got, ref):
    """Integers equal: the kernel's int32 against the float result, which must be integral."""
    assert np.array_equal(ref, np.round(ref)), "the reference is not integral"
    return got.dtype.kind in "iu" and np.array_equal(got, ref.astype(np.int64))


def real_inputs(model: nn.Module, x: torch.Tensor, kind) -> list[tuple[nn.Module, torch.Tensor]]:
    """(layer, its input) for every layer of ``kind``, with the ReLUs removed so the inputs
    have both signs (a binary network puts sign where the ReLU was; after a ReLU every sign
    would be +1)."""
    model = copy.deepcopy(model).eval()
    replace_relus(model, nn.Identity)
    seen = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append((m, args[0].detach())))
             for m in model.modules() if isinstance(m, kind)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.fixture(scope="module")
def vgg_layers():
    test = data.cifar10("test")
    return real_inputs(zoo.pretrained("vgg_small"), test.normalize(test.images[:3]), nn.Conv2d)


@pytest.fixture(scope="module")
def lenet_layers():
    test = data.mnist("test")
    return real_inputs(zoo.pretrained("lenet300"), test.normalize(test.images[:64]), nn.Linear)


# ------------------------------------------------------------------ packing and the arithmetic

def test_packing_puts_element_64j_plus_i_in_bit_i_of_word_j_and_zero_pads_the_tail():
    x = -torch.ones(70)
    x[[0, 63, 64, 69]] = 1.0
    x[10] = 0.0                      # sign(0) = +1
    (words,), k = pack_signs(x[None])
    assert k == 70 and words.dtype == np.uint64
    assert words.tolist() == [1 | 1 << 10 | 1 << 63, 1 | 1 << 5]


def test_xnor_dot_explained_by_hand():
    # a = + - + +, w = + + - +: bits 1101 and 1011 (element 0 lowest), XOR 0110, two differ
    steps = xnor_dot_explained([1, -1, 1, 1], [1, 1, -1, 1])
    assert steps["a_words"] == ["0x000000000000000d"] and steps["w_words"] == ["0x000000000000000b"]
    assert steps["xor_words"] == ["0x0000000000000006"]
    assert (steps["k"], steps["popcount"], steps["dot"], steps["sum_of_products"]) == (4, 2, 0, 0)
    a, w = sign(randn(150, seed=1)), sign(randn(150, seed=2))
    steps = xnor_dot_explained(a, w)
    assert len(steps["xor_words"]) == 3 and steps["dot"] == int((a * w).sum())
    with pytest.raises(ValueError):
        xnor_dot_explained([1, 0, 1], [1, 1, 1])


# ------------------------------------------------------------------ numpy kernel: linear

@pytest.mark.parametrize("k", [1, 27, 63, 64, 65, 127, 129, 300])
def test_binary_linear_is_exact_at_odd_sizes(k):
    x, w = randn(9, k, seed=k), randn(13, k, seed=k + 1)
    assert exact(binary_linear(x, pack_weight(w)), reference_linear(x, w))


def test_binary_linear_is_exact_on_lenet300_layers(lenet_layers):
    """All three fc layers (K = 784, 300, 100: none a multiple of 64), real activations."""
    assert [m.in_features for m, _ in lenet_layers] == [784, 300, 100]
    for layer, x in lenet_layers:
        w = layer.weight.detach()
        assert (x < 0).any() and (x >= 0).any()
        assert exact(binary_linear(x, pack_weight(w)), reference_linear(x, w))
        # with the least-squares scale per output, applied after the popcount
        scaled = binary_linear(x, pack_weight(w, ls_scale(w)))
        assert np.allclose(scaled, F.linear(sign(x), binarize(w)).numpy(), rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ numpy kernel: convolution

def test_binary_conv_is_exact_on_vgg_small_layers(vgg_layers):
    """Every conv of the trained VGG-small (3 -> 32 ... 128 -> 128), real activations."""
    assert len(vgg_layers) == 6
    for layer, x in vgg_layers:
        w = layer.weight.detach()
        got = binary_conv2d(x, pack_weight(w), stride=1, padding=1)
        assert exact(got, reference_conv(x, w))
        scaled = binary_conv2d(x, pack_weight(w, ls_scale(w)))
        expected = F.conv2d(F.pad(sign(x), (1,) * 4, value=-1.0), binarize(w)).numpy()
        assert np.allclose(scaled, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("c, o, h, w, k, stride, padding", [
    (3, 5, 7, 9, 3, 1, 1),      # K = 27
    (13, 7, 11, 10, 3, 2, 2),   # K = 117, stride 2, wide padding
    (7, 4, 9, 9, 3, 2, 0),
    (64, 9, 5, 6, 1, 1, 0),     # 1x1: K = 64 exactly
    (5, 6, 8, 8, 5, 1, 2),      # 5x5
])
def test_binary_conv_is_exact_at_odd_shapes(c, o, h, w, k, stride, padding):
    x, weight = randn(2, c, h, w, seed=c), randn(o, c, k, k, seed=o)
    got = binary_conv2d(x, pack_weight(weight), stride, padding)
    assert exact(got, reference_conv(x, weight, stride, padding))


def test_blocked_and_broadcast_popcounts_agree(monkeypatch):
    """Few rows take one broadcast, many take word-by-word blocks of rows: force each."""
    x, w = randn(50, 200, seed=5), randn(30, 200, seed=6)
    ref = reference_linear(x, w)
    monkeypatch.setattr(kernels, "SMALL", 0)
    monkeypatch.setattr(kernels, "CHUNK", 7 * 30)           # blocks of 7 rows, the last of 1
    assert exact(binary_linear(x, pack_weight(w)), ref)
    monkeypatch.setattr(kernels, "SMALL", 10 ** 9)
    assert exact(binary_linear(x, pack_weight(w)), ref)


def test_padding_holds_minus_one():
    # all +1 input and filter: a corner sees 4 image pixels (+1) and 5 padded ones (-1)
    out = binary_conv2d(torch.ones(1, 1, 4, 4), pack_weight(torch.ones(1, 1, 3, 3)))
    assert out[0, 0, 0, 0] == -1 and out[0, 0, 0, 1] == 3 and out[0, 0, 1, 1] == 9


def test_kernel_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        binary_linear(randn(2, 10), pack_weight(randn(3, 11)))
    with pytest.raises(ValueError):
        binary_conv2d(randn(1, 4, 5, 5), pack_weight(randn(2, 3, 3, 3)))
    with pytest.raises(ValueError):
        pack_weight(randn(3, 4), alpha=torch.ones(4))
    with pytest.raises(ValueError):
        kernels.popcount_dot(np.zeros((2, 1), np.uint64), np.zeros((2, 2), np.uint64), 64)


# ------------------------------------------------------------------ OpenVINO BinaryConvolution

def test_openvino_binary_conv_is_exact_on_vgg_small_layers(vgg_layers):
    """Convs 2-6 (the first has 3 input channels: float in binary networks, and refused by the
    runtime): OpenVINO's 1-bit output equals our kernel's and the float +-1 reference, and
    the same runtime's float Convolution with -1 padding gives it too."""
    for layer, x in vgg_layers[1:]:
        w = layer.weight.detach()
        ref = reference_conv(x, w)
        ours = binary_conv2d(x, pack_weight(w))
        model = runtime.binary_conv(w, x.shape, threads=1)
        got = model(x)
        assert model.primitive("BinaryConvolution").endswith("_u1")    # a real 1-bit kernel
        assert np.array_equal(got, ref) and np.array_equal(got, ours)
        float_model = runtime.float_conv(w, x.shape, threads=1, pad_value=-1.0)
        assert np.array_equal(float_model(sign(x)), ref)
        alpha = ls_scale(w)
        scaled = runtime.binary_conv(w, x.shape, alpha=alpha)(x)
        assert np.allclose(scaled, binary_conv2d(x, pack_weight(w, alpha)), rtol=1e-6)


@pytest.mark.parametrize("c, o, h, w, stride, padding, batch", [
    (8, 5, 7, 9, 1, 1, 3), (24, 7, 11, 10, 2, 2, 2), (136, 3, 6, 6, 2, 0, 1),
    (64, 64, 32, 32, 1, 1, 1)])
def test_openvino_binary_conv_is_exact_at_other_shapes(c, o, h, w, stride, padding, batch):
    x, weight = randn(batch, c, h, w, seed=c), randn(o, c, 3, 3, seed=o)
    got = runtime.binary_conv(weight, x.shape, stride, padding, threads=1)(x)
    ref = reference_conv(x, weight, stride, padding)
    assert np.array_equal(got, ref)
    assert np.array_equal(got, binary_conv2d(x, pack_weight(weight), stride, padding))


def test_openvino_float_conv_is_the_float_layer():
    """The float model the bench times (zero padding, +-1 weights) is torch's float conv."""
    x, w = randn(2, 16, 8, 8, seed=3), randn(8, 16, 3, 3, seed=4)
    got = runtime.float_conv(w, x.shape)(x)
    assert np.allclose(got, F.conv2d(x, sign(w), padding=1).numpy(), rtol=1e-4, atol=1e-4)


def test_openvino_refuses_what_it_gets_wrong():
    with pytest.raises(ValueError, match="multiple of 8"):
        runtime.binary_conv(randn(4, 12, 3, 3), (1, 12, 8, 8))
    with pytest.raises(ValueError):
        runtime.binary_conv(randn(4, 16, 3, 3), (1, 8, 8, 8))
    with pytest.raises(ValueError):
        runtime.config(0)
