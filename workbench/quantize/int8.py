"""8-bit affine quantization with calibrated activations, and real integer inference
(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference").

A real number is ``r = S * (q - Z)``: a float scale ``S`` and an integer zero point ``Z``
(eq. 1 of the paper). What we chose, following what deployments do (the TFLite int8 spec,
TensorRT, ONNX Runtime's x86 CPU recommendation "U8S8"):

- weights: int8, *symmetric* (Z = 0), one scale per output channel
  (``granularity="per_channel"``) or per tensor; ``weights="asymmetric"`` adds a zero point,
  for comparison. The range: ``reduce_range=True`` (the default) keeps the integers in
  [-64, 64], S = max|w| / 64, what ONNX Runtime's quantizer writes with its flag of the same
  name (it calls it 7-bit); ``reduce_range=False`` gives the full [-127, 127], S = max|w| / 127
  ([-128, 127] asymmetric). The scale comes from torch.ao's ``PerChannelMinMaxObserver`` /
  ``MinMaxObserver`` given that range; ``onnxruntime.quantization`` computes the same scales and
  integers from the same settings, so a layer quantizes identically in both (except
  ``weights="asymmetric"`` per channel: ONNX Runtime writes every per-channel weight symmetric,
  its QLinear kernels taking one zero point per tensor). A convolution is
  quantized before its BatchNorm: per channel that equals quantizing the BN-folded weight (BN
  scales each output channel), which is what the runtimes do.
- activations: uint8, asymmetric, per tensor, calibrated on ``calibration`` training images
  with torch.ao's ``MinMaxObserver`` or ``HistogramObserver`` (it picks the range that
  minimizes the quantization error, clipping outliers).

Why weights in [-64, 64] by default: on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI),
ONNX Runtime's u8 x s8 kernels multiply with ``vpmaddubsw``, which adds two neighbouring
products u8 * s8 into ONE int16 that saturates at 32,767 before the int32 accumulation.
Inputs up to 255 times weights up to 127 make pairs up to 64,770: the runtime's int32 sums are
then wrong, not merely rounded (LeNet-300-100's first layer on MNIST test digits: about 30% of
its outputs off, by up to about 50 steps). With |q_w| <= 64 a pair is at most 2 * 255 * 64 =
32,640 (``pair_sum_bound``), so ONNX Runtime's integers are the exact ones on every CPU (VNNI's
``vpdpbusd`` adds four products straight into int32), for half the weight resolution. torch.ao
meets the same instruction in fbgemm and halves the other factor: its x86 qconfig observes
*activations* in 7 bits, [0, 127] ("to ensure that the vpmaddubsw instruction does not
overflow", observer.py); ONNX Runtime's quantizer reduces only weights. int8 activations are
no way out on x86: ONNX Runtime turns int8 QDQ activations into uint8 (plus 128) before its
kernels, unless the session sets ``session.qdqisint8allowed``.

``apply`` returns the same network with every Conv2d / Linear weight fake-quantized by the
parametrization ``AffineWeight``: its forward computes exactly ``(q - zero_point) * scale``,
and ``codec_hint()`` lets ``codec.encode`` store the integers (8 bits: [-64, 64] has 129
levels) + scales. It is NOT folded, because the runtime needs more than the weights: the
calibrated range of each layer's input is kept on the same parametrization as the buffers
``input_scale`` / ``input_zero_point`` (in the state dict as
``<layer>.parametrizations.weight.0.input_scale``), where a learner can see it. The float
forward of the returned model quantizes weights only (so its file decodes to identical
outputs); ``simulate_activations`` adds the quantize-dequantize of the inputs.

Real integer inference, two ways:

1. ONNX Runtime, the maintained runtime with int8 CPU kernels (``int8_onnx``): ``to_onnx``
   exports the float network, ``onnx_int8`` quantizes it with ``quantize_static`` (QDQ, U8
   activations / S8 weights in the model's range, per channel, calibrated on the same images).
2. From scratch, in torch integer tensors (``int8_kernels``): ``int8_linear`` / ``int8_conv2d``
   accumulate (q_x - Z_x)(q_w - Z_w) in int32 (eq. 7), add the int32 bias quantized with scale
   S_x * S_w (sec. 2.4), and ``requantize`` by the fixed-point multiplier M = S_x S_w / S_y =
   M0 * 2^-n, M0 an int32 in [2^30, 2^31) (sec. 2.2), rounding as gemmlowp does.

Both are importable from here (``int8.int8_linear``, ``int8.onnx_int8`` ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.ao.quantization import (HistogramObserver, MinMaxObserver,
                                   PerChannelMinMaxObserver)
from torch.nn.utils import parametrize

from ..hooks import hooked
from ..method import Choice, Flag, Int, Method, Tags, clone_model, knob
from .core import quantizable_layers, quantize_weights, round_ste
from .int8_kernels import (ACT_MAX, ACT_MIN, INT16_MAX, _per_channel, int8_conv2d,  # noqa: F401
                           int8_linear, pair_sum_bound, quantize_bias, quantize_multiplier,
                           quantize_tensor, requantize)
from .int8_onnx import (compare_onnx, cpu_vnni, folded_copy, fused_ops, onnx_accuracy,  # noqa: F401
                        onnx_int8,
                        onnx_latency_ms, ort_qdq_linear, ort_qlinear_conv, qdq_linear_model,
                        session, to_onnx)

WEIGHT_RANGE = {"symmetric": (-127, 127), "asymmetric": (-128, 127)}   # full 8 bits
REDUCED_RANGE = (-64, 64)       # ONNX Runtime's reduce_range for int8, symmetric or not
OBSERVERS = {"minmax": MinMaxObserver, "histogram": HistogramObserver}


# ------------------------------------------------------------------ quantization parameters

def weight_range(weights: str = "symmetric", reduce_range: bool = True) -> tuple[int, int]:
    """(qmin, qmax) of the weight integers: [-64, 64] with ``reduce_range`` (ONNX Runtime's
    range, safe from int16 saturation, see the module docstring), else the full int8 range."""
    if weights not in WEIGHT_RANGE:
        raise ValueError(f"weights={weights!r}; allowed: {', '.join(map(repr, WEIGHT_RANGE))}")
    return REDUCED_RANGE if reduce_range else WEIGHT_RANGE[weights]


def weight_qparams(w: torch.Tensor, granularity: str = "per_channel",
                   weights: str = "symmetric", reduce_range: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) of a weight from torch.ao's observers on ``weight_range``: one per
    output channel (shape [C]) or, per tensor, one of each (shape [1], broadcast over the
    channels). Symmetric: S = max|w| / qmax."""
    qmin, qmax = weight_range(weights, reduce_range)
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
        # The bits the integers need: 8 for [-64, 64] (129 levels), [-127, 127] or [-128, 127].
        bits = (self.qmax - self.qmin).bit_length()
        return dict(format="affine", scale=self.scale, zero_point=self.zero_point, bits=bits,
                    axis=0)


def affine_parametrization(layer: nn.Module) -> AffineWeight | None:
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    return next((p for p in layer.parametrizations.weight if isinstance(p, AffineWeight)), None)


def quantization_settings(model: nn.Module) -> dict:
    """How ``model``'s weights were quantized, as the arguments of ``onnx_int8``: per channel
    if any layer has several scales, ``reduce_range`` if the integers are in [-64, 64],
    symmetric if every zero point is 0 (an asymmetric layer with zero points 0 has the same
    scales and integers). A model without ``AffineWeight`` layers gets ``Int8``'s defaults."""
    found = [p for _, layer in quantizable_layers(model)
             if (p := affine_parametrization(layer)) is not None]
    if not found:
        return {"granularity": Int8.granularity, "weights": Int8.weights,
                "reduce_range": Int8.reduce_range}
    return {"granularity": "per_channel" if any(p.scale.numel() > 1 for p in found)
            else "per_tensor",
            "weights": "symmetric" if all(not p.zero_point.any() for p in found)
            else "asymmetric",
            "reduce_range": all((p.qmin, p.qmax) == REDUCED_RANGE for p in found)}


@torch.no_grad()
def calibrate_activations(model: nn.Module, images: torch.Tensor, observer: str = "minmax",
                          batch_size: int = 64) -> dict[str, tuple[float, int]]:
    """Layer name -> (scale, zero_point) of the uint8 input of every Conv2d / Linear, from a
    torch.ao observer fed by forward pre-hooks while ``model`` runs on ``images``."""
    layers = dict(quantizable_layers(model))
    observers = {name: OBSERVERS[observer](dtype=torch.quint8, quant_min=ACT_MIN,
                                           quant_max=ACT_MAX) for name in layers}
    def observe(module, args, name):
        observers[name](args[0].detach())

    with hooked(model, {name: observe for name in layers}, pre=True):
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
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


# ------------------------------------------------------------------ the method

@dataclass
class Int8(Method):
    """8-bit affine weights (per channel or per tensor, in [-64, 64] unless ``reduce_range``
    is False) and calibrated uint8 activation ranges (Jacob et al. 2018); see ``onnx_int8``
    for the real integer runtime."""
    id = "quant.int8"
    reference = ("Jacob, Kligys, Chen, Zhu, Tang, Howard, Adam, Kalenichenko 2018, Quantization "
                 "and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference")
    sliders = {"calibration": (16, 2048, 16)}
    smoke = {"calibration": 64}
    effects = ("fewer_bytes", "different_outputs")

    granularity: str = knob("per_channel", Choice(("per_channel", "per_tensor")))  # weights
    weights: str = knob("symmetric", Choice(tuple(WEIGHT_RANGE)))   # symmetric: Z = 0
    observer: str = knob("minmax", Choice(tuple(OBSERVERS)))    # activation observer
    calibration: int = knob(512, Int(1, 50000))   # training images that calibrate activations
    seed: int = knob(0, Int(0, 2**31 - 1))         # which calibration images
    # Weights in [-64, 64]: ONNX Runtime's integers are exact on every CPU. False: the full
    # int8 range, exact on VNNI CPUs, saturating int16 pairs on x86 without VNNI (AVX2).
    reduce_range: bool = knob(True, Flag())

    def tags(self) -> Tags:
        return Tags(needs_data=True, bits_per_weight=8.0)

    def calibration_images(self, data) -> torch.Tensor:
        if data is None:
            raise ValueError(f"{self.id} calibrates activations: pass the training set as data")
        return data.subset(min(self.calibration, len(data)), seed=self.seed).tensors()[0]

    def compress(self, quantized: nn.Module, data=None) -> nn.Module:
        images = self.calibration_images(data)
        quantized.eval()
        qmin, qmax = weight_range(self.weights, self.reduce_range)

        def make(name, layer):
            return AffineWeight(*weight_qparams(layer.weight, self.granularity, self.weights,
                                                self.reduce_range), qmin, qmax)
        quantize_weights(quantized, make)
        # Calibrate on the network whose weights are already quantized: its activations are
        # the ones the integer network will produce.
        ranges = calibrate_activations(quantized, images, self.observer)
        for name, layer in quantizable_layers(quantized):
            p = affine_parametrization(layer)
            p.input_scale.fill_(ranges[name][0])
            p.input_zero_point.fill_(ranges[name][1])
        return quantized


METHODS = (Int8,)
