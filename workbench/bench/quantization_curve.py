"""``python -m workbench bench quantization_curve``: test accuracy against bits per weight for
every quantization method of section B, on one zoo model (LeNet-300-100), in one table that
``plots.bits_curve`` draws as one plot (lesson 02).

Each method runs at a few settings that span its bit-widths. ``bits`` is the method's nominal
bits per weight (its ``bits_per_weight`` tag: log2 k for k-means, the word length for fixed
point, the index bits over the sub-vector length for product quantization ...). ``file_bits``
is what the real file costs: 8 x ``len(codec.encode(model))`` over the number of Conv2d /
Linear weights, so codebooks, biases, scales and the header are included. Methods that train do so
for ``EPOCHS`` epochs on the full MNIST training set (a smoke run: a few hundred images).
"""
from __future__ import annotations

import time

MODEL = "lenet300"
EPOCHS = 2

# id -> the settings to sweep (the bit-width knob of each method, the rest its defaults).
SWEEPS = {
    "quant.float16": [{"dtype": "float16"}, {"dtype": "bfloat16"}],
    "quant.fixed_point": [{"word": w, "frac": w - 1} for w in (4, 6, 8, 16)],
    "quant.int8": [{"granularity": "per_tensor"}, {"granularity": "per_channel"}],
    "quant.bit_allocation": [{"budget": b} for b in (2.0, 3.0, 4.0, 6.0)],
    "quant.kmeans": [{"k": k} for k in (2, 4, 8, 16, 32)],
    # each centroid moves by the summed gradient of its weights (the paper's rule): with
    # k = 2 over 235,200 weights a step of 1e-3 throws the network to chance, so 1e-4
    "quant.trained_kmeans": [{"k": k, "epochs": EPOCHS, "lr": 1e-4} for k in (2, 4, 8, 16)],
    # product quantization: LeNet layers have only 100-500 rows per sub-space, so a codebook
    # of more than 16 codewords costs almost as much as the weights; fp16 codewords
    "quant.pq": [{"subvector": d, "k": 16, "codebook_dtype": "float16"} for d in (2, 4, 8)],
    "quant.rq": [{"subvector": 4, "k": 16, "stages": s, "codebook_dtype": "float16"}
                 for s in (1, 2, 3)],
    "quant.qcnn": [{"subvector": d, "k": 16, "codebook_dtype": "float16"} for d in (2, 4, 8)],
    "quant.pq_reg": [{"subvector": d, "k": 16, "strength": 1.0, "epochs": EPOCHS}
                     for d in (4, 8)],
    "quant.log": [{"bits": b} for b in (3, 4, 5, 6)],
    "quant.inq": [{"bits": b, "epochs": 1} for b in (3, 4, 5)],
    # every layer at the same width (the papers keep the first and last in higher precision,
    # which for LeNet-300-100 would leave most of the bytes in float)
    "quant.dorefa": [{"weight_bits": b, "end_bits": b, "epochs": EPOCHS} for b in (1, 2, 4, 8)],
    "quant.learned_step": [{"weight_bits": b, "act_bits": 8, "end_bits": b, "epochs": EPOCHS}
                           for b in (2, 3, 4)],
    "quant.symmetric": [{"codebook": c, "quantize_ends": True, "epochs": EPOCHS}
                        for c in ("binary", "ternary")],
    "quant.multi_bit": [{"run_bits": b, "epochs": EPOCHS} for b in (2, 4, 8)],
    "quant.grad8": [{"epochs": EPOCHS}],
}


def weight_count(model) -> int:
    from ..prune import prunable_layers
    return sum(m.weight.numel() for _, m in prunable_layers(model))


def rows(smoke: bool = False) -> list[dict]:
    from .. import METHODS, codec, data, zoo
    from ..train import evaluate, quiet
    train, test = data.mnist("train"), data.mnist("test")
    if smoke:   # seconds: one setting per method, its smoke settings, small subsets
        train, test = train.subset(256, seed=0), test.subset(500, seed=0)
    base = zoo.pretrained(MODEL)
    weights = weight_count(base)
    out = [{"method": "fp32 (base)", "settings": "-", "bits": 32.0,
            "file_bits": round(8 * len(codec.encode(base)) / weights, 2),
            "accuracy": round(evaluate(base, test), 4), "seconds": 0.0}]
    missing = [i for i in SWEEPS if i not in METHODS]
    if missing:
        raise ValueError(f"methods not in workbench.METHODS: {missing}")
    for method_id, sweep in SWEEPS.items():
        cls = METHODS[method_id]
        for settings in sweep[:1] if smoke else sweep:
            settings = {**settings, **(cls.smoke if smoke else {})}
            method = cls(**settings)
            tags = method.tags()
            start = time.perf_counter()
            with quiet():
                model = method.apply(base, train if tags.needs_data else None)
            seconds = time.perf_counter() - start
            bits = tags.bits_per_weight
            out.append({"method": method_id,
                        "settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
                        "bits": round(float(bits), 3) if bits is not None else None,
                        "file_bits": round(8 * len(codec.encode(model)) / weights, 2),
                        "accuracy": round(evaluate(model, test), 4),
                        "seconds": round(seconds, 1)})
    return out
