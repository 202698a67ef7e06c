"""ONNX Runtime, the maintained runtime with int8 CPU kernels, for ``quant.int8``.

``to_onnx`` exports the float network (the legacy TorchScript exporter, which folds BatchNorm
into the convolutions in eval mode); ``onnx_int8`` quantizes it with
``onnxruntime.quantization.quantize_static`` (QDQ format, uint8 activations, int8 weights in
the same range as the model's ``AffineWeight``, calibrated on the same images); ``session``,
``onnx_accuracy``, ``onnx_latency_ms`` and ``compare_onnx`` (interleaved, with its spread) run it. ``ort_qlinear_conv`` and ``ort_qdq_linear``
run ONE layer on given integers: ONNX Runtime's answer to compare with ``int8_kernels``.

``quant.int8`` (``workbench.quantize.int8``) re-exports every function here.
"""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import models
from ..method import clone_model
from .core import fold, quantizable_layers


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
    # attachments compute nothing, and the tracer cannot take their dict extra state
    for path in [p for p, m in plain.named_modules() if isinstance(m, models.Attachment)]:
        parent, _, name = path.rpartition(".")
        delattr(plain.get_submodule(parent), name)
    buffer = io.BytesIO()
    torch.onnx.export(plain, (torch.zeros(1, *plain.input_shape),), buffer, dynamo=False,
                      input_names=["input"], output_names=["logits"], opset_version=opset,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=True)
    return buffer.getvalue()


def _images(calibration) -> torch.Tensor:
    return calibration.tensors()[0] if hasattr(calibration, "tensors") else calibration


def onnx_int8(model: nn.Module, calibration, granularity: str | None = None,
              weights: str | None = None, batch_size: int = 64,
              reduce_range: bool | None = None) -> bytes:
    """The network quantized by ``onnxruntime.quantization.quantize_static``, as ONNX bytes.

    QDQ format (ONNX Runtime fuses each DequantizeLinear -> op -> QuantizeLinear into an
    integer kernel such as QLinearConv or QGemm), uint8 activations and int8 weights, the
    activation ranges min/max-calibrated on ``calibration`` (a Dataset or normalized images)
    as ``calibrate_activations`` does with torch.ao's MinMaxObserver. ``granularity``,
    ``weights`` and ``reduce_range`` default to how ``model``'s layers were quantized
    (``quantization_settings``): ``reduce_range=True`` is ONNX Runtime's flag for weights in
    [-64, 64], the integers ``Int8(reduce_range=True)`` stores, exact on every x86 CPU.
    ONNX Runtime calibrates every tensor of its graph itself (also residual sums and logits),
    so the ranges stored on the model (min/max or histogram) serve the torch simulation and
    the lesson, not this."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .int8 import quantization_settings
    settings = quantization_settings(model)
    granularity = granularity or settings["granularity"]
    weights = weights or settings["weights"]
    reduce_range = settings["reduce_range"] if reduce_range is None else reduce_range
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
                        reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"WeightSymmetric": weights == "symmetric",
                                       "ActivationSymmetric": False})
        return out.read_bytes()


def session(onnx_model: bytes, threads: int = 1, optimized_path: str | None = None):
    """An onnxruntime CPU session on ``threads`` intra-op threads, all graph optimizations
    (``optimized_path``: where to write the optimized graph, e.g. to see the fused kernels)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path is not None:     # the level that fuses QDQ and is not CPU-specific
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = optimized_path
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def fused_ops(onnx_model: bytes) -> list[str]:
    """The operators ONNX Runtime runs after fusing the QDQ graph (e.g. QLinearConv, QGemm)."""
    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        session(onnx_model, optimized_path=path)
        return [n.op_type for n in onnx.load(path).graph.node]


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


def compare_onnx(onnx_model: bytes, base: bytes, batch: int = 64, threads: int = 1,
                 pairs: int = 30, block_time: float | None = None):
    """How many times faster ``onnx_model`` runs than ``base`` in ONNX Runtime (a
    ``timing.Comparison``): both sessions on ``threads`` intra-op threads (a session option),
    fed the same input of ``batch`` images, their ``run`` timed interleaved by
    ``timing.compare_calls``, so the ratio comes with its spread (two separately taken
    medians, as ``onnx_latency_ms`` gives, would carry the machine's drift between them)."""
    from .. import timing
    fast, reference = session(onnx_model, threads), session(base, threads)
    inp = reference.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((batch, *inp.shape[1:])).astype(np.float32)
    feed = {inp.name: x}
    options = {} if block_time is None else {"block_time": block_time}
    return timing.compare_calls(lambda: fast.run(None, feed), lambda: reference.run(None, feed),
                                threads=threads, pairs=pairs, batch=batch, **options)


def cpu_vnni() -> bool | None:
    """Whether this CPU has a VNNI dot product (u8 x s8 products accumulated in int32, no
    int16 saturation: see ``pair_sum_bound``); None where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else any("vnni" in flag for flag in flags)


def _layer_model(nodes, consts: dict) -> bytes:
    """ONNX bytes of a one-input (uint8 ``x``), one-output (uint8 ``y``) graph of ``nodes``."""
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.UINT8, None)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    return proto.SerializeToString()


def _run_layer(onnx_model: bytes, xq: torch.Tensor) -> torch.Tensor:
    out = session(onnx_model).run(None, {"x": xq.numpy().astype(np.uint8)})[0]
    return torch.from_numpy(out.astype(np.int32))


def _consts(x_scale, x_zp, wq, w_scale, w_zp, y_scale, y_zp) -> dict:
    channels = wq.shape[0]            # a per-tensor scale is the same scale on every channel
    return {"x_scale": np.float32(x_scale), "x_zp": np.uint8(x_zp),
            "w": wq.numpy().astype(np.int8),
            "w_scale": np.zeros(channels, np.float32) + w_scale.numpy().astype(np.float32),
            "w_zp": np.zeros(channels, np.int8) + np.asarray(w_zp, np.int8),
            "y_scale": np.float32(y_scale), "y_zp": np.uint8(y_zp)}


def ort_qlinear_conv(xq, x_scale, x_zp, wq, w_scale, w_zp, bias_q, y_scale, y_zp,
                     stride=1, padding=0) -> torch.Tensor:
    """One QLinearConv run by onnxruntime on the given integers (uint8 x, int8 per-channel w,
    int32 bias): the runtime's answer for the layer ``int8_conv2d`` + ``requantize`` compute.
    A Linear layer is the 1x1 convolution of (N, C, 1, 1)."""
    from onnx import helper
    stride, padding = nn.modules.utils._pair(stride), nn.modules.utils._pair(padding)
    consts = _consts(x_scale, x_zp, wq, w_scale, w_zp, y_scale, y_zp)
    consts["b"] = bias_q.numpy().astype(np.int32)
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp",
                                            "y_scale", "y_zp", "b"], ["y"],
                            strides=list(stride), pads=[padding[0], padding[1]] * 2,
                            kernel_shape=list(wq.shape[2:]))
    return _run_layer(_layer_model([node], consts), xq)


def qdq_linear_model(x_scale, x_zp, wq, w_scale, w_zp, bias_q, y_scale, y_zp) -> bytes:
    """A Linear layer in QDQ form, as ``quantize_static`` writes it: DequantizeLinear of the
    uint8 input x, of w (per channel) and of the int32 bias (scale S_x S_w), Gemm, then
    QuantizeLinear of y. ONNX Runtime fuses the whole into one QGemm integer kernel."""
    from onnx import helper
    consts = _consts(x_scale, x_zp, wq, w_scale, w_zp, y_scale, y_zp)
    consts.update(b=bias_q.numpy().astype(np.int32),
                  b_scale=np.float32(x_scale) * consts["w_scale"],
                  b_zp=np.zeros(wq.shape[0], np.int32))
    nodes = [helper.make_node("DequantizeLinear", ["x", "x_scale", "x_zp"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zp"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zp"], ["bf"], axis=0),
             helper.make_node("Gemm", ["xf", "wf", "bf"], ["yf"], transB=1),
             helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zp"], ["y"])]
    return _layer_model(nodes, consts)


def ort_qdq_linear(xq, x_scale, x_zp, wq, w_scale, w_zp, bias_q, y_scale, y_zp
                   ) -> torch.Tensor:
    """A Linear layer (xq: N x K uint8, wq: C x K int8) run by onnxruntime from its QDQ
    graph (``qdq_linear_model``), i.e. by the fused QGemm kernel deployed models use."""
    return _run_layer(qdq_linear_model(x_scale, x_zp, wq, w_scale, w_zp, bias_q, y_scale,
                                       y_zp), xq)
