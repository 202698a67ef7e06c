"""8-bit affine quantization with calibrated activations, and real integer inference
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference").

A real number is ``r = S * (q - Z)``: a float scale ``S`` and an integer zero point ``Z``
(eq. 1 of the paper). What we chose, following what deployments do (the TFLite int8 spec,
TensorRT, ONNX Runtime's CPU default "U8S8"):

- weights: int8, *symmetric* (Z = 0) in [-127, 127], one scale per output channel
  (``granularity="per_channel"``) or per tensor; ``weights="asymmetric"`` gives int8 in
  [-128, 127] with a zero point, for comparison. The scale comes from torch.ao's
  ``PerChannelMinMaxObserver`` / ``MinMaxObserver``; [-127, 127] gives S = max|w| / 127,
  exactly what ``onnxruntime.quantization`` computes, so the same layer quantizes identically
  in both. A convolution is quantized before its BatchNorm: per channel that equals quantizing
  the BN-folded weight (BN scales each output channel), which is what the runtimes do.
- activations: uint8, asymmetric, per tensor, calibrated on ``calibration`` training images
  with torch.ao's ``MinMaxObserver`` or ``HistogramObserver`` (it picks the range that
  minimizes the quantization error, clipping outliers).

``apply`` returns the same network with every Conv2d / Linear weight fake-quantized by the
parametrization ``AffineWeight``: its forward computes exactly ``(q - zero_point) * scale``,
and ``codec_hint()`` lets ``codec.encode`` store int8 + scales. It is NOT folded, because
the runtime needs more than the weights: the calibrated range of each layer's input is kept
on the same parametrization as the buffers ``input_scale`` / ``input_zero_point`` (in the
state dict as ``<layer>.parametrizations.weight.0.input_scale``), where a learner can see it.
The float forward of the returned model quantizes weights only (so its file decodes to
identical outputs); ``simulate_activations`` adds the quantize-dequantize of the inputs.

Real integer inference, two ways:

1. ONNX Runtime, the maintained runtime with int8 CPU kernels: ``to_onnx`` exports the float
   network (the legacy TorchScript exporter, which folds BatchNorm into the convolutions in
   eval mode), ``onnx_int8`` quantizes it with ``onnxruntime.quantization.quantize_static``
   (QDQ format, U8 activations / S8 weights, per channel, calibrated on the same images).
2. From scratch, in torch integer tensors: ``int8_linear`` / ``int8_conv2d`` accumulate
   (q_x - Z_x)(q_w - Z_w) in int32 (eq. 7), add the int32 bias quantized with scale
   S_x * S_w (sec. 2.4), and ``requantize`` by the fixed-point multiplier M = S_x S_w / S_y =
   M0 * 2^-n, M0 an int32 in [2^30, 2^31) (sec. 2.2), rounding as gemmlowp does.
"""
from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import (HistogramObserver, MinMaxObserver,
                                   PerChannelMinMaxObserver)
from torch.nn.utils import parametrize

from ..method import Method, clone_model
from .core import fold, quantizable_layers, quantize_weights, round_ste

WEIGHT_RANGE = {"symmetric": (-127, 127), "asymmetric": (-128, 127)}
ACT_MIN, ACT_MAX = 0, 255                      # uint8 activations
OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}


# ------------------------------------------------------------------ quantization parameters

def weight_qparams(w: torch.Tensor, granularity: str = "per_channel",
                   weights: str = "symmetric") -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) of a weight from torch.ao's observers: one per output channel
    (shape [C]) or, per tensor, one of each (shape [1], broadcast over the channels)."""
    qmin, qmax = WEIGHT_RANGE[weights]
    symmetric = weights == "symmetric"
    if granularity == "per_channel":
        observer = PerChannelMinMaxObserver(
            ch_axis=0, dtype=torch.qint8, quant_min=qmin, quant_max=qmax,
            qscheme=torch.per_channel_symmetric if symmetric else torch.per_channel_affine)
    else:
        observer = MinMaxObserver(
            dtype=torch.qint8, quant_min=qmin, quant_max=qmax,
            qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
    observer(w.detach().float())
    scale, zero_point = observer.calculate_qparams()
    return scale.float().reshape(-1), zero_point.to(torch.int32).reshape(-1)


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


class AffineWeight(nn.Module):
    """Parametrization: weight = (q - zero_point) * scale, q = clamp(round(w / scale) + Z).

    The float weight underneath stays the trainable "shadow" (rounding passes gradients
    straight through), so the same layer serves quantization-aware training. The buffers
    ``input_scale`` / ``input_zero_point`` hold the calibrated range of the layer's input.
    """

    def __init__(self, scale, zero_point, qmin: int, qmax: int):
        super().__init__()
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero_point", zero_point.to(torch.int32))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("input_zero_point", torch.tensor(0, dtype=torch.int32))
        self.qmin, self.qmax = qmin, qmax

    def integers(self, w: torch.Tensor) -> torch.Tensor:
        """q as a float tensor of integers (through the STE)."""
        zero_point = _per_channel(self.zero_point, w)
        return torch.clamp(round_ste(w / _per_channel(self.scale, w)) + zero_point,
                           self.qmin, self.qmax)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # Exactly the decoder's arithmetic, so the stored file is bit-exact.
        return (self.integers(w) - _per_channel(self.zero_point, w)) * _per_channel(self.scale, w)

    def codec_hint(self) -> dict:
        return dict(format="affine", scale=self.scale, zero_point=self.zero_point, bits=8, axis=0)


def affine_parametrization(layer: nn.Module) -> AffineWeight | None:
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((p for p in layer.parametrizations.weight if isinstance(p, AffineWeight)), None)


@torch.no_grad()
def calibrate_activations(model: nn.Module, images: torch.Tensor, observer: str = "minmax",
                          batch_size: int = 64) -> dict[str, tuple[float, int]]:
    """Layer name -> (scale, zero_point) of the uint8 input of every Conv2d / Linear, from a
    torch.ao observer fed by forward pre-hooks while ``model`` runs on ``images``."""
    layers = dict(quantizable_layers(model))
    observers = {name: OBSERVERS[observer](dtype=torch.quint8, quant_min=ACT_MIN,
                                           quant_max=ACT_MAX) for name in layers}
    handles = [layer.register_forward_pre_hook(
        lambda m, args, name=name: observers[name](args[0].detach()))
        for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = {}
    for name, obs in observers.items():
        scale, zero_point = obs.calculate_qparams()
        out[name] = (float(scale), int(zero_point))
    return out


def simulate_activations(model: nn.Module) -> nn.Module:
    """A copy of a quantized model whose Conv2d / Linear inputs are also quantized and
    dequantized to uint8 with their calibrated ranges (what the integer runtime sees).
    The hooks are not part of the state: the file of this copy stores weights only."""
    simulated = clone_model(model)

    def fake_quantize_input(p, args):
        return (torch.fake_quantize_per_tensor_affine(
            args[0], float(p.input_scale), int(p.input_zero_point), ACT_MIN, ACT_MAX),)
    for _, layer in quantizable_layers(simulated):
        p = affine_parametrization(layer)
        if p is not None:
            layer.register_forward_pre_hook(lambda m, args, p=p: fake_quantize_input(p, args))
    return simulated


# ------------------------------------------------------------------ integer arithmetic

def quantize_tensor(x: torch.Tensor, scale, zero_point, qmin: int = ACT_MIN,
                    qmax: int = ACT_MAX, axis: int | None = None) -> torch.Tensor:
    """q = clamp(round(x / scale) + Z, qmin, qmax) as an int32 tensor (round half to even,
    as ONNX QuantizeLinear); ``axis`` for a scale per slice along that dimension."""
    scale, zero_point = torch.as_tensor(scale), torch.as_tensor(zero_point)
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.view(shape), zero_point.view(shape)
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax).to(torch.int32)


def quantize_multiplier(m) -> tuple[torch.Tensor, torch.Tensor]:
    """M = M0 * 2^-shift with M0 an int32 in [2^30, 2^31) (Jacob et al. sec. 2.2): returns
    (M0, shift) as int64 tensors, one per element of ``m`` (0 < M < 1 in practice)."""
    m = torch.as_tensor(m, dtype=torch.float64)
    mantissa, exponent = torch.frexp(m)                 # m = mantissa * 2^exponent, in [0.5, 1)
    m0 = torch.round(mantissa * 2 ** 31).to(torch.int64)
    carry = m0 == 2 ** 31                               # mantissa rounded up to 1.0
    m0 = torch.where(carry, m0 // 2, m0)
    return m0, (-exponent.to(torch.int64) - carry.to(torch.int64))


def requantize(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, zero_point: int,
               qmin: int = ACT_MIN, qmax: int = ACT_MAX, axis: int = 1) -> torch.Tensor:
    """int32 accumulators -> int8/uint8 outputs: round(acc * M0 / 2^31) (gemmlowp's
    SaturatingRoundingDoublingHighMul), then a rounding right shift by ``shift`` (half away
    from zero, RoundingDivideByPOT), plus the output zero point, clamped. ``m0`` / ``shift``
    per output channel along ``axis`` or scalars. Only integer operations."""
    shape = [1] * acc.dim()
    shape[axis] = -1
    m0, shift = (t.view(shape) if t.dim() else t for t in (m0, shift))
    # M >= 1 (rare: an output range narrower than the product's) shifts left first.
    product = (acc.to(torch.int64) << torch.clamp(-shift, min=0)) * m0
    nudge = torch.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = torch.div(product + nudge, 1 << 31, rounding_mode="trunc")
    shift = torch.clamp(shift, min=0)
    mask = (torch.ones_like(shift) << shift) - 1
    threshold = (mask >> 1) + (high < 0).to(torch.int64)
    out = (high >> shift) + ((high & mask) > threshold).to(torch.int64)
    return torch.clamp(out + zero_point, qmin, qmax).to(torch.int32)


def int8_linear(xq, x_zp, wq, w_zp, bias_q=None) -> torch.Tensor:
    """int32 accumulators of a Linear layer: sum_k (xq - Z_x)(wq - Z_w) (+ int32 bias)."""
    acc = (xq.to(torch.int32) - x_zp) @ (wq.to(torch.int32) - _per_channel(
        torch.as_tensor(w_zp, dtype=torch.int32).expand(wq.shape[0]), wq)).t()
    return acc if bias_q is None else acc + bias_q.to(torch.int32)


def int8_conv2d(xq, x_zp, wq, w_zp, bias_q=None, stride=1, padding=0) -> torch.Tensor:
    """int32 accumulators of a Conv2d (groups=1): im2col on integers, then ``int8_linear``.
    Padding uses the input zero point: the quantized value of a real 0."""
    stride, padding = nn.modules.utils._pair(stride), nn.modules.utils._pair(padding)
    kh, kw = wq.shape[2:]
    x = F.pad(xq.to(torch.int32) - x_zp, (padding[1], padding[1], padding[0], padding[0]))
    patches = x.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])   # N, C, OH, OW, kh, kw
    n, c, oh, ow = patches.shape[:4]
    columns = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    acc = int8_linear(columns, 0, wq.reshape(wq.shape[0], -1), w_zp, bias_q)
    return acc.view(n, oh, ow, -1).permute(0, 3, 1, 2)


def quantize_bias(bias: torch.Tensor, x_scale: float, w_scale: torch.Tensor) -> torch.Tensor:
    """int32 bias with scale S_x * S_w and zero point 0 (Jacob et al. sec. 2.4)."""
    return torch.round(bias.double() / (x_scale * w_scale.double())).to(torch.int32)


# ------------------------------------------------------------------ the method

@dataclass
class Int8(Method):
    """8-bit affine weights (per channel or per tensor) and calibrated uint8 activation ranges
    (Jacob et al. 2018); see ``onnx_int8`` for the real integer runtime."""
    id = "quant.int8"
    reference = ("Jacob, Kligys, Chen, Zhu, Tang, Howard, Adam, Kalenichenko 2018, Quantization "
                 "and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference")
    sliders = {"calibration": (16, 2048, 16)}
    needs_data = True
    smoke = {"calibration": 64}

    granularity: str = "per_channel"     # "per_channel" | "per_tensor" (weights)
    weights: str = "symmetric"           # "symmetric" (Z=0, [-127, 127]) | "asymmetric"
    observer: str = "minmax"             # activation observer: "minmax" | "histogram"
    calibration: int = 512               # training images that calibrate activations
    seed: int = 0                        # which calibration images

    def validate(self):
        self._check_choice("granularity", ("per_channel", "per_tensor"))
        self._check_choice("weights", tuple(WEIGHT_RANGE))
        self._check_choice("observer", tuple(OBSERVERS))
        self._check_range("calibration", 1, 50000)
        if not isinstance(self.calibration, int):
            raise ValueError(f"Int8.calibration={self.calibration!r}: allowed is a whole "
                             "number of images from 1 to 50000")
        self._check_range("seed", 0, 2 ** 31 - 1)

    def bits_per_weight(self) -> float:
        return 8.0

    def calibration_images(self, data) -> torch.Tensor:
        if data is None:
            raise ValueError(f"{self.id} calibrates activations: pass the training set as data")
        return data.subset(min(self.calibration, len(data)), seed=self.seed).tensors()[0]

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        images = self.calibration_images(data)
        quantized = clone_model(model).eval()
        qmin, qmax = WEIGHT_RANGE[self.weights]

        def make(name, layer):
            return AffineWeight(*weight_qparams(layer.weight, self.granularity, self.weights),
                                qmin, qmax)
        quantize_weights(quantized, make)
        # Calibrate on the network whose weights are already quantized: its activations are
        # the ones the integer network will produce.
        ranges = calibrate_activations(quantized, images, self.observer)
        for name, layer in quantizable_layers(quantized):
            p = affine_parametrization(layer)
            p.input_scale.fill_(ranges[name][0])
            p.input_zero_point.fill_(ranges[name][1])
        return quantized


# ------------------------------------------------------------------ ONNX Runtime

def folded_copy(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` (parametrizations folded), leaving ``model`` intact.

    A deep copy of a parametrized module shares its generated class ``ParametrizedConv2d``
    with the original, and ``remove_parametrizations`` deletes the ``weight`` property from
    that class: folding the copy would break the original. Each copy gets its own class."""
    plain = clone_model(model)
    for _, layer in quantizable_layers(plain):
        if parametrize.is_parametrized(layer):
            cls = type(layer)
            layer.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return fold(plain).eval()


def to_onnx(model: nn.Module, opset: int = 17) -> bytes:
    """The float network as ONNX bytes (weights inline, batch dimension dynamic).

    Fake quantization is folded into plain weights first. The legacy TorchScript exporter
    (``dynamo=False``) folds each BatchNorm into the convolution before it in eval mode, as
    deployment does before quantizing."""
    plain = folded_copy(model)
    buffer = io.BytesIO()
    torch.onnx.export(plain, (torch.zeros(1, *plain.input_shape),), buffer, dynamo=False,
                      input_names=["input"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    return buffer.getvalue()


def _images(calibration) -> torch.Tensor:
    return calibration.tensors()[0] if hasattr(calibration, "tensors") else calibration


def onnx_int8(model: nn.Module, calibration, granularity: str = "per_channel",
              weights: str = "symmetric", batch_size: int = 64) -> bytes:
    """The network quantized by ``onnxruntime.quantization.quantize_static``, as ONNX bytes.

    QDQ format (ONNX Runtime fuses each DequantizeLinear -> op -> QuantizeLinear into an
    integer kernel such as QLinearConv), uint8 activations and int8 weights, the activation
    ranges min/max-calibrated on ``calibration`` (a Dataset or normalized images) as
    ``calibrate_activations`` does with torch.ao's MinMaxObserver. ONNX Runtime calibrates
    every tensor of its graph itself (also residual sums and logits), so the ranges stored on
    the model (min/max or histogram) serve the torch simulation and the lesson, not this."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    images = _images(calibration).numpy().astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images[i:i + batch_size] for i in range(0, len(images), batch_size))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared, out = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # ONNX Runtime's recommended pre-processing: shape inference and graph optimization.
        quant_pre_process(onnx.load_from_string(to_onnx(model)), prepared)
        quantize_static(prepared, out, Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=granularity == "per_channel",
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": weights == "symmetric",
                                       "ActivationSymmetric": False})
        return out.read_bytes()


def session(onnx_model: bytes, threads: int = 1):
    """An onnxruntime CPU session on ``threads`` intra-op threads, all graph optimizations."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def onnx_accuracy(sess, dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of an onnxruntime session (or ONNX bytes) on a workbench Dataset."""
    sess = session(sess) if isinstance(sess, bytes) else sess
    name = sess.get_inputs()[0].name
    correct = 0
    for x, y in dataset.loader(batch_size):
        logits = sess.run(None, {name: x.numpy()})[0]
        correct += int((torch.from_numpy(logits).argmax(1) == y).sum())
    return correct / len(dataset)


def onnx_latency_ms(onnx_model: bytes, batch: int, threads: int = 1,
                    min_run_time: float = 0.3) -> float:
    """Median wall time (ms) of one onnxruntime run at ``batch`` on ``threads`` threads
    (torch.utils.benchmark around ``session.run``, as ``measure.latency_ms`` for torch)."""
    from torch.utils import benchmark
    sess = session(onnx_model, threads)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((batch, *inp.shape[1:])).astype(np.float32)
    timer = benchmark.Timer(stmt="run(None, feed)",
                            globals={"run": sess.run, "feed": {inp.name: x}})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def ort_qlinear_conv(xq, x_scale, x_zp, wq, w_scale, w_zp, bias_q, y_scale, y_zp,
                     stride=1, padding=0) -> torch.Tensor:
    """One QLinearConv run by onnxruntime on the given integers (uint8 x, int8 per-channel w,
    int32 bias): the runtime's answer for the layer ``int8_conv2d`` + ``requantize`` compute.
    A Linear layer is the 1x1 convolution of (N, C, 1, 1)."""
    from onnx import TensorProto, helper, numpy_helper
    stride, padding = nn.modules.utils._pair(stride), nn.modules.utils._pair(padding)
    consts = {"x_scale": np.float32(x_scale), "x_zp": np.uint8(x_zp),
              "w": wq.numpy().astype(np.int8), "w_scale": w_scale.numpy().astype(np.float32),
              "w_zp": np.zeros(wq.shape[0], np.int8) + np.asarray(w_zp, np.int8),
              "y_scale": np.float32(y_scale), "y_zp": np.uint8(y_zp),
              "b": bias_q.numpy().astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp",
                                            "y_scale", "y_zp", "b"], ["y"],
                            strides=list(stride), pads=[padding[0], padding[1]] * 2,
                            kernel_shape=list(wq.shape[2:]))
    graph = helper.make_graph(
        [node], "qlinearconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    out = session(proto.SerializeToString()).run(None, {"x": xq.numpy().astype(np.uint8)})[0]
    return torch.from_numpy(out.astype(np.int32))


METHODS = (Int8,)
