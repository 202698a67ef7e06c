"""``python -m workbench bench pruning_secondorder``: second-order pruning and granularity.

1. OBS against OBD and magnitude on LeNet-300-100 at 80 / 90 / 95 % of the weights, before any
   retraining: relative reconstruction error of the first layer on test images, test accuracy,
   seconds. The catalogue's target: OBS beats OBD and magnitude without retraining (Hassibi &
   Stork 1993; Dong et al. 2017 show the same layer-wise).
2. OBD's ordering against magnitude's at equal (global) sparsity: how many of the kept weights
   agree, and the growth of the training loss on the images OBD measured its curvature on.
3. Granularity (Mao et al. 2017): LeNet-5's convolutions (and vgg_small's once its checkpoint
   is in the zoo) pruned to the same budget at each granularity: accuracy before and after a
   one-epoch fine-tune with the masks fixed, and how many times faster than the dense network
   the decoded file runs on one thread (the zeros of a mask cost as much as any weight) beside
   the physically smaller network that filter pruning gives: each timed interleaved with the
   dense one (``measure.compare_latency``), the median per-pair ratio with its interquartile
   range, "no measurable change" when that range includes 1.

Full run: about 10 minutes on two busy cores; smoke: seconds, tiny subsets.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .. import codec, data, measure, zoo
from ..prune import Magnitude, prunable_layers
from ..prune.granularity import GRANULARITIES, Granularity, shrink_filters
from ..prune.hessian import OBD, OBS
from ..train import Recipe, evaluate, fit, quiet


def _relative_error(layer, other, x) -> float:
    with torch.no_grad():
        y = layer(x)
        return round(((other(x) - y).pow(2).sum() / y.pow(2).sum()).item(), 5)


def _timed(method, model, train_set):
    start = time.time()
    out = method.apply(model, train_set)
    return out, round(time.time() - start, 1)


def obs_vs_first_order(smoke: bool) -> list[dict]:
    base = zoo.pretrained("lenet300")
    train_set = data.mnist("train").subset(512 if smoke else 20000, seed=0)
    test = data.mnist("test").subset(500, seed=0) if smoke else data.mnist("test")
    x = test.tensors()[0].flatten(1)
    images = 256 if smoke else 1024
    rows = []
    for sparsity in ((0.9,) if smoke else (0.8, 0.9, 0.95)):
        methods = {
            "magnitude": Magnitude(sparsity=sparsity),
            "obd fisher": OBD(sparsity=sparsity, images=images),
            "obd fisher global": OBD(sparsity=sparsity, images=images, scope="global"),
            "obd hutchinson": OBD(sparsity=sparsity, images=images, estimator="hutchinson",
                                  samples=8 if smoke else 64),
            "obs": OBS(sparsity=sparsity, images=images, step=0.25 if smoke else 0.05),
        }
        found = {}
        for label, method in methods.items():
            pruned, seconds = _timed(method, base, train_set)
            found[label] = {"fc1_rel_error": _relative_error(base.net[1], pruned.net[1], x),
                            "test_acc": round(evaluate(pruned, test), 4), "seconds": seconds}
        others = [v for k, v in found.items() if k != "obs"]
        met = all(found["obs"]["test_acc"] > o["test_acc"]
                  and found["obs"]["fc1_rel_error"] < o["fc1_rel_error"] for o in others)
        for label, figures in found.items():
            rows.append({"bench": "OBS vs OBD vs magnitude, no retraining", "model": "lenet300",
                         "sparsity": sparsity, "method": label, **figures,
                         "dense_acc": round(evaluate(base, test), 4),
                         "target": "OBS best (Hassibi & Stork 1993)",
                         "met": met if label == "obs" else None})
    return rows


def obd_ordering(smoke: bool) -> list[dict]:
    base = zoo.pretrained("lenet300")
    images = 256 if smoke else 1024
    train_set = data.mnist("train")
    x, y = train_set.subset(images, seed=0).tensors()
    test = data.mnist("test").subset(500, seed=0) if smoke else data.mnist("test")
    with torch.no_grad():
        dense_loss = F.cross_entropy(base(x), y).item()
    rows = []
    for sparsity in ((0.5,) if smoke else (0.3, 0.5, 0.7, 0.9)):
        obd = OBD(sparsity=sparsity, images=images, scope="global").apply(base, train_set)
        mag = Magnitude(sparsity=sparsity, scope="global").apply(base)
        masks = [torch.cat([m.weight_mask.flatten() for _, m in prunable_layers(net)])
                 for net in (obd, mag)]
        with torch.no_grad():
            growth = [F.cross_entropy(net(x), y).item() - dense_loss for net in (obd, mag)]
        common = (masks[0] * masks[1]).sum() / masks[1].sum()
        rows.append({"bench": "OBD ordering vs magnitude (global, no retraining)",
                     "model": "lenet300", "sparsity": sparsity,
                     "kept_in_common": round(common.item(), 4),
                     "loss_growth_obd": round(growth[0], 5),
                     "loss_growth_magnitude": round(growth[1], 5),
                     "test_acc_obd": round(evaluate(obd, test), 4),
                     "test_acc_magnitude": round(evaluate(mag, test), 4),
                     "target": "ordering vs magnitude at equal sparsity (LeCun et al. 1990)"})
    return rows


def _latencies(nets: dict, shape, smoke: bool) -> dict:
    """(key, batch) -> how many times faster each net but "dense" runs than nets["dense"], at
    batch 1 and 64 on one thread, the two timed interleaved (``measure.compare_latency``:
    median per-pair ratio, its interquartile range, "no measurable change" when that range
    includes 1)."""
    return {(k, b): measure.compare_latency(net, nets["dense"], shape, batch=b, threads=1,
                                            pairs=6 if smoke else 30)
            for k, net in nets.items() if k != "dense" for b in (1, 64)}


def _latency_fields(c, prefix: str, batch: int) -> dict:
    return {f"{prefix}ms_b{batch}": round(c.a_ms, 4),
            f"{prefix}speedup_b{batch}": c.speedup,
            f"{prefix}speedup_b{batch}_iqr": list(c.spread),
            f"{prefix}latency_b{batch}": c.display}


def granularity_rows(name: str, smoke: bool) -> list[dict]:
    base = zoo.pretrained(name)
    dataset = zoo.dataset_of(name)
    mnist = dataset == "mnist"
    tune = data.load(dataset, "train").subset(256 if smoke else (10000 if mnist else 5000), seed=1)
    test = data.load(dataset, "test")
    test = test.subset(200 if smoke else (len(test) if mnist else 2000), seed=0)
    recipe = Recipe(epochs=1, lr=0.01, schedule="cosine", augment=not mnist, seed=0)
    dense_macs = measure.report(base, latency=False).macs
    dense_acc = round(evaluate(base, test), 4)
    rows, shipped = [], {"dense": codec.decode(codec.encode(base))}
    for sparsity in ((0.5,) if smoke else ((0.5, 0.75) if mnist else (0.5,))):
        for granularity in GRANULARITIES:
            method = Granularity(sparsity=sparsity, granularity=granularity)
            pruned = method.apply(base)
            before = evaluate(pruned, test)
            with quiet():
                fit(pruned, tune, recipe)       # masks fixed: zeros stay zeros
            shipped[sparsity, granularity] = codec.decode(codec.encode(pruned))
            row = {"bench": "granularity, conv weights at one budget", "model": name,
                   "sparsity": sparsity, "granularity": granularity,
                   "conv_zeros": round(_conv_sparsity(pruned), 4),
                   "acc_no_retrain": round(before, 4),
                   "acc_1_epoch": round(evaluate(pruned, test), 4), "dense_acc": dense_acc,
                   "macs_x": 1.0, "smaller_acc_1_epoch": None}
            if granularity == "filter":   # remove the zero filters for real
                smaller = shrink_filters(pruned)
                shipped[sparsity, "smaller"] = smaller
                row.update(macs_x=round(dense_macs / measure.report(smaller, latency=False).macs,
                                        2),
                           smaller_acc_1_epoch=round(evaluate(smaller, test), 4))
            rows.append(row)
    vs_dense = _latencies(shipped, base.input_shape, smoke)
    for row in rows:
        key = row["sparsity"], row["granularity"]
        smaller = (row["sparsity"], "smaller") if row["granularity"] == "filter" else None
        for b in (1, 64):
            c = vs_dense[key, b]
            row.update(_latency_fields(c, "", b), **{f"dense_ms_b{b}": round(c.b_ms, 4)})
            row.update(_latency_fields(vs_dense[smaller, b], "smaller_", b) if smaller else
                       {k: None for k in _latency_fields(c, "smaller_", b)})
        row["load_avg"] = vs_dense[key, 64].load_avg
    return rows


def _conv_sparsity(model) -> float:
    weights = [m.weight for _, m in prunable_layers(model) if m.weight.dim() == 4]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def rows(smoke: bool = False) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # the seconds are for one thread, as the latencies are
    try:
        out = obs_vs_first_order(smoke) + obd_ordering(smoke) + granularity_rows("lenet5", smoke)
        if "vgg_small" in zoo.manifest() and not smoke:
            out += granularity_rows("vgg_small", smoke)
    finally:
        torch.set_num_threads(threads)
    return out
