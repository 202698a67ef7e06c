"""``python -m workbench bench pruning_structured``: neuron and channel pruning, measured.

1. The issue's target for filter pruning on a CIFAR-10 zoo model (vgg_small, else resnet20):
   >= 30% fewer MACs with <= 1 point accuracy loss after a short fine-tune, and the measured
   CPU latency ratio (batch 64, one thread, the decoded files timed interleaved by
   ``measure.compare_latency``, 1 / its median speedup) within 25% of the MAC ratio.
   Li et al. 2016: VGG-16 on CIFAR-10, -34% FLOPs, no loss.
2. One row per method on LeNet-300-100 and LeNet-5: params, MACs, test accuracy, time.
3. Merging against dropping the same neurons (Srinivas & Babu: up to 85% of LeNet's FC
   parameters removed).
4. Layer removal on ResNet-20: depth against accuracy along the greedy path.

Full run: about 10 minutes on two busy cores (the CIFAR fine-tune is most of it); smoke: a
few seconds on tiny subsets, untrained CIFAR nets if no checkpoint is there yet.
"""
from __future__ import annotations

import time

import torch

from .. import data, measure, models, zoo
from ..method import clone_model
from ..prune.channels import (APoZ, Activity, L1Filter, LayerRemoval, Merge, finetune,
                              without_block)
from ..prune.group_lasso import GroupLasso
from ..prune.structured import finetune_recipe
from ..prune.surgery import shrink
from ..train import evaluate

# Per-layer fractions for the CIFAR target, as Li et al. choose them: from a sensitivity scan
# (each layer pruned alone, accuracy without retraining), pruning the insensitive wide late
# layers more and the first layer not at all. Widths are kept multiples of 8.
L1_TARGET = {
    "vgg_small": dict(fraction=0.25, layer_fractions={"features.0": 0.0}, round_to=8),
    "resnet20": dict(fraction=0.5, round_to=8),
}
FINETUNE_EPOCHS = 5
PAPER_L1 = ("Li et al. 2016: VGG-16 CIFAR-10 up to 34% less inference cost, close to the "
            "original accuracy")


def cifar_model(smoke: bool):
    """(name, network, trained?) of the CIFAR-10 model the target is measured on."""
    for name in ("vgg_small", "resnet20"):
        if name in zoo.manifest():
            return name, zoo.pretrained(name), True
    if smoke:
        torch.manual_seed(0)
        return "vgg_small", models.build("vgg_small").eval(), False
    return None, None, False


def latency_pair(pruned, base, smoke: bool):
    """How many times faster ``pruned`` runs than ``base`` at batch 64 on one thread, both as
    shipped, the two timed interleaved (``measure.compare_latency``: median per-pair ratio,
    its interquartile range, "no measurable change" when that range includes 1)."""
    return measure.compare_latency(pruned, base, tuple(base.input_shape), batch=64, threads=1,
                                   pairs=6 if smoke else 30)


def l1_filter_target(smoke: bool) -> list[dict]:
    name, base, trained = cifar_model(smoke)
    if name is None:
        return [{"bench": "prune.l1_filter CIFAR-10 target", "model": None, "met": None,
                 "note": "no CIFAR-10 checkpoint in zoo.manifest() yet (vgg_small, resnet20)"}]
    # A short fine-tune: 5 epochs on the full training set, a quarter of the zoo's 20-epoch
    # training (2 epochs on 20,000 images lost 2.4 points).
    train_set = data.cifar10("train").subset(256, seed=0) if smoke else data.cifar10("train")
    test = data.cifar10("test").subset(200, seed=0) if smoke else data.cifar10("test")
    epochs = 1 if smoke else FINETUNE_EPOCHS
    start = time.time()
    method = L1Filter(**L1_TARGET[name], epochs=epochs, lr=0.01)
    once = L1Filter(**{**method.params(), "epochs": 0}).apply(base)
    pruned = method.apply(base, train_set)
    seconds = time.time() - start
    big = measure.report(base, test, latency=False)
    small = measure.report(pruned, test, latency=False)
    c = latency_pair(pruned, base, smoke)
    # time of the pruned over time of the base, as the MAC ratio: 1 / the median speedup
    mac_ratio, lat_ratio = small.macs / big.macs, 1 / c.speedup
    loss_points = 100 * (big.accuracy - small.accuracy)
    met = (1 - mac_ratio >= 0.30 and loss_points <= 1.0
           and abs(lat_ratio / mac_ratio - 1) <= 0.25)
    return [{"bench": "prune.l1_filter CIFAR-10 target", "model": name,
             "trained": trained, "settings": method.settings(),
             "channels": pruned.config.get("channels", pruned.config.get("inner")),
             "finetune": f"{epochs} epochs on {len(train_set)} train images",
             "test_images": len(test), "params_base": big.params, "params": small.params,
             "macs_base": big.macs, "macs": small.macs,
             "macs_reduction": round(1 - mac_ratio, 4), "target_macs_reduction": 0.30,
             "acc_base": big.accuracy, "acc_pruned_no_retrain": round(evaluate(once, test), 4),
             "acc_after_finetune": small.accuracy, "acc_loss_points": round(loss_points, 2),
             "target_max_loss_points": 1.0,
             "latency_b64_base_ms": round(c.b_ms, 2), "latency_b64_ms": round(c.a_ms, 2),
             "speedup_b64": c.speedup, "speedup_b64_iqr": list(c.spread),
             "speedup_b64_display": c.display, "pairs": c.pairs, "load_avg": c.load_avg,
             "mac_ratio": round(mac_ratio, 4), "latency_ratio": round(lat_ratio, 4),
             "latency_vs_mac": round(lat_ratio / mac_ratio - 1, 4),
             "target_latency_vs_mac_within": 0.25, "threads": 1, "met": met,
             "seconds": round(seconds, 1), "paper": PAPER_L1}]


def mnist_methods(arch: str, smoke: bool) -> list:
    """The methods of the table, at settings a lesson would start from."""
    ft = 1
    methods = [APoZ(rounds=2, epochs=ft), Activity(fraction=0.5, epochs=ft),
               Merge(fraction=0.5), Merge(fraction=0.85),
               GroupLasso(lam=0.01, epochs=1 if smoke else 3, finetune_epochs=2 * ft)]
    if arch == "lenet5":
        methods.insert(3, L1Filter(fraction=0.5, epochs=ft))
    return methods


def mnist_table(smoke: bool) -> list[dict]:
    rows = []
    train_full = data.mnist("train")
    test = data.mnist("test").subset(500, seed=0) if smoke else data.mnist("test")
    for arch in ("lenet300", "lenet5"):
        base = zoo.pretrained(arch)
        # LeNet-5 trains about 10x slower than LeNet-300: its fine-tunes use a third of MNIST
        train = train_full.subset(256 if smoke else (20000 if arch == "lenet5" else 60000),
                                  seed=0)
        ref = measure.report(base, test, latency=False)
        rows.append({"bench": "structured pruning, MNIST", "model": arch, "method": "(base)",
                     "settings": {}, "params": ref.params, "macs": ref.macs, "params_x": 1.0,
                     "macs_x": 1.0, "accuracy": ref.accuracy, "train_images": 0,
                     "seconds": 0.0})
        for method in mnist_methods(arch, smoke):
            start = time.time()
            needs_data = method.tags().needs_data
            out = method.apply(base, train if needs_data else None)
            seconds = time.time() - start
            r = measure.report(out, test, latency=False)
            rows.append({"bench": "structured pruning, MNIST", "model": arch, "method": method.id,
                         "settings": method.settings(), "params": r.params, "macs": r.macs,
                         "params_x": round(ref.params / r.params, 2),
                         "macs_x": round(ref.macs / r.macs, 2), "accuracy": r.accuracy,
                         "train_images": len(train) if needs_data else 0,
                         "seconds": round(seconds, 1)})
    return rows


def fc_params(model) -> int:
    return sum(m.weight.numel() + m.bias.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear))


def merge_vs_drop(smoke: bool) -> list[dict]:
    """Merged twins against the same neurons simply dropped (no retraining, no data)."""
    test = data.mnist("test").subset(500, seed=0) if smoke else data.mnist("test")
    rows = []
    for arch in ("lenet300", "lenet5"):
        base = zoo.pretrained(arch)
        for fraction in ((0.5,) if smoke else (0.5, 0.7, 0.8, 0.85)):
            merged, keep = Merge(fraction=fraction).merge(base)
            rows.append({"bench": "prune.merge vs drop", "model": arch, "fraction": fraction,
                         "fc_params_removed": round(1 - fc_params(merged) / fc_params(base), 4),
                         "acc_base": round(evaluate(base, test), 4),
                         "acc_merged": round(evaluate(merged, test), 4),
                         "acc_dropped": round(evaluate(shrink(base, keep), test), 4),
                         "paper": "Srinivas & Babu 2015: up to 85% of an MNIST network's parameters removed"})
    return rows


def layer_removal(smoke: bool) -> list[dict]:
    """Depth against accuracy along the greedy block-removal path of ResNet-20."""
    if "resnet20" in zoo.manifest():
        base, trained = zoo.pretrained("resnet20"), True
    elif smoke:
        torch.manual_seed(0)
        base, trained = models.build("resnet20").eval(), False
    else:
        return [{"bench": "prune.layer ResNet-20 depth vs accuracy", "met": None,
                 "note": "no resnet20 checkpoint in zoo.manifest() yet"}]
    train = data.cifar10("train").subset(256 if smoke else 10000, seed=0)
    test = data.cifar10("test").subset(200 if smoke else 2000, seed=1)
    method = LayerRemoval(blocks=3 if smoke else 6, images=64 if smoke else 1024, epochs=0)
    _, path = method.path(base, train)
    rows, model = [], clone_model(base)
    for step in path:
        if step["at"]:
            model = without_block(model, *step["at"])
        # a short fine-tune at two depths (a clone: the path goes on from the untuned net)
        tuned = None
        if step["depth"] in ((18, 16) if smoke else (16, 12)):
            tuned = finetune(clone_model(model), train,
                             finetune_recipe(method, train, epochs=1))
        rows.append({"bench": "prune.layer ResNet-20 depth vs accuracy", "trained": trained,
                     "removed": step["removed"], "depth": step["depth"],
                     "blocks_per_stage": model.config["blocks_per_stage"],
                     "params": measure.count_params(model)[0],
                     "macs": sum(r["macs"] for r in measure.layer_table(model, (3, 32, 32))),
                     "subset_loss": round(step["cost"], 4), "test_images": len(test),
                     "acc_no_retrain": round(evaluate(model, test), 4),
                     "acc_finetuned_1_epoch": tuned and round(evaluate(tuned, test), 4),
                     "finetune_images": len(train)})
    return rows


def rows(smoke: bool = False) -> list[dict]:
    # One intra-op thread for everything: latency is timed on one thread anyway, and on two
    # cores shared with other work two threads wait on each other (5x slower training here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return l1_filter_target(smoke) + mnist_table(smoke) + merge_vs_drop(smoke) \
            + layer_removal(smoke)
    finally:
        torch.set_num_threads(threads)
