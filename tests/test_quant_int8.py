"""quant.int8: affine weights against torch.ao's fake quantization and observers, the
from-scratch integer kernels against exact arithmetic, torch.ao's quantized ops and
onnxruntime's QLinearConv / QGemm (also on LeNet-300-100's first layer with MNIST test digits),
and a small network end to end through onnxruntime.

The weights are in [-64, 64] (``reduce_range``, the default): with full int8 weights, x86 CPUs
without VNNI (AVX2) saturate pairs of products in int16 inside onnxruntime's kernels, and its
integers are not the exact ones (the module docstring of ``workbench.quantize.int8``)."""
from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import sample_input, untrained
from torch.ao.quantization import PerChannelMinMaxObserver

from workbench import codec, zoo
from workbench.quantize import int8
from workbench.quantize.int8 import Int8
from workbench.train import evaluate


def weight(shape=(16, 8, 3, 3), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.1


@pytest.mark.parametrize("reduce_range", [True, False])
@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("weights", ["symmetric", "asymmetric"])
def test_weights_equal_torch_fake_quantize(granularity, weights, reduce_range):
    w = weight()
    scale, zero_point = int8.weight_qparams(w, granularity, weights, reduce_range)
    qmin, qmax = int8.weight_range(weights, reduce_range)
    assert (qmin, qmax) == ((-64, 64) if reduce_range else int8.WEIGHT_RANGE[weights])
    assert scale.shape == zero_point.shape == ((16,) if granularity == "per_channel" else (1,))
    fq = int8.AffineWeight(scale, zero_point, qmin, qmax)(w)
    assert torch.equal(fq, torch.fake_quantize_per_channel_affine(
        w, scale.expand(16), zero_point.expand(16), 0, qmin, qmax))
    if granularity == "per_tensor":
        assert torch.equal(fq, torch.fake_quantize_per_tensor_affine(
            w, float(scale[0]), int(zero_point[0]), qmin, qmax))
    # At most qmax - qmin + 1 levels per channel, and the error of each weight under half a step.
    assert max(len(fq[c].unique()) for c in range(len(fq))) <= qmax - qmin + 1
    inside = (w / scale.view(-1, 1, 1, 1) + zero_point.view(-1, 1, 1, 1)).abs() <= qmax
    assert ((fq - w).abs() <= scale.view(-1, 1, 1, 1) / 2 + 1e-7)[inside].all()


def test_scales_come_from_the_observers():
    w = weight()
    scale, zero_point = int8.weight_qparams(w, "per_channel", "symmetric")
    assert torch.equal(zero_point, torch.zeros(16, dtype=torch.int32))
    # ONNX Runtime's rules: max|w| / 64 with reduce_range (exact: a power of two), else / 127.
    assert torch.equal(scale, w.abs().flatten(1).amax(1) / 64)
    scale, _ = int8.weight_qparams(w, "per_channel", "symmetric", reduce_range=False)
    torch.testing.assert_close(scale, w.abs().flatten(1).amax(1) / 127)
    for reduce_range, (qmin, qmax) in ((False, (-128, 127)), (True, (-64, 64))):
        observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, quant_min=qmin,
                                            quant_max=qmax, qscheme=torch.per_channel_affine)
        observer(w)
        expected_scale, expected_zp = observer.calculate_qparams()
        scale, zero_point = int8.weight_qparams(w, "per_channel", "asymmetric", reduce_range)
        assert torch.equal(scale, expected_scale.float())
        assert torch.equal(zero_point, expected_zp.to(torch.int32))


def test_parametrization_keeps_the_shadow_weight_and_passes_gradients():
    model = untrained("lenet300")
    q = Int8(calibration=32).apply(model, _mnist_train())
    layer = q.net[1]
    original = layer.parametrizations.weight.original
    assert torch.equal(original, model.net[1].weight)          # float shadow kept
    hint = layer.parametrizations.weight[0].codec_hint()
    assert hint["format"] == "affine" and hint["bits"] == 8 and hint["axis"] == 0
    integers = layer.weight / hint["scale"].view(-1, 1) + hint["zero_point"].view(-1, 1)
    assert torch.equal(integers.round(), integers.round().clamp(-64, 64))
    assert integers.round().abs().max() == 64                   # the range is used
    torch.testing.assert_close(integers, integers.round(), atol=1e-3, rtol=0)
    layer.weight.sum().backward()                               # straight-through estimator
    assert torch.equal(original.grad, torch.ones_like(original))


_TRAIN = {}


def _mnist_train():
    if "mnist" not in _TRAIN:
        from workbench import data
        _TRAIN["mnist"] = data.load("mnist", "train").subset(256, seed=0)
    return _TRAIN["mnist"]


@pytest.mark.parametrize("observer", ["minmax", "histogram"])
def test_activation_ranges_are_calibrated(observer):
    model = untrained("lenet5")
    method = Int8(calibration=64, observer=observer)
    q = method.apply(model, _mnist_train())
    images = method.calibration_images(_mnist_train())
    first = q.features[0].parametrizations.weight[0]
    reference = int8.OBSERVERS[observer](dtype=torch.quint8, quant_min=0, quant_max=255)
    for start in range(0, len(images), 64):
        reference(images[start:start + 64])
    scale, zero_point = reference.calculate_qparams()
    assert float(first.input_scale) == float(scale)
    assert int(first.input_zero_point) == int(zero_point)
    if observer == "minmax":     # the normalized image's range, over 255 levels
        assert float(first.input_scale) == pytest.approx(
            (images.max() - images.min()).item() / 255, rel=1e-6)
    # The classifier's last layer reads a ReLU: its real zero is the integer 0.
    last = q.classifier[-1].parametrizations.weight[0]
    assert int(last.input_zero_point) == 0 and float(last.input_scale) > 0
    assert "classifier.4.parametrizations.weight.0.input_scale" in q.state_dict()


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
def test_apply_contract_and_file_round_trip(granularity):
    model = untrained("vgg_small", seed=3)
    train = _cifar_train()
    q = Int8(**Int8.smoke, granularity=granularity).apply(model, train)
    again = Int8(**Int8.smoke, granularity=granularity).apply(model, train)
    x = sample_input(model)
    with torch.no_grad():
        y = q(x)
        assert torch.equal(again(x), y)
        blob = codec.encode(q)
        assert torch.equal(codec.decode(blob)(x), y)
        assert len(blob) < len(codec.encode(model)) / 3.5          # int8 + scales
        plain = int8.folded_copy(q)                                 # leaves q parametrized
        assert torch.equal(plain(x), y) and torch.equal(q(x), y)
    with pytest.raises(ValueError, match="granularity"):
        Int8(granularity="per_row")
    with pytest.raises(ValueError, match="calibration"):
        Int8(calibration=0)
    with pytest.raises(ValueError, match="reduce_range"):
        Int8(reduce_range="yes")
    with pytest.raises(ValueError, match="training set"):
        Int8().apply(model)


def _cifar_train():
    if "cifar" not in _TRAIN:
        from workbench import data
        _TRAIN["cifar"] = data.load("cifar10", "train").subset(64, seed=0)
    return _TRAIN["cifar"]


# ------------------------------------------------------------------ integer arithmetic

def test_quantize_multiplier_is_normalized_fixed_point():
    m = torch.tensor([0.75, 0.3, 1e-3, 3.2e-5, 0.9999999999], dtype=torch.float64)
    m0, shift = int8.quantize_multiplier(m)
    assert ((m0 >= 2 ** 30) & (m0 < 2 ** 31)).all()
    torch.testing.assert_close(m0.double() * 2.0 ** (-31 - shift.double()), m, rtol=2 ** -30,
                               atol=0)


def test_requantize_rounds_like_exact_arithmetic_except_at_ties():
    g = torch.Generator().manual_seed(0)
    acc = torch.randint(-2 ** 20, 2 ** 20, (4000, 3), generator=g)
    m = torch.tensor([3e-4, 1e-5, 0.02], dtype=torch.float64)
    m0, shift = int8.quantize_multiplier(m)
    out = int8.requantize(acc, m0, shift, 5, -2 ** 30, 2 ** 30)
    exact = acc.double() * m0.double() * 2.0 ** (-31 - shift.double())
    half_away = torch.sign(exact) * torch.floor(exact.abs() + 0.5)
    differ = out != half_away + 5
    # gemmlowp rounds twice (the doubling high multiply, then the shift): off by one only
    # when the exact value lies within 2^-shift of a tie.
    distance_to_tie = (exact - exact.floor() - 0.5).abs()
    assert ((out - half_away - 5).abs() <= 1).all()
    assert (distance_to_tie <= 2.0 ** -shift.double())[differ].all()
    assert differ.float().mean() < 0.01
    assert torch.equal(int8.requantize(acc, m0, shift, 0), torch.clamp(out - 5, 0, 255))


def _quantized_conv(seed=0, stride=1, padding=1, c_in=8, c_out=16, k=3, size=9):
    """Integers of a conv layer quantized as the method does, its input, and its output range."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(c_in, c_out, k, stride, padding)
    x = torch.relu(torch.randn(2, c_in, size, size))
    w_scale, w_zp = int8.weight_qparams(conv.weight)              # the method's default range
    wq = int8.quantize_tensor(conv.weight.detach(), w_scale, w_zp, *int8.weight_range(), axis=0)
    x_scale, x_zp = float(x.max()) / 255, 0
    xq = int8.quantize_tensor(x, x_scale, x_zp)
    bias_q = int8.quantize_bias(conv.bias.detach(), x_scale, w_scale)
    reference = F.conv2d(xq.double() * x_scale, wq.double() * w_scale.double().view(-1, 1, 1, 1),
                         bias_q.double() * x_scale * w_scale.double(), stride, padding)
    y_scale = float(reference.max() - reference.min()) / 255
    y_zp = int(round(-float(reference.min()) / y_scale))
    return locals()


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 0), (1, 0)])
def test_int8_conv2d_accumulates_exactly(stride, padding):
    c = _quantized_conv(stride=stride, padding=padding)
    acc = int8.int8_conv2d(c["xq"], c["x_zp"] + 3, c["wq"], c["w_zp"], c["bias_q"], stride, padding)
    assert acc.dtype == torch.int32
    exact = F.conv2d(F.pad(c["xq"].double() - 3 - c["x_zp"], [padding] * 4), c["wq"].double(),
                     c["bias_q"].double(), stride)
    assert torch.equal(acc.double(), exact)


def test_int8_linear_accumulates_exactly_with_zero_points():
    g = torch.Generator().manual_seed(1)
    xq = torch.randint(0, 256, (5, 40), generator=g)
    wq = torch.randint(-128, 128, (7, 40), generator=g)
    w_zp = torch.randint(-10, 10, (7,), generator=g)
    bias = torch.randint(-1000, 1000, (7,), generator=g)
    acc = int8.int8_linear(xq, 17, wq, w_zp, bias)
    exact = (xq.double() - 17) @ (wq.double() - w_zp.double().view(-1, 1)).t() + bias.double()
    assert torch.equal(acc.double(), exact)


def _our_int8_output(c):
    acc = int8.int8_conv2d(c["xq"], c["x_zp"], c["wq"], c["w_zp"], c["bias_q"], c["stride"],
                           c["padding"])
    m0, shift = int8.quantize_multiplier(c["x_scale"] * c["w_scale"].double() / c["y_scale"])
    return int8.requantize(acc, m0, shift, c["y_zp"])


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1)])
def test_int8_conv_within_one_step_of_float_and_matches_onnxruntime(stride, padding):
    c = _quantized_conv(stride=stride, padding=padding)
    ours = _our_int8_output(c)
    float_ref = int8.quantize_tensor(c["reference"].float(), c["y_scale"], c["y_zp"])
    assert (ours - float_ref).abs().max() <= 1                    # one quantization step
    ort = int8.ort_qlinear_conv(c["xq"], c["x_scale"], c["x_zp"], c["wq"], c["w_scale"],
                                c["w_zp"], c["bias_q"], c["y_scale"], c["y_zp"], stride, padding)
    assert ort.shape == ours.shape
    assert (ours - ort).abs().max() <= 1                          # equal up to rounding ties
    assert (ours != ort).float().mean() < 0.01


def test_int8_linear_matches_onnxruntime_and_torch_ao():
    c = _quantized_conv(c_in=40, c_out=10, k=1, padding=0, size=1)   # a Linear as a 1x1 conv
    ours = _our_int8_output(c)
    ort = int8.ort_qlinear_conv(c["xq"], c["x_scale"], c["x_zp"], c["wq"], c["w_scale"],
                                c["w_zp"], c["bias_q"], c["y_scale"], c["y_zp"])
    assert (ours - ort).abs().max() <= 1 and (ours != ort).float().mean() < 0.05
    # torch.ao's reference quantized Linear (fbgemm kernels, float requantization).
    from torch.ao.nn.quantized import functional as qF
    x = torch.quantize_per_tensor(c["xq"].flatten(1).float() * c["x_scale"], c["x_scale"],
                                  c["x_zp"], torch.quint8)
    w = torch.quantize_per_channel(c["wq"].flatten(1).float() * c["w_scale"].view(-1, 1),
                                   c["w_scale"].double(), c["w_zp"].long(), 0, torch.qint8)
    bias = c["bias_q"].double() * c["x_scale"] * c["w_scale"].double()
    ao = qF.linear(x, w, bias.float(), c["y_scale"], c["y_zp"]).int_repr().int()
    assert (ours.flatten(1) - ao).abs().max() <= 1


def test_weight_range_keeps_int16_pairs_exact_in_onnxruntime():
    """The worst case for x86's vpmaddubsw (u8 x s8 pairs summed into a saturating int16):
    every input 255, every weight at the end of its range. [-64, 64] cannot saturate, so
    onnxruntime gives the exact integers on any CPU; full int8 weights give either the exact
    integers (VNNI, ARM) or the saturated ones (AVX2 without VNNI), nothing else."""
    reduced, full = int8.weight_range(), int8.weight_range(reduce_range=False)
    assert int8.pair_sum_bound(*reduced) == 2 * 255 * 64 <= int8.INT16_MAX
    assert int8.pair_sum_bound(*full) == 2 * 255 * 127 > int8.INT16_MAX
    k = 64
    xq = torch.full((1, k, 1, 1), 255, dtype=torch.int32)
    for (qmin, qmax), y_scale in ((reduced, 2 ** 14), (full, 2 ** 15)):
        wq = torch.stack([torch.full((k,), qmax), torch.full((k,), qmin),
                          torch.tensor([qmax, qmin] * (k // 2))]).view(3, k, 1, 1)
        ones, zeros = torch.ones(3), torch.zeros(3, dtype=torch.int32)
        ort = int8.ort_qlinear_conv(xq, 1.0, 0, wq, ones, zeros, zeros, y_scale, 128).flatten()
        exact = torch.round(torch.tensor([k * 255 * qmax, k * 255 * qmin, 0]) / y_scale) + 128
        pair = torch.tensor([2 * 255 * qmax, 2 * 255 * qmin, 0]).clamp(-2 ** 15, 2 ** 15 - 1)
        saturated = torch.round(pair * (k // 2) / y_scale) + 128
        if (qmin, qmax) == reduced:
            assert torch.equal(ort, exact.int())
        else:
            assert torch.equal(ort, exact.int()) or torch.equal(ort, saturated.int())


def test_lenet300_fc1_on_mnist_test_digits_matches_onnxruntime(mnist_test_small):
    """The first Linear of the pretrained LeNet-300-100 on 500 real MNIST test digits: our
    integer kernels against onnxruntime's QGemm (the fused QDQ graph quantize_static writes)
    and QLinearConv, on the same integers. Equal except at rounding ties (0.02% here)."""
    q = Int8(calibration=256).apply(zoo.pretrained("lenet300"), _mnist_train())
    name, fc1 = next(iter(int8.quantizable_layers(q)))
    assert name == "net.1" and isinstance(fc1, torch.nn.Linear) and fc1.in_features == 784
    p = int8.affine_parametrization(fc1)
    with torch.no_grad():
        wq = p.integers(fc1.parametrizations.weight.original).to(torch.int32)
    x_scale, x_zp = float(p.input_scale), int(p.input_zero_point)
    xq = int8.quantize_tensor(mnist_test_small.tensors()[0].flatten(1), x_scale, x_zp)
    bias_q = int8.quantize_bias(fc1.bias.detach(), x_scale, p.scale)
    # fc1's output, after the ReLU, is fc2's input: its calibrated range (zero point 0, so
    # clamping at 0 is the ReLU, as the runtime fuses it).
    following = int8.affine_parametrization(q.net[3])
    y_scale, y_zp = float(following.input_scale), int(following.input_zero_point)
    assert y_zp == 0
    acc = int8.int8_linear(xq, x_zp, wq, p.zero_point, bias_q)
    multiplier = x_scale * p.scale.double() / y_scale
    m0, shift = int8.quantize_multiplier(multiplier)
    ours = int8.requantize(acc, m0, shift, y_zp)
    assert 0.1 < (ours > 0).float().mean() < 0.9 and ours.max() > 100     # a live layer

    qdq = int8.qdq_linear_model(x_scale, x_zp, wq, p.scale, p.zero_point, bias_q, y_scale, y_zp)
    assert int8.fused_ops(qdq) == ["QGemm"]                    # one integer kernel
    gemm = int8.ort_qdq_linear(xq, x_scale, x_zp, wq, p.scale, p.zero_point, bias_q, y_scale,
                               y_zp)
    conv = int8.ort_qlinear_conv(xq.view(-1, 784, 1, 1), x_scale, x_zp, wq.view(300, 784, 1, 1),
                                 p.scale, p.zero_point, bias_q, y_scale, y_zp).view(-1, 300)
    exact = acc.double() * multiplier                           # before the zero point
    near_tie = (exact - exact.floor() - 0.5).abs() <= 2.0 ** -shift.double() + 1e-4
    for ort in (gemm, conv):
        assert ort.shape == ours.shape
        differ = ours != ort
        assert (ours - ort).abs().max() <= 1
        assert differ.float().mean() < 0.001                    # 27 of 150,000 on AVX2
        assert near_tie[differ & (exact > -0.5) & (exact < 255.5)].all()


# ------------------------------------------------------------------ end to end

def test_tiny_model_end_to_end_through_onnxruntime(mnist_test_small):
    base = zoo.pretrained("lenet5")
    train = _mnist_train()
    method = Int8(calibration=128)
    q = method.apply(base, train)
    fp32_bytes, int8_bytes = int8.to_onnx(base), int8.onnx_int8(q, method.calibration_images(train))
    graph = onnx.load_from_string(int8_bytes).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert len(int8_bytes) < len(fp32_bytes) / 3
    # ONNX Runtime's calibration of the input agrees with ours (same images, min/max).
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    # ONNX Runtime's weight integers are ours (no BatchNorm to fold in LeNet-5).
    assert int8.quantization_settings(q) == {"granularity": "per_channel",
                                             "weights": "symmetric", "reduce_range": True}
    for name, layer in int8.quantizable_layers(q):
        with torch.no_grad():
            integers = int8.affine_parametrization(layer).integers(
                layer.parametrizations.weight.original)
        assert torch.equal(torch.tensor(inits[f"{name}.weight_quantized"]).float(), integers)
    first_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    ours = q.features[0].parametrizations.weight[0]
    assert float(inits[first_q.input[1]]) == pytest.approx(float(ours.input_scale), rel=1e-5)
    assert int(inits[first_q.input[2]]) == int(ours.input_zero_point)
    fp32 = int8.onnx_accuracy(fp32_bytes, mnist_test_small)
    assert fp32 == pytest.approx(evaluate(base, mnist_test_small), abs=0.002)
    assert int8.onnx_accuracy(int8_bytes, mnist_test_small) >= fp32 - 0.01
    assert evaluate(int8.simulate_activations(q), mnist_test_small) >= fp32 - 0.01
    assert int8.onnx_latency_ms(int8_bytes, 4, 1, min_run_time=0.05) > 0


def test_a_network_carrying_an_attachment_exports_with_the_same_outputs():
    # an attachment (here: encode.huffman's chosen encoding) computes nothing; the exporter
    # once failed on its dict extra state
    from workbench import METHODS, models
    tagged = METHODS["encode.huffman"]().apply(zoo.pretrained("lenet300"))
    assert models.attached(tagged, "codec_options") is not None
    x = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    sess = int8.session(int8.to_onnx(tagged))
    ours = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(ours), tagged.eval()(x), rtol=1e-4,
                                   atol=1e-4)
    assert models.attached(tagged, "codec_options") is not None   # the original keeps it
