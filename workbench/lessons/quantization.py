"""Lessons 02a and 02b: codebooks, and trained low-bit and int8."""
from __future__ import annotations

import torch

from .. import METHODS
from ..method import Method, layers_of
from ..train import evaluate


# the smoke settings that size data or training; a smoke run takes only these from a method
SMOKE_SIZE_KNOBS = ("epochs", "calibration", "images", "samples", "sweeps")


def configured_sized(method_id: str, smoke: bool = False, **lesson) -> Method:
    """``METHODS[method_id]`` with the lesson's settings. In a smoke run the method's
    ``smoke`` settings apply only where they size the data or the training
    (``SMOKE_SIZE_KNOBS``) and the lesson does not set them: the knobs a comparison is about
    (``k``, ``subvector``, ``max_bits``, ...) stay the lesson's."""
    if method_id not in METHODS:
        raise ValueError(f"unknown method {method_id!r}; allowed: {sorted(METHODS)}")
    cls = METHODS[method_id]
    sizes = {k: v for k, v in (cls.smoke if smoke else {}).items() if k in SMOKE_SIZE_KNOBS}
    return cls(**{**sizes, **lesson})


def sqnr_rows(weight: torch.Tensor, words=range(2, 13)) -> list[dict]:
    """Fixed point at each word length (best fraction length) on ``weight``: the step, the
    SQNR in dB, the share of weights clipped at the range's ends and the rounding error's
    spread in units of step / sqrt(12) (1 for uniform noise)."""
    from ..quantize import scalar
    rows = []
    for word in words:
        frac = scalar.best_frac(weight, word)
        step = 2.0 ** -frac
        err = scalar.fixed_point(weight, word, frac) - weight
        rows.append({"bits": word, "frac": frac, "step": step,
                     "SQNR dB": round(10 * torch.log10(weight.pow(2).sum()
                                                       / err.pow(2).sum()).item(), 2),
                     "clipped %": round(100 * float((err.abs() > step / 2).float().mean()), 4),
                     "error std / (step/sqrt 12)": round(err.std().item() / (step / 12 ** 0.5),
                                                         3)})
    return rows


def sqnr_panels(left, right, rows: list[dict], weight: torch.Tensor, word: int = 8) -> None:
    """Left: SQNR against bits with the 6 dB-per-bit line through the last point. Right: the
    rounding errors at ``word`` bits that stay within half a step (the clipped ones, counted in
    the title, lie far outside and are not drawn)."""
    from ..quantize import scalar
    bits = [r["bits"] for r in rows]
    left.plot(bits, [r["SQNR dB"] for r in rows], "o-", label="measured")
    left.plot(bits, [rows[-1]["SQNR dB"] + scalar.KAPPA * (b - bits[-1]) for b in bits], "k:",
              label=f"{scalar.KAPPA} dB per bit")
    left.set(xlabel="bits (fixed point, best fraction length)", ylabel="SQNR (dB)")
    left.legend(fontsize=8)
    frac = scalar.best_frac(weight, word)
    step = 2.0 ** -frac
    err = (scalar.fixed_point(weight, word, frac) - weight).flatten()
    inside = err.abs() <= step / 2
    right.hist(err[inside].numpy() / step, bins=40, color="C1")
    right.set_xlabel(f"rounding error at {word} bits, in steps of 2^-{frac}")
    clipped = err[~inside]
    note = (f"\n{len(clipped)} clipped, errors up to {clipped.abs().max():.3f} (not drawn)"
            if len(clipped) else "")
    right.set_title(f"{word} bits: {int(inside.sum()):,} errors within half a step{note}",
                    fontsize=9)


def kmeans_start_panels(axes, weight: torch.Tensor, k: int, layer: str) -> None:
    """One panel per k-means start (``kmeans.INITS``) on the histogram of ``weight``: the
    starting centroids (dotted) and where Lloyd's iterations took them (solid)."""
    from ..quantize import kmeans
    for ax, init in zip(axes, kmeans.INITS):
        start = kmeans.init_centroids(weight, k, init)
        codebook, indices = kmeans.kmeans_codebook(weight, k, init)
        counts, _, _ = ax.hist(weight.flatten().numpy(), bins=200, color="0.75", log=True)
        top = counts.max()
        ax.vlines(start.numpy(), 1, top, colors="C1", linestyles=":", label="start")
        ax.vlines(codebook.numpy(), 1, top, colors="C0", label="after k-means")
        mse = (codebook[indices] - weight).pow(2).mean().item()
        ax.set_title(f"{layer}, {init} start: MSE {mse:.4e}", fontsize=9)
    axes[0].legend(fontsize=8)


def kmeans_init_rows(model, ks=(4, 8, 16, 32)) -> list[dict]:
    """Per layer and k, the weight MSE after k-means from each start and the largest distance
    between the codebooks the starts end on (0: they converged to the same codebook)."""
    from ..quantize import kmeans
    rows = []
    for name, module in layers_of(model):
        weight = module.weight.detach()
        for k in ks:
            books = {init: kmeans.kmeans_codebook(weight, k, init) for init in kmeans.INITS}
            row = {"layer": name, "weights": weight.numel(), "k": k}
            for init, (codebook, indices) in books.items():
                row[f"MSE {init}"] = f"{(codebook[indices] - weight).pow(2).mean().item():.4e}"
            values = [c for c, _ in books.values()]
            row["largest centroid gap"] = (
                f"{max(float((a - values[0]).abs().max()) for a in values):.1e}"
                if all(len(v) == len(values[0]) for v in values) else "different k")
            rows.append(row)
    return rows


def integer_layer(layer, x: torch.Tensor, wq: torch.Tensor, w_scale: torch.Tensor,
                  x_scale: float, x_zp: int, y_scale: float, y_zp: int) -> dict:
    """A Linear layer of ``quant.int8`` on integers, Jacob et al.'s way, with the library's
    kernels and with ONNX Runtime's QLinearConv on the same integers: the uint8 input codes,
    the int32 accumulators, the multiplier (M0, shift) and both uint8 outputs."""
    from ..quantize import int8
    xq = int8.quantize_tensor(x, x_scale, x_zp)
    bias_q = int8.quantize_bias(layer.bias.detach(), x_scale, w_scale)
    acc = int8.int8_linear(xq, x_zp, wq, 0, bias_q)
    m0, shift = int8.quantize_multiplier(x_scale * w_scale.double() / y_scale)
    yq = int8.requantize(acc, m0, shift, y_zp)
    out, inp = wq.shape
    ort = int8.ort_qlinear_conv(xq.view(-1, inp, 1, 1), x_scale, x_zp, wq.view(out, inp, 1, 1),
                                w_scale, 0, bias_q, y_scale, y_zp).view(-1, out)
    return {"xq": xq, "acc": acc, "m0": m0, "shift": shift, "yq": yq, "ort": ort}


def output_qparams(y: torch.Tensor) -> tuple[float, int]:
    """(scale, zero point) of uint8 codes covering ``y``, as ``quant.int8``'s calibration
    computes them: torch.ao's ``MinMaxObserver``, whose range always holds 0 (so 0 is exact and
    the zero point stays within 0..255) and which never divides by a zero range."""
    from torch.ao.quantization import MinMaxObserver
    observer = MinMaxObserver(dtype=torch.quint8)
    observer(y)
    scale, zero_point = observer.calculate_qparams()
    return float(scale), int(zero_point)


def onnx_speed(name: str, train, test, method, pairs: int, block_time: float,
               latency_s: float):
    """Real int8 speed of zoo network ``name``: fp32 and ``method``'s int8 (ONNX Runtime's
    static quantizer, calibrated on ``method.calibration_images(train)``) timed interleaved
    in ONNX Runtime (batch 64, one thread), and PyTorch fp32 beside them. Returns (rows with
    accuracy on ``test``, ONNX bytes and ms; the ``timing.Comparison`` int8 vs fp32)."""
    from .. import zoo
    from ..measure import latency_ms
    from ..quantize import int8
    net = zoo.pretrained(name)
    blobs = {"fp32": int8.to_onnx(net),
             "int8": int8.onnx_int8(method.apply(net, train), method.calibration_images(train))}
    speed = int8.compare_onnx(blobs["int8"], blobs["fp32"], batch=64, threads=1, pairs=pairs,
                              block_time=block_time)
    ms = {"fp32": speed.b_ms, "int8": speed.a_ms}
    rows = [{"model": name, "runtime": f"ONNX Runtime {kind}",
             "accuracy": round(int8.onnx_accuracy(blob, test), 4), "ONNX bytes": len(blob),
             "ms (batch 64, 1 thread)": round(ms[kind], 2)} for kind, blob in blobs.items()]
    torch_ms = latency_ms(net, net.input_shape, batch=64, threads=1, min_run_time=latency_s)
    rows.append({"model": name, "runtime": "PyTorch fp32",
                 "accuracy": round(evaluate(net, test), 4), "ONNX bytes": None,
                 "ms (batch 64, 1 thread)": round(torch_ms, 2)})
    return rows, speed
