"""``python -m workbench bench binary_ternary``: TWN and TTQ against the issue's targets.

- TWN on LeNet-5 (the zoo checkpoint, MNIST): >= 99.2 % test accuracy after STE fine-tuning
  of the float network (paper, arXiv 1605.04711 Table 2: float 99.41 %, TWN 99.35 %, BWN
  99.05 %, on their own LeNet-5, trained from scratch). Beside it, binary weights with the same
  fine-tuning: ``core.binarize`` (sign times the per-output-channel mean |W|, BWN's scale) in a
  straight-through parametrization on every layer, as TWN is on every layer; and TWN with no
  training (``epochs=0``) at the default c = 0.7.
- TTQ on ResNet-20 (the zoo checkpoint, CIFAR-10), fine-tuned from the float network: within
  1.5 points of the float accuracy (authors' README: float 8.23 % -> TTQ 8.87 % error, a
  fine-tuned ResNet-20). ``TTQ_TRAIN`` / ``TTQ_EPOCHS`` say how much of the training set and
  how many epochs we afford on one shared CPU thread.
- The threshold slider of lesson 04 (TWN's ``c`` at ``epochs=0`` on LeNet-5, 2,000 test
  images): p95 of one update < 0.5 s, and the fraction of zeros and the accuracy at a few c.

Accuracies are on the full test sets (a subset in smoke mode); ``bytes`` is the real file.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

TWN_PAPER = "TWN arXiv 1605.04711 Table 2, LeNet-5: float 99.41, TWN 99.35, BWN 99.05 %"
TTQ_PAPER = "TTQ authors' README (czhu95/ternarynet): ResNet-20 8.23 -> 8.87 % error"
TTQ_TRAIN = 50000      # training images per TTQ epoch in the full run (all of them)
TTQ_EPOCHS = 2
LENET_EPOCHS = 2


def binary_weights(model, data, epochs: int, lr: float, seed: int = 0):
    """Every Conv2d / Linear layer binary (``core.BinaryWeight("ste")``: BWN's per-channel
    mean|W| scale), fine-tuned with the identity straight-through gradient as TWN is, folded."""
    from ..binary.core import BinaryWeight
    from ..method import clone_model
    from ..quantize.core import fold, quantize_weights
    from ..train import Recipe, fit
    model = clone_model(model)
    quantize_weights(model, lambda name, m: BinaryWeight("ste"))
    if epochs:
        fit(model, data, Recipe(epochs=epochs, lr=lr, weight_decay=1e-4, seed=seed))
    return fold(model.eval())


def measure(name, make, base, test, **row) -> dict:
    from .. import codec
    from ..binary.ternary import zero_fraction
    from ..train import evaluate, quiet
    start = time.perf_counter()
    with quiet():
        out = make()
    wall = time.perf_counter() - start
    acc, base_acc = 100 * evaluate(out, test), 100 * evaluate(base, test)
    values = [len(torch.unique(m.weight)) for m in out.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    return {"method": name, "acc_pct": round(acc, 2), "float_acc_pct": round(base_acc, 2),
            "delta_pts": round(acc - base_acc, 2), "zeros": round(zero_fraction(out), 3),
            "values_per_layer": values, "bytes": len(codec.encode(out)),
            "dense_bytes": len(codec.encode(base, formats=("dense",), dtype="float32")),
            "wall_s": round(wall, 1), "threads": torch.get_num_threads(), **row}


def lenet_rows(smoke: bool) -> list[dict]:
    from .. import data, zoo
    from ..binary.ternary import TWN
    train, test = data.mnist("train"), data.mnist("test")
    if smoke:
        train, test = train.subset(512, seed=0), test.subset(500, seed=0)
    epochs = 1 if smoke else LENET_EPOCHS
    base = zoo.pretrained("lenet5")
    twn = TWN(epochs=epochs, lr=0.01)
    rows = [measure("ternary.twn", lambda: twn.apply(base, train), base, test, model="lenet5",
                    settings=f"c=0.7 epochs={epochs} lr=0.01", target=">= 99.2 %",
                    paper=TWN_PAPER)]
    rows[0]["met"] = None if smoke else rows[0]["acc_pct"] >= 99.2
    rows.append(measure("ternary.twn (no training)", lambda: TWN(epochs=0).apply(base), base,
                        test, model="lenet5", settings="c=0.7 epochs=0", target="-",
                        paper="-", met=None))
    rows.append(measure("binary weights (core.binarize, STE)",
                        lambda: binary_weights(base, train, epochs, 0.01), base, test,
                        model="lenet5", settings=f"per-channel mean|W| epochs={epochs} lr=0.01",
                        target="-", paper=TWN_PAPER, met=None))
    return rows


def ttq_row(smoke: bool, n_train: int = TTQ_TRAIN, epochs: int = TTQ_EPOCHS,
            lr: float = 1e-3) -> dict:
    from .. import data, zoo
    from ..binary.ternary import TTQ
    train, test = data.cifar10("train"), data.cifar10("test")
    if smoke:
        n_train, epochs, test = 256, 1, test.subset(200, seed=0)
    train = train.subset(n_train, seed=0) if n_train < len(train) else train
    base = zoo.pretrained("resnet20")
    method = TTQ(epochs=epochs, lr=lr)
    row = measure("ternary.ttq", lambda: method.apply(base, train), base, test,
                  model="resnet20", settings=f"t=0.05 epochs={epochs} on {len(train)} "
                  f"images Adam lr={lr} (one-cycle)", target="within 1.5 pts of float",
                  paper=TTQ_PAPER)
    row["met"] = None if smoke else row["delta_pts"] >= -1.5
    return row


def slider_rows(smoke: bool) -> list[dict]:
    from .. import data, zoo
    from ..binary.ternary import TWN, zero_fraction
    from ..train import evaluate
    from .widgets import time_updates
    base, test = zoo.pretrained("lenet5"), data.mnist("test").subset(2000, seed=0)
    cs = np.random.default_rng(0).uniform(0.0, 2.0, 10 if smoke else 40).round(2)
    timing = time_updates(TWN, base, test, [float(c) for c in cs], name="lenet5", epochs=0)
    rows = [{"method": "ternary.twn widget (c)", "model": "lenet5",
             "settings": f"c in 0..2, epochs=0, {len(test)} test images", **timing,
             "target": "p95 < 0.5 s", "paper": "-"}]
    for c in (0.0, 0.35, 0.7, 1.0, 1.5):   # the lesson's curve: zeros and accuracy move with c
        out = TWN(c=c, epochs=0).apply(base)
        rows.append({"method": "ternary.twn curve", "model": "lenet5", "settings": f"c={c}",
                     "zeros": round(zero_fraction(out), 3),
                     "acc_pct": round(100 * evaluate(out, test), 2), "met": None})
    return rows


def rows(smoke: bool = False) -> list[dict]:
    out = lenet_rows(smoke) + [ttq_row(smoke)] + slider_rows(smoke)
    for row in out:
        row["setting"] = "smoke" if smoke else "full"
    return out
