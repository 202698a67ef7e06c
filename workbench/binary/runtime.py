"""The same binary convolution run by a maintained runtime with real 1-bit kernels: OpenVINO.

OpenVINO's ``BinaryConvolution`` (opset1, mode "xnor-popcount") computes, per output,
2 * popcount(XNOR(patch bits, filter bits)) - K = K - 2 * popcount(XOR): the arithmetic of our
numpy kernel (``kernels.py``). On x86 its CPU plugin runs it with a JIT 1-bit kernel
(``primitive()`` names it, e.g. "jit_avx2_u1"). The float model of the same shape is an
ordinary ``Convolution`` with the +-1 weights, so the two can be timed in one runtime.

How the inputs are given (each learned by getting it wrong, see FIELD-NOTES):

- weights are a u1 constant: the sign bits packed with ``np.packbits(..., bitorder="little")``
  (the first element in the lowest bit; big-endian packing gives wrong results);
- activations enter as floats 0 / 1 meaning -1 / +1 (``to_bits``; the runtime packs them);
  making them is not part of a timed ``run()``, as in a binary network it is the previous
  layer's output step;
- padding is ``pad_value=-1``: a 1-bit activation has no 0 (see ``kernels.binary_conv2d``);
- input channels must be a multiple of 8 (``CHANNEL_MULTIPLE``): with others the CPU plugin
  gave wrong sums, so ``binary_conv`` refuses them (a network's first layer, 3 channels, stays
  float in binary networks anyway);
- the numpy array behind an ``ov.Tensor`` made with shared memory must outlive it (a temporary
  gave garbage): ``Compiled`` keeps every such array.

Each model is compiled for a fixed number of inference threads with the latency hint (one
stream), so a timing states its thread count.
"""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset1 as ops

from .kernels import _numpy

_CORE: ov.Core | None = None
CHANNEL_MULTIPLE = 8    # input channels the CPU plugin's 1-bit kernel handles exactly


def core() -> ov.Core:
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def config(threads: int) -> dict:
    if threads < 1:
        raise ValueError(f"threads={threads}; allowed: 1 or more")
    # f32 stated: on a CPU with bf16 units OpenVINO may otherwise run the float model in bf16
    # (seen in a fresh-clone CI run), and the float reference would not be float32
    return {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"}


def to_bits(x) -> np.ndarray:
    """Real activations -> the 0/1 floats BinaryConvolution reads (1 where x >= 0, i.e.
    sign(x) = +1 with sign(0) = +1, as ``core.sign`` and ``kernels.pack_signs``)."""
    return np.ascontiguousarray(_numpy(x) >= 0, dtype=np.float32)


class Compiled:
    """One compiled single-layer model with its infer request.

    ``bind(x)`` prepares ``x`` (0/1 bits for the binary model) and sets it as the input without
    a copy; ``run()`` infers on the bound input and returns the output buffer (overwritten by
    the next run); ``model(x)`` does both and returns a copy.
    """

    def __init__(self, model: ov.Model, threads: int, prepare, keep: list):
        self.compiled = core().compile_model(model, "CPU", config(threads))
        self.request = self.compiled.create_infer_request()
        self.threads, self.prepare, self.keep = threads, prepare, keep
        self._bound: list = []

    def bind(self, x) -> None:
        array = self.prepare(x)
        tensor = ov.Tensor(array, shared_memory=True)
        self._bound = [array, tensor]          # the array must outlive the tensor
        self.request.set_input_tensor(tensor)

    def run(self) -> np.ndarray:
        self.request.infer()
        return self.request.get_output_tensor(0).data

    def __call__(self, x) -> np.ndarray:
        self.bind(x)
        return self.run().copy()

    def primitive(self, layer_type: str) -> str:
        """The kernel the plugin chose for the layer of ``layer_type`` (e.g. "jit_avx2_u1")."""
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == layer_type:
                return info["primitiveType"].astype(str)
        raise KeyError(f"no {layer_type} layer in the compiled model")


def _scaled(node, alpha, out_channels: int):
    """Multiply by a scale per output channel after the convolution (a float step)."""
    if alpha is None:
        return node
    alpha = _numpy(alpha).astype(np.float32).reshape(-1)
    if alpha.size != out_channels:
        raise ValueError(f"alpha has {alpha.size} values for {out_channels} outputs")
    return ops.multiply(node, ops.constant(alpha.reshape(1, -1, 1, 1)))


def _check(weight: np.ndarray, input_shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if weight.ndim != 4 or len(shape) != 4 or shape[1] != weight.shape[1]:
        raise ValueError(f"input shape {shape} for a conv weight of shape {weight.shape}")
    return shape


def binary_conv(weight, input_shape, stride: int = 1, padding: int = 1, threads: int = 1,
                alpha=None) -> Compiled:
    """sign(weight) (O, C, kh, kw) as OpenVINO's 1-bit BinaryConvolution on inputs of
    ``input_shape`` (B, C, H, W), -1 padding, an optional scale per output channel after."""
    w = _numpy(weight)
    shape = _check(w, input_shape)
    if shape[1] % CHANNEL_MULTIPLE:
        # measured with OpenVINO 2026.4 on AVX2: other channel counts give wrong sums even for
        # 1x1 filters of all +1 (the activations' bits are misread), so they are refused
        raise ValueError(f"{shape[1]} input channels; OpenVINO's CPU BinaryConvolution is "
                         f"exact only for a multiple of {CHANNEL_MULTIPLE}")
    bits = np.packbits((w >= 0).ravel(), bitorder="little")
    packed = ov.Tensor(ov.Type.u1, ov.Shape(list(w.shape)))
    packed.data[:] = bits
    x = ops.parameter(list(shape), np.float32, name="bits")
    y = ops.binary_convolution(x, ov.op.Constant(packed), [stride] * 2, [padding] * 2,
                               [padding] * 2, [1, 1], "xnor-popcount", -1.0)
    model = ov.Model([_scaled(y, alpha, w.shape[0])], [x], "binary_conv")
    return Compiled(model, threads, to_bits, [bits, packed])


def float_conv(weight, input_shape, stride: int = 1, padding: int = 1, threads: int = 1,
               alpha=None, pad_value: float = 0.0, signs: bool = True) -> Compiled:
    """The float Convolution of the same shape in the same runtime, with sign(weight) (or the
    weight itself when ``signs`` is False). ``pad_value=-1`` pads explicitly first (a Pad
    node), which makes it the exact float computation of ``binary_conv``; 0 is the float
    network's own padding (the cheaper, usual float layer)."""
    w = _numpy(weight).astype(np.float32)
    shape = _check(w, input_shape)
    w = np.where(w >= 0, 1.0, -1.0).astype(np.float32) if signs else w
    x = ops.parameter(list(shape), np.float32, name="x")
    source, pads = x, [padding] * 2
    if pad_value != 0.0 and padding:
        begin = ops.constant(np.array([0, 0, padding, padding], np.int64))
        source = ops.pad(x, begin, begin, "constant", ops.constant(np.float32(pad_value)))
        pads = [0, 0]
    y = ops.convolution(source, ops.constant(w), [stride] * 2, pads, pads, [1, 1])
    model = ov.Model([_scaled(y, alpha, w.shape[0])], [x], "float_conv")
    return Compiled(model, threads, lambda a: np.ascontiguousarray(_numpy(a), np.float32), [w])
