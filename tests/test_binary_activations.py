"""BNN, XNOR-Net / BWN and HORQ against autograd, explicit loops and float references."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained

from workbench import codec, measure, train, zoo
from workbench.binary.activations import (
    BNN,
    HORQ,
    XNOR,
    BinaryWeight,
    ClipShadow,
    HorqLayer,
    NormSign,
    PassThrough,
    XnorLayer,
    inputs_are_binary,
    residual_binarize,
    xnor_scale,
)
from workbench.binary.core import SignActivation, sign
from workbench.hooks import hooked


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def binary_layer(cls, layer, **extra):
    """``cls`` built from ``layer`` with its weight binarized (as the methods do)."""
    from torch.nn.utils import parametrize
    new = cls.from_layer(layer, **extra)
    parametrize.register_parametrization(new.layer, "weight", BinaryWeight("xnor"))
    return new.eval()


@pytest.fixture(scope="module")
def vgg():
    return zoo.pretrained("vgg_small").eval()


@pytest.fixture(scope="module")
def vgg_conv_input(vgg):
    """What VGG-small's second convolution sees once XNOR removes the ReLU before it: the
    first BatchNorm's output on four CIFAR-10 test images (both signs)."""
    from workbench import data
    x = data.cifar10("test").subset(40, seed=0).tensors()[0][:4]
    with torch.no_grad():
        return vgg.features[:2](x)


# ------------------------------------------------------------------ sign activations

def test_hard_tanh_ste_gradient_is_one_inside_and_zero_outside():
    x = torch.tensor([-3.0, -1.0, -0.99, -0.2, 0.0, 0.3, 1.0, 1.01, 7.0], requires_grad=True)
    y = SignActivation("htanh")(x)
    assert torch.equal(y.detach(), torch.tensor([-1.0, -1, -1, -1, 1, 1, 1, 1, 1]))
    upstream = randn(9, seed=1)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, upstream * (x.detach().abs() <= 1).float())


def test_stochastic_sign_frequency_is_hard_sigmoid_in_training_only():
    values = torch.tensor([-1.5, -0.6, 0.0, 0.4, 0.9])
    x = values.repeat(20000, 1)
    act = SignActivation("htanh", stochastic=True).train()
    torch.manual_seed(0)
    frequency = (act(x) == 1).float().mean(0)
    p = ((values + 1) / 2).clamp(0, 1)
    tolerance = 4 * (p * (1 - p) / 20000).sqrt() + 1e-6     # four binomial standard deviations
    assert ((frequency - p).abs() <= tolerance).all(), (frequency, p)
    assert torch.equal(act.eval()(x), sign(x))              # deterministic at test time


def test_binary_weight_is_alpha_sign_with_the_ste_gradient():
    w = randn(5, 7, seed=2).requires_grad_()
    q = BinaryWeight("xnor")(w)
    alpha = w.detach().abs().mean(1, keepdim=True)
    assert torch.equal(q.detach(), alpha * sign(w.detach()))
    g = randn(5, 7, seed=3)
    (q * g).sum().backward()
    # d/dW_j of sum_i g_i alpha s_i, s = sign with identity gradient: g_j alpha + sign(W_j)
    # sum_i g_i s_i / n (alpha = mean |W| of the row)
    s = sign(w.detach())
    expected = g * alpha + s * (g * s).sum(1, keepdim=True) / 7
    assert torch.allclose(w.grad, expected, atol=1e-6)


def test_stochastic_binary_weight_draws_in_training():
    w = torch.full((1, 40000), 0.5)
    bw = BinaryWeight("xnor", stochastic=True).train()
    torch.manual_seed(1)
    assert abs((bw(w) > 0).float().mean().item() - 0.75) < 0.01
    assert (bw.eval()(w) > 0).all()


def test_clip_shadow_clips_the_float_weights_to_one():
    model = BNN(epochs=0).apply(untrained("lenet300"))
    # re-binarize a fresh copy to get shadows back, blow them up, clip
    fresh = untrained("lenet300")
    BNN(epochs=0).convert(fresh)
    with torch.no_grad():
        for p in fresh.parameters():
            p.mul_(50)
        ClipShadow().after_step(fresh)
    shadow = fresh.net[1].parametrizations.weight.original
    assert shadow.abs().max() == 1 and not hasattr(model.net[1], "parametrizations")


# ------------------------------------------------------------------ XNOR

@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 0), (2, 2, 1)])
def test_xnor_scale_equals_the_per_window_mean_by_a_loop(kernel, stride, padding):
    x = randn(2, 3, 6, 7, seed=4)
    k = xnor_scale(x, kernel, stride, padding)
    padded = F.pad(x.abs(), (padding,) * 4)
    n, _, h, w = padded.shape
    for b in range(n):
        for i, top in enumerate(range(0, h - kernel + 1, stride)):
            for j, left in enumerate(range(0, w - kernel + 1, stride)):
                window = padded[b, :, top:top + kernel, left:left + kernel]
                assert torch.isclose(k[b, 0, i, j], window.mean(), atol=1e-6)
    assert k.shape[2:] == F.conv2d(x, torch.zeros(1, 3, kernel, kernel), None, stride,
                                   padding).shape[2:]


def test_xnor_layer_equals_k_times_the_binary_convolution_on_a_zoo_layer(vgg, vgg_conv_input):
    x = vgg_conv_input[:, :, :12, :12]
    layer = binary_layer(XnorLayer, vgg.features[3])          # the second conv: 3x3, padding 1
    w = layer.layer.parametrizations.weight.original
    alpha = w.abs().mean((1, 2, 3), keepdim=True)
    with torch.no_grad():
        got = layer(x)
        k = xnor_scale(x, 3, 1, 1)
        expected = k * F.conv2d(sign(x), alpha * sign(w), None, 1, 1)
    assert torch.allclose(got, expected, atol=1e-5)
    # and it approximates the float layer: better than a random sign pattern would
    with torch.no_grad():
        float_out = F.conv2d(x, w, None, 1, 1)
    corr = torch.corrcoef(torch.stack([got.flatten(), float_out.flatten()]))[0, 1]
    assert corr > 0.5


def test_xnor_layer_is_exact_when_magnitudes_are_constant():
    """|I| constant and |W| constant per filter: sign(I) K = I and alpha sign(W) = W, so the
    XNOR layer equals the float convolution (no padding: K is the same at every window)."""
    signs_i = sign(randn(2, 4, 7, 7, seed=5))
    signs_w = sign(randn(6, 4, 3, 3, seed=6))
    x = 0.37 * signs_i
    w = torch.linspace(0.1, 0.6, 6).view(6, 1, 1, 1) * signs_w
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(randn(6, seed=7))
        layer = binary_layer(XnorLayer, conv)
        assert torch.allclose(layer(x), conv(x), atol=1e-5)


def test_xnor_linear_scale_is_the_mean_per_example_and_inner_input_is_binary():
    lin = torch.nn.Linear(10, 4)
    layer = binary_layer(XnorLayer, lin)
    x = randn(3, 10, seed=8)
    seen = {}
    with hooked(layer, {"layer": lambda m, i, name: seen.setdefault("x", i[0])}, pre=True):
        y = layer(x)
    assert set(seen["x"].unique().tolist()) == {-1.0, 1.0}
    w = layer.layer.parametrizations.weight.original
    expected = x.abs().mean(1, keepdim=True) * F.linear(sign(x), w.abs().mean(1, keepdim=True)
                                                        * sign(w)) + lin.bias
    assert torch.allclose(y, expected, atol=1e-6)


# ------------------------------------------------------------------ HORQ

def horq_oracle(x, weight, order, kernel, stride, padding):
    """Each receptive field binarized by an explicit loop, then dotted with the weight."""
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    valid = F.pad(torch.ones_like(x), (padding,) * 4)
    rows = []
    for b in range(n):
        for top in range(0, h + 2 * padding - kernel + 1, stride):
            for left in range(0, w + 2 * padding - kernel + 1, stride):
                r = padded[b, :, top:top + kernel, left:left + kernel].flatten()
                mask = valid[b, :, top:top + kernel, left:left + kernel].flatten()
                approx = torch.zeros_like(r)
                for _ in range(order):
                    beta = r.abs().mean()
                    h_i = torch.where(r >= 0, 1.0, -1.0) * mask
                    approx += beta * h_i
                    r = r - beta * h_i
                rows.append(weight.flatten(1) @ approx)
    side_h = (h + 2 * padding - kernel) // stride + 1
    side_w = (w + 2 * padding - kernel) // stride + 1
    return torch.stack(rows).view(n, side_h, side_w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_horq_layer_equals_the_float_convolution_of_its_approximation(order):
    x = randn(2, 3, 6, 5, seed=9)
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    layer = binary_layer(HorqLayer, conv, order=order)
    w_b = layer.layer.weight.detach()
    with torch.no_grad():
        assert torch.allclose(layer(x), horq_oracle(x, w_b, order, 3, 2, 1), atol=1e-5)


def test_horq_error_falls_with_each_order_on_real_activations(vgg_conv_input):
    x = vgg_conv_input
    cols = F.unfold(x, 3, padding=1).transpose(1, 2)
    errors = []
    for order in range(1, 6):
        approx = sum(beta * h for beta, h in residual_binarize(cols, order))
        errors.append(((cols - approx).norm() / cols.norm()).item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 0.3 and errors[-1] < 0.5 * errors[0]


@pytest.mark.parametrize("make", [lambda: torch.nn.Conv2d(5, 3, 3, 1, 1),
                                  lambda: torch.nn.Conv2d(5, 3, 3, 2, 0, bias=False),
                                  lambda: torch.nn.Linear(12, 4)])
def test_horq_order_one_is_xnor(make):
    torch.manual_seed(0)
    layer = make()
    x = randn(2, 5, 7, 7, seed=10) if isinstance(layer, torch.nn.Conv2d) else randn(3, 12)
    horq, xnor = binary_layer(HorqLayer, layer, order=1), binary_layer(XnorLayer, layer)
    with torch.no_grad():
        assert torch.allclose(horq(x), xnor(x), atol=1e-5)


def test_horq_counts_order_binary_macs_per_output():
    model = HORQ(order=3, epochs=0).apply(untrained("lenet5"))
    rows = {r["layer"]: r for r in measure.layer_table(model, (1, 28, 28))}
    base = {r["layer"]: r for r in measure.layer_table(untrained("lenet5"), (1, 28, 28))}
    for name in ("features.2", "classifier.1"):      # macs: the float layer's, as measure says
        assert rows[name]["macs"] == base[name]["macs"]
        assert rows[name]["binary_ops"] == 3 * base[name]["macs"] and rows[name]["terms"] == 3
    assert rows["features.0"]["macs"] == base["features.0"]["macs"]


def ops_identity(row):
    """measure's identity: float + add + binary / terms = macs, less the skipped zeros."""
    left = row["float_macs"] + row["add_ops"] + row["binary_ops"] / row["terms"]
    return left == (row["effective_macs"] if row["add_ops"] else row["macs"])


@pytest.mark.parametrize("method, terms", [(XNOR(epochs=0), 1), (HORQ(order=2, epochs=0), 2)])
def test_ops_of_vgg_small_features_3_against_hand_counts(vgg, method, terms):
    conv = vgg.features[3]
    c_out, c_in, kh, kw = conv.weight.shape
    hand = c_out * c_in * kh * kw * 32 * 32          # 3x3, padding 1 on 32 x 32: every pixel
    base = {r["layer"]: r for r in measure.layer_table(vgg, vgg.input_shape)}
    rows = {r["layer"]: r for r in measure.layer_table(method.apply(vgg), vgg.input_shape)}
    row = rows["features.3"]
    assert row["macs"] == base["features.3"]["macs"] == hand
    assert (row["binary_ops"], row["float_macs"], row["add_ops"]) == (terms * hand, 0, 0)
    assert all(ops_identity(r) for r in rows.values())
    assert sum(r["macs"] for r in rows.values()) == sum(r["macs"] for r in base.values())


# ------------------------------------------------------------------ grouped convolutions

def group_oracle(conv, x):
    """XNOR by a loop over the groups: each group a dense convolution of its own channels."""
    g, args = conv.groups, (conv.stride, conv.padding, conv.dilation)
    cin, cout = conv.in_channels // g, conv.out_channels // g
    kh, kw = conv.kernel_size
    ys = []
    for i in range(g):
        xi = x[:, i * cin:(i + 1) * cin]
        k = F.conv2d(xi.abs().mean(1, keepdim=True), torch.full((1, 1, kh, kw), 1 / (kh * kw)),
                     None, *args)
        w = conv.weight[i * cout:(i + 1) * cout]
        ys.append(k * F.conv2d(sign(xi), w.abs().mean((1, 2, 3), keepdim=True) * sign(w),
                               None, *args))
    return torch.cat(ys, 1) + conv.bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("groups", [1, 3, 6])
def test_grouped_dilated_nonsquare_convolutions_are_computed_per_group(groups):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 12, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1),
                           groups=groups)
    x = randn(2, 6, 11, 10, seed=3)
    ref = group_oracle(conv, x)
    with torch.no_grad():
        for layer in (binary_layer(XnorLayer, conv), binary_layer(HorqLayer, conv, order=1)):
            assert layer.layer.weight.shape == conv.weight.shape
            assert torch.allclose(layer(x), ref, atol=1e-5)


def test_xnor_and_horq_keep_mobilenet_depthwise():
    model = untrained("mobilenet")
    depthwise = {n: m.weight.shape for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert depthwise
    x = sample_input(model)
    for method in (XNOR(epochs=0), HORQ(epochs=0)):
        assert method.supports(model)
        out = method.apply(model)
        for name, shape in depthwise.items():
            inner = out.get_submodule(name).layer
            assert inner.groups == shape[0] and inner.weight.shape == shape
        with torch.no_grad():
            assert torch.allclose(codec.decode(codec.encode(out))(x), out(x), atol=1e-5)


def test_padding_other_than_zeros_is_refused():
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="padding"):
        XnorLayer.from_layer(conv)


# ------------------------------------------------------------------ the methods

@pytest.fixture(scope="module")
def small(mnist_train_small):
    return mnist_train_small


def values_per_channel(weight):
    return max(row.abs().unique().numel() for row in weight.flatten(1))


def test_bnn_on_lenet300_binary_weights_signs_and_batchnorm(small):
    base = untrained("lenet300")
    with train.quiet():
        out = BNN(epochs=1).apply(base, small)
    norms = [m for m in out.modules() if isinstance(m, NormSign)]
    assert len(norms) == 2 and [m.norm.num_features for m in norms] == [300, 100]
    for name in ("net.1", "net.3", "net.5"):            # all weights binary, as the paper
        assert values_per_channel(out.get_submodule(name).weight) == 1
    checks = inputs_are_binary(out, ["net.1", "net.3", "net.5"])
    assert checks == {"net.1": False, "net.3": True, "net.5": True}   # the image stays real
    x = sample_input(out)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_bnn_on_vgg_small_uses_its_batchnorms_and_float_ends_keep_ends(vgg):
    out = BNN(epochs=0, float_ends=True).apply(vgg)
    signs = [m for m in out.modules() if isinstance(m, SignActivation)]
    assert len(signs) == 6 and not any(isinstance(m, NormSign) for m in out.modules())
    assert values_per_channel(out.features[0].weight) > 1
    assert values_per_channel(out.classifier[1].weight) > 1
    assert values_per_channel(out.features[3].weight) == 1
    x = sample_input(out)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_xnor_on_vgg_small_structure_and_round_trip(vgg):
    out = XNOR(epochs=0).apply(vgg)
    kinds = [type(m).__name__ for m in out.features]
    assert kinds.count("XnorLayer") == 5 and kinds.count("PassThrough") == 5
    assert kinds.count("ReLU") == 1 and kinds[-2] == "ReLU"        # before the float head
    for m in out.features:
        if isinstance(m, XnorLayer):
            original = m.layer.weight
            assert values_per_channel(original) == 1
    # weights: alpha sign of the pretrained ones, alpha = mean |W| per filter
    w = vgg.features[3].weight
    assert torch.allclose(out.features[3].layer.weight,
                          w.abs().mean((1, 2, 3), keepdim=True) * sign(w))
    x = sample_input(out)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_bwn_keeps_real_inputs_and_float_ends(vgg):
    out = XNOR(mode="bwn", epochs=0).apply(vgg)
    assert not any(isinstance(m, (XnorLayer, PassThrough)) for m in out.modules())
    assert values_per_channel(out.features[0].weight) > 1
    assert values_per_channel(out.features[3].weight) == 1
    x = sample_input(out)
    with torch.no_grad():
        assert torch.equal(codec.decode(codec.encode(out))(x), out(x))


def test_horq_on_lenet5_round_trip_and_accuracy_rises_with_order(mnist_test_small):
    base = zoo.pretrained("lenet5")
    accs = []
    for order in (1, 4):
        out = HORQ(order=order, epochs=0).apply(base)
        x = sample_input(out)
        with torch.no_grad():
            assert torch.equal(codec.decode(codec.encode(out))(x), out(x))
        accs.append(train.evaluate(out, mnist_test_small))
    assert accs[1] > accs[0]


def test_supports_refuses_networks_whose_binarized_inputs_stay_nonnegative():
    resnet, lenet5 = untrained("resnet20"), untrained("lenet5")
    assert not XNOR().supports(resnet) and not HORQ().supports(resnet)   # F.relu in blocks
    assert XNOR(mode="bwn").supports(resnet)
    assert not BNN().supports(lenet5) and BNN().supports(untrained("lenet300"))
    with pytest.raises(ValueError, match="binary.bnn"):
        BNN(epochs=0).apply(lenet5)


@pytest.mark.parametrize("cls, field, value", [
    (HORQ, "order", 0), (HORQ, "order", 5), (XNOR, "mode", "twn"), (BNN, "stochastic", 1),
    (BNN, "float_ends", "yes"), (HORQ, "epochs", -1)])
def test_bad_values_are_refused_by_name(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})


def test_tags():
    assert BNN().bits_per_weight() == 1 and XNOR(mode="bwn").tags().needs_data
    assert not HORQ(epochs=0).tags().needs_data
    assert isinstance(PassThrough(), torch.nn.Module)
