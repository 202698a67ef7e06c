"""Bi-Real Net and pattern binarization: the ApproxSign and magnitude-aware gradients against
autograd, the real-valued shortcuts, the folded {-a, +a} weights, and the file."""
from __future__ import annotations

import pytest
import torch
from conftest import sample_input, untrained
from torch import nn

from workbench import codec, data, models, train, zoo
from workbench.binary.bireal import (
    BiReal,
    BiRealBlock,
    Pattern,
    magnitude_aware_sign,
    parameter_free_shortcut,
    scaled_sign_ste,
)
from workbench.binary.core import PassThrough, SignActivation


@pytest.fixture(scope="module")
def cifar_small():
    return data.cifar10("train").subset(128, seed=0)


def test_approx_sign_gradient_is_2_minus_2abs_inside_and_0_outside():
    x = torch.tensor([-1.7, -1.0, -0.75, -0.3, 0.0, 0.2, 0.5, 0.99, 1.0, 3.0],
                     dtype=torch.float64, requires_grad=True)
    y = SignActivation("approx")(x)
    assert torch.equal(y.detach(), torch.where(x.detach() >= 0, 1.0, -1.0).double())
    y.sum().backward()
    inside = x.detach().abs() < 1
    assert torch.allclose(x.grad[inside], 2 - 2 * x.detach()[inside].abs(), atol=1e-12)
    assert torch.equal(x.grad[~inside], torch.zeros_like(x.grad[~inside]))


def test_magnitude_aware_weights_values_and_gradient():
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64) * 0.8).requires_grad_()
    upstream = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    b = magnitude_aware_sign(w)
    a = w.detach().abs().mean((1, 2, 3), keepdim=True)
    # exactly +-a per output channel, with the sign of the shadow weight
    assert torch.equal(b.detach(), a * torch.where(w.detach() >= 0, 1.0, -1.0).double())
    (b * upstream).sum().backward()
    # the paper's magnitude-aware gradient: mean|W| * g inside |W| <= 1, 0 outside
    assert torch.allclose(w.grad, a * upstream * (w.detach().abs() <= 1), atol=1e-12)
    assert (w.detach().abs() > 1).any()          # the clipped region is exercised
    # the pattern binarizer: same values, hard-tanh straight-through gradient (no scale)
    w.grad = None
    b2 = scaled_sign_ste(w)
    assert torch.equal(b2.detach(), b.detach())
    (b2 * upstream).sum().backward()
    assert torch.allclose(w.grad, upstream * (w.detach().abs() <= 1), atol=1e-12)


def blocks(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BiRealBlock)]


def test_shortcut_carries_the_real_valued_input():
    out = BiReal(epochs=0).apply(untrained("resnet20"))
    x = sample_input(out)
    seen = {}
    for name, block in blocks(out):
        block.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0]))
    with torch.no_grad():
        out(x)
    assert len(seen) == 9
    with torch.no_grad():
        for name, block in blocks(out):
            inp = seen[name]
            h = block.binary_branch(inp, 1) + parameter_free_shortcut(inp, block.inner,
                                                                     block.stride)
            # unit 2: output minus its binary branch is exactly unit 2's real-valued input
            assert torch.allclose(block(inp) - block.binary_branch(h, 2), h, atol=1e-5)
            if block.stride == 1 and block.inner == inp.shape[1]:
                # unit 1: its output minus the binary branch is the block's input itself
                assert torch.allclose(h - block.binary_branch(inp, 1), inp, atol=1e-5)
            else:   # downsampling: 2x2 averages of the input, zero in the new channels
                pooled = torch.nn.functional.avg_pool2d(inp, 2)
                diff = h - block.binary_branch(inp, 1)
                pad = (block.inner - inp.shape[1]) // 2
                assert torch.allclose(diff[:, pad:pad + inp.shape[1]], pooled, atol=1e-5)
                assert diff[:, :pad].abs().max() < 1e-5 and diff[:, pad + inp.shape[1]:].abs().max() < 1e-5
    assert isinstance(out.stem[2], PassThrough)   # sign(ReLU(x)) would be constant


def test_without_shortcuts_only_the_block_shortcut_remains():
    model = BiReal(epochs=0, shortcuts=False).apply(untrained("resnet20"))
    block = model.stages[0][1]
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        inner = block.binary_branch(block.binary_branch(x, 1), 2)
        assert torch.allclose(block(x) - inner, x, atol=1e-5)
        with_sc = BiRealBlock(16, 16, shortcuts=True)
        with_sc.load_state_dict(block.state_dict())
        assert not torch.allclose(with_sc.eval()(x), block(x))


def test_binary_weights_fold_to_plus_minus_a_per_channel_from_the_checkpoint():
    base = zoo.pretrained("resnet20")
    out = BiReal(epochs=0).apply(base)
    for name, block in blocks(out):
        for conv in ("conv1", "conv2"):
            w = getattr(block, conv).weight
            assert not hasattr(getattr(block, conv), "parametrizations")     # folded
            shadow = base.get_submodule(f"{name}.{conv}").weight
            a = shadow.abs().mean((1, 2, 3), keepdim=True)
            assert torch.equal(w, a * torch.where(shadow >= 0, 1.0, -1.0))
    # first convolution and last linear layer stay float, untouched without training
    assert torch.equal(out.stem[0].weight, base.stem[0].weight)
    assert torch.equal(out.head[2].weight, base.head[2].weight)


@pytest.mark.parametrize("shortcuts", [True, False])
def test_codec_round_trip_gives_the_same_outputs(shortcuts, cifar_small):
    with train.quiet():
        out = BiReal(shortcuts=shortcuts, epochs=1, batch_size=64).apply(
            untrained("resnet20"), cifar_small)
    x = sample_input(out)
    blob = codec.encode(out)
    again = codec.decode(blob)
    assert [type(m).__name__ for m in again.modules()] == [type(m).__name__ for m in out.modules()]
    with torch.no_grad():
        assert torch.equal(again(x), out(x))
    assert len(blob) < len(codec.encode(untrained("resnet20"))) / 8


def test_supports_is_decided_from_the_layers():
    assert BiReal().supports(untrained("resnet20"))
    assert not BiReal().supports(untrained("vgg_small"))
    assert Pattern().supports(untrained("lenet5")) and not Pattern().supports(untrained("lenet300"))
    with pytest.raises(ValueError, match="basic blocks"):
        BiReal(epochs=0).apply(untrained("vgg_small"))
    with pytest.raises(ValueError, match="shortcuts"):
        BiReal(shortcuts="yes")


def kinds(model):
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return ([n for n, m in convs[1:] if max(m.kernel_size) > 1],
            [n for n, m in convs if max(m.kernel_size) == 1])


def is_binary_per_channel(w):
    return all(len(row.abs().unique()) == 1 for row in w.flatten(1))


def test_pattern_binarizes_exactly_the_kxk_filters_before_fine_tuning():
    base = untrained("squeezenet")       # fire modules: 1x1 squeeze, 1x1 and 3x3 expand
    out = Pattern(epochs=0).apply(base)
    kxk, ones = kinds(base)
    assert kxk and ones
    for name in kxk:
        assert is_binary_per_channel(out.get_submodule(name).weight), name
    for name in ones:
        assert torch.equal(out.get_submodule(name).weight, base.get_submodule(name).weight)
    first = next(n for n, m in base.named_modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(out.get_submodule(first).weight, base.get_submodule(first).weight)
    everything = Pattern(epochs=0, keep_first=False).apply(base)
    assert is_binary_per_channel(everything.get_submodule(first).weight)


def test_pattern_fine_tunes_the_float_1x1_and_keeps_kxk_binary(cifar_small):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10)).eval()
    with train.quiet():
        out = Pattern(epochs=1, batch_size=32, lr=0.05).apply(model, cifar_small)
    assert is_binary_per_channel(out[2].weight)
    assert not is_binary_per_channel(out[4].weight)                # float 1x1 ...
    assert not torch.equal(out[4].weight, model[4].weight)         # ... and fine-tuned
    assert out[4].weight.unique().numel() == out[4].weight.numel()


def placed(x, channels):
    """``x`` with ``channels`` channels: centred in zeros when more, its middle ones when fewer."""
    c = x.shape[1]
    out = x.new_zeros(x.shape[0], channels, *x.shape[2:])
    if channels >= c:
        out[:, (channels - c) // 2:(channels - c) // 2 + c] = x
    else:
        out[:] = x[:, (c - channels) // 2:(c - channels) // 2 + channels]
    return out


@pytest.mark.parametrize("inner", [[8] * 9, [24, 8, 16, 40, 32, 8, 64, 80, 48]],
                         ids=["fewer", "mixed"])
def test_pruned_resnet_has_a_real_shortcut_around_every_binary_convolution(inner):
    """A channel-pruned ResNet-20 (inner != the block's channels): each unit's output minus its
    binary branch is its real-valued input, 2x2-averaged where strided, zero-padded or cut to
    its middle channels where the count changes; and the file gives the same outputs."""
    net = models.build("resnet20", inner=inner)
    out = BiReal(epochs=0).apply(net)
    x = sample_input(out)
    seen = {}
    for name, block in blocks(out):
        block.register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, a[0]))
        block.sign2.register_forward_pre_hook(
            lambda m, a, name=name: seen.__setitem__(name + ".h", a[0]))
    with torch.no_grad():
        y = out(x)
        assert y.shape == (x.shape[0], 10)
        for name, block in blocks(out):
            inp, h = seen[name], seen[name + ".h"]
            pooled = torch.nn.functional.avg_pool2d(inp, 2) if block.stride == 2 else inp
            assert torch.allclose(h - block.binary_branch(inp, 1), placed(pooled, block.inner),
                                  atol=1e-5)
            assert torch.allclose(block(inp) - block.binary_branch(h, 2),
                                  placed(h, block.c_out), atol=1e-5)
            assert placed(h, block.c_out).abs().sum() > 0      # a shortcut, not dropped
        assert torch.equal(codec.decode(codec.encode(out))(x), y)
