"""``python -m workbench bench quantization_int8``: 8-bit post-training quantization
(quant.int8, Jacob et al. 2018) of CIFAR-10 zoo models, run by a real integer runtime.

For vgg_small and resnet20 (LeNet-5 on MNIST in smoke runs): test accuracy of the float
network and of its int8 version in ONNX Runtime (QDQ, uint8 activations, int8 per-channel
weights, calibrated on training images), beside the torch simulations (weights only; weights
and activations); the int8 speedup over fp32 IN THE SAME RUNTIME (onnxruntime fp32 against
onnxruntime int8) at batch 64 on 1 and 2 threads, the two timed alternately and the fastest
of each kept (as ``pruning_reconstruct.latency_ratio``); the ONNX file bytes (and its
tensors alone: a small network's file carries ~50 KB of graph framing) and the workbench file
bytes (``codec.encode``, int8 + scales), fp32 against int8; "met" uses the workbench file.

Targets, the issue's: accuracy within 0.5 points of fp32, >= 1.5x faster at batch 64, model
bytes about 4x smaller. Beside them Jacob et al. 2018: "close to 4x memory footprint
reduction" (abstract); ImageNet ResNet-50 76.4% float -> 74.9% integer-only (Table 4.1,
with quantization-aware training, on ARM CPUs).
"""
from __future__ import annotations

import time

BATCH = 64
THREADS = (1, 2)
PAPER = "Jacob et al.: ~4x smaller; ResNet-50 ImageNet 76.4% -> 74.9% (QAT, ARM)"


def onnx_speedup(fp32: bytes, int8: bytes, batch: int, threads: int, rounds: int = 3
                 ) -> tuple[float, float, float]:
    """(fp32 ms, int8 ms, speedup): both sessions timed alternately ``rounds`` times and the
    fastest of each kept, since other work on a shared machine only ever adds time."""
    from ..quantize.int8 import onnx_latency_ms
    times = [(onnx_latency_ms(fp32, batch, threads), onnx_latency_ms(int8, batch, threads))
             for _ in range(rounds)]
    best_fp32, best_int8 = min(t[0] for t in times), min(t[1] for t in times)
    return best_fp32, best_int8, best_fp32 / best_int8


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

    acc_fp32 = int8.onnx_accuracy(fp32_onnx, test)
    acc_int8 = int8.onnx_accuracy(int8_onnx, test)
    row = {"bench": f"int8 post-training, {name}, ONNX Runtime", "model": name,
           "calibration_images": calibration, "quantize_s": round(seconds, 1),
           "acc_fp32": round(acc_fp32, 4), "acc_int8": round(acc_int8, 4),
           "loss_points": round(100 * (acc_fp32 - acc_int8), 2),
           "acc_torch_fp32": round(evaluate(base, test), 4),
           "acc_torch_weights_int8": round(evaluate(quantized, test), 4),
           "acc_torch_simulated_int8": round(evaluate(int8.simulate_activations(quantized),
                                                      test), 4)}
    speedups = []
    for threads in THREADS:
        fp32_ms, int8_ms, speedup = onnx_speedup(fp32_onnx, int8_onnx, BATCH, threads,
                                                 1 if smoke else 3)
        speedups.append(speedup)
        row.update({f"ms_fp32_{threads}t": round(fp32_ms, 2),
                    f"ms_int8_{threads}t": round(int8_ms, 2),
                    f"speedup_{threads}t": round(speedup, 2)})
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
        "met": acc_fp32 - acc_int8 <= 0.005 and min(speedups) >= 1.5
        and file_fp32 / file_int8 >= 3.5,
        "batch": BATCH, "test_images": len(test), "torch_threads": torch.get_num_threads(),
    })
    return row
