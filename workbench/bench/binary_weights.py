"""``python -m workbench bench binary_weights``: binary weights on LeNet-300-100, error on the
full MNIST test set, training on the full train set, one thread.

Targets (issue 10): BinaryConnect on an MNIST MLP, test error <= 2.0 %; LAB beside
BinaryConnect at equal epochs on the same network, from the same start; the post-training
sign's error (no target: it is reported). Every row has its training time.

Our network is the zoo's LeNet-300-100 (784-300-100-10, ReLU, no BatchNorm), and training
starts from its trained float weights (the shadow weights start at W / H clipped, LAB at W).
The papers train from scratch, longer, wider MLPs with BatchNorm: BinaryConnect 3 x 1024
(the authors' script: 3 x 2048) for hundreds of epochs, square hinge loss; LAB 3 x 2048 for
50 epochs. Our stochastic BinaryConnect is evaluated, like every row, with its binary
(sign) weights; the paper's stochastic 1.18 % comes from the real-valued weights at test
time (the authors' binary_connect.py: with stochastic=True the test pass multiplies by the
real-valued W).
"""
from __future__ import annotations

import time

import torch

BC_DET = "1.29 % err, BinaryConnect det., 3x1024 MLP + BN (Courbariaux et al. 2015, Table 2)"
BC_STOCH = ("1.18 % err, BinaryConnect stoch., real-valued weights at test (authors' README "
            "and code; paper Table 2)")
LAB = "LAB vs BinaryConnect at equal epochs (Hou et al. 2017 compare on 3x2048 MLP + BN)"
GONG = "no MNIST figure (Gong et al. 2014 binarize ImageNet dense layers)"


def measure(method, base, train, test) -> dict:
    from .. import codec
    from ..train import evaluate, quiet
    start, cpu = time.perf_counter(), time.process_time()
    with quiet():
        out = method.apply(base, train if method.tags().needs_data else None)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    error, base_error = 100 * (1 - evaluate(out, test)), 100 * (1 - evaluate(base, test))
    distinct = [len(torch.unique(m.weight)) for m in out.modules()
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    settings = " ".join(f"{k}={v}" for k, v in method.settings().items())
    return {"method": method.id, "model": "lenet300", "settings": settings,
            "bits": method.tags().bits_per_weight, "values_per_layer": distinct,
            "err_pct": round(error, 2), "base_err_pct": round(base_error, 2),
            "delta_pts": round(error - base_error, 2), "bytes": len(codec.encode(out)),
            "dense_bytes": len(codec.encode(base, formats=("dense",), dtype="float32")),
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),   # wall time on shared cores: CPU too
            "threads": torch.get_num_threads()}


def rows(smoke: bool = False, epochs: int = 8) -> list[dict]:
    from .. import data, zoo
    from ..binary.weights import BinaryConnect, LossAware, Sign
    train, test = data.mnist("train"), data.mnist("test")
    if smoke:   # seconds: small subsets, one epoch (figures not meaningful)
        train, test, epochs = train.subset(512, seed=0), test.subset(500, seed=0), 1
    base = zoo.pretrained("lenet300")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        det = measure(BinaryConnect(epochs=epochs), base, train, test)
        out = [{**det, "target": "err <= 2.0 %", "paper": BC_DET,
                "met": None if smoke else det["err_pct"] <= 2.0}]
        stoch = measure(BinaryConnect(epochs=epochs, stochastic=True), base, train, test)
        out.append({**stoch, "target": "-", "paper": BC_STOCH, "met": None})
        lab = measure(LossAware(epochs=epochs), base, train, test)
        out.append({**lab, "target": "beside binary.connect, equal epochs",
                    "vs_connect_pts": round(lab["err_pct"] - det["err_pct"], 2),
                    "paper": LAB, "met": None})
        for per_channel in (True, False):
            row = measure(Sign(per_channel=per_channel), base, train, test)
            out.append({**row, "target": "-", "paper": GONG, "met": None})
    finally:
        torch.set_num_threads(threads)
    for row in out:
        row["setting"] = "smoke" if smoke else "full"
    return out
