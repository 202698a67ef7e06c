"""``python -m workbench bench quantization_int8``: 8-bit post-training quantization
(quant.int8, Jacob et al. 2018) of CIFAR-10 zoo models, run by a real integer runtime.

For vgg_small and resnet20 (LeNet-5 on MNIST in smoke runs): test accuracy of the float
network and of its int8 version in ONNX Runtime (QDQ, uint8 activations, int8 per-channel
weights in [-64, 64], the method's default ``reduce_range``, calibrated on training images),
beside the torch simulations (weights only; weights and activations); the int8 speedup over
fp32 IN THE SAME RUNTIME (onnxruntime fp32 against onnxruntime int8) at batch 64 on 1 and 2
threads, the two sessions' ``run`` timed interleaved by ``workbench.timing.compare_calls`` (30
pairs, 6 with ``--smoke``): the median per-pair ratio fp32 / int8, its interquartile range,
"no measurable change" when that range includes 1. ONNX Runtime's threads are a session
option: each session is built with ``intra_op_num_threads`` = the row's thread count (and one
inter-op thread), the count ``compare_calls`` is given and records (``ort_threads``); the
torch setting it also fixes plays no part in a session's run. The ONNX file bytes (and its
tensors alone: a small network's file carries ~50 KB of graph framing) and the workbench file
bytes (``codec.encode``, int8 + scales), fp32 against int8; "met" uses the workbench file.

Side by side, in the same run, the full int8 weight range (``reduce_range=False``, [-127, 127]):
its accuracy and speedup (``*_full_range``). On x86 without VNNI (``cpu_vnni`` False) its
integers are NOT the exact ones (int16 saturation in the u8 x s8 kernels, see
``workbench.quantize.int8``); both use the same kernels, so their speeds should match.

Targets, the issue's: accuracy within 0.5 points of fp32, >= 1.5x faster at batch 64, model
bytes about 4x smaller. The speed target is met when, on every thread count, the median
speedup is at least 1.5 and significant (its interquartile range excludes 1); the range
itself need not lie above 1.5. Beside them Jacob et al. 2018: "close to 4x memory footprint
reduction" (abstract); ImageNet ResNet-50 76.4% float -> 74.9% integer-only (Table 4.1,
with quantization-aware training, on ARM CPUs).
"""
from __future__ import annotations

import time

BATCH = 64
THREADS = (1, 2)
PAPER = "Jacob et al.: ~4x smaller; ResNet-50 ImageNet 76.4% -> 74.9% (QAT, ARM)"


def onnx_comparisons(fp32: bytes, int8: dict[str, bytes], batch: int, threads: int,
                     pairs: int = 30) -> dict:
    """Name -> ``timing.Comparison``: how many times faster each int8 model of ``int8`` runs
    than ``fp32`` in ONNX Runtime at ``batch``, each pair of sessions on ``threads`` intra-op
    threads (a session option, so the sessions are built with it), timed interleaved."""
    from ..quantize.int8 import compare_onnx
    out = {}
    for name, blob in int8.items():
        out[name] = compare_onnx(blob, fp32, batch, threads, pairs)
    return out


def tensor_bytes(onnx_model: bytes) -> int:
    """Bytes of the ONNX file's weights and constants alone (the rest is graph framing)."""
    import onnx
    return sum(onnx.numpy_helper.to_array(t).nbytes
               for t in onnx.load_from_string(onnx_model).graph.initializer)


def rows(smoke: bool = False) -> list[dict]:
    from .. import zoo
    names = ["lenet5"] if smoke else [n for n in ("vgg_small", "resnet20") if n in zoo.manifest()]
    return [model_row(name, smoke) for name in names]


def model_row(name: str, smoke: bool = False, calibration: int = 512) -> dict:
    """The figures for zoo model ``name``."""
    import torch

    from .. import codec, data, measure, zoo
    from ..quantize import int8
    from ..train import evaluate

    dataset = zoo.dataset_of(name)
    train, test = data.load(dataset, "train"), data.load(dataset, "test")
    if smoke:
        test, calibration = test.subset(500, seed=0), 64
    base = zoo.pretrained(name)
    method = int8.Int8(calibration=calibration)
    start = time.time()
    quantized = method.apply(base, train)
    fp32_onnx = int8.to_onnx(base)
    int8_onnx = int8.onnx_int8(quantized, method.calibration_images(train))
    seconds = time.time() - start
    full_method = int8.Int8(calibration=calibration, reduce_range=False)
    full_onnx = int8.onnx_int8(full_method.apply(base, train),
                               full_method.calibration_images(train))

    acc_fp32 = int8.onnx_accuracy(fp32_onnx, test)
    acc_int8 = int8.onnx_accuracy(int8_onnx, test)
    acc_full = int8.onnx_accuracy(full_onnx, test)
    row = {"bench": f"int8 post-training, {name}, ONNX Runtime", "model": name,
           "calibration_images": calibration, "quantize_s": round(seconds, 1),
           "acc_fp32": round(acc_fp32, 4), "acc_int8": round(acc_int8, 4),
           "loss_points": round(100 * (acc_fp32 - acc_int8), 2),
           "acc_int8_full_range": round(acc_full, 4),
           "loss_points_full_range": round(100 * (acc_fp32 - acc_full), 2),
           "acc_torch_fp32": round(evaluate(base, test), 4),
           "acc_torch_weights_int8": round(evaluate(quantized, test), 4),
           "acc_torch_simulated_int8": round(evaluate(int8.simulate_activations(quantized),
                                                      test), 4)}
    speed_met = []
    for threads in THREADS:
        c = onnx_comparisons(fp32_onnx, {"int8": int8_onnx, "full": full_onnx}, BATCH, threads,
                             6 if smoke else 30)
        speed_met.append(c["int8"].significant and c["int8"].speedup >= 1.5)
        row[f"ms_fp32_{threads}t"] = round(c["int8"].b_ms, 2)
        for key, suffix in (("int8", ""), ("full", "_full_range")):
            row.update({f"ms_int8{suffix}_{threads}t": round(c[key].a_ms, 2),
                        f"speedup{suffix}_{threads}t": c[key].speedup,
                        f"speedup{suffix}_{threads}t_iqr": list(c[key].spread),
                        f"speedup{suffix}_{threads}t_display": c[key].display})
        row[f"load_avg_{threads}t"] = c["int8"].load_avg
    row.update(ort_threads=list(THREADS), pairs=6 if smoke else 30)
    row["ms_torch_fp32_1t"] = round(measure.latency_ms(base, base.input_shape, BATCH, 1), 2)
    file_fp32, file_int8 = len(codec.encode(base)), len(codec.encode(quantized))
    row.update({
        "onnx_bytes_fp32": len(fp32_onnx), "onnx_bytes_int8": len(int8_onnx),
        "onnx_bytes_x": round(len(fp32_onnx) / len(int8_onnx), 2),
        "onnx_tensor_bytes_x": round(tensor_bytes(fp32_onnx) / tensor_bytes(int8_onnx), 2),
        "file_bytes_fp32": file_fp32, "file_bytes_int8": file_int8,
        "file_bytes_x": round(file_fp32 / file_int8, 2),
        "target": "<=0.5 pt loss, >=1.5x at batch 64, ~4x smaller",
        "paper": PAPER,
        # speed: on every thread count, median >= 1.5x and significant
        "met": acc_fp32 - acc_int8 <= 0.005 and all(speed_met)
        and file_fp32 / file_int8 >= 3.5,
        "batch": BATCH, "test_images": len(test), "torch_threads": torch.get_num_threads(),
        "cpu_vnni": int8.cpu_vnni(),
    })
    return row
