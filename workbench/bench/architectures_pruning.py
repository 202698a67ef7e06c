"""``python -m workbench bench architectures_pruning``: channel pruning of the compact zoo
networks whose channels are coupled (issue 13).

Target: ``prune.l1_filter`` on MobileNet v2 and ShuffleNet v2 from the zoo, >= 30% fewer MACs
within 1 point of CIFAR-10 test accuracy after a short fine-tune. The groups come from
tracing (``prune.dependency``): in MobileNet v2 the projections of each residual stage are
pruned together and every expansion carries its depthwise conv and BatchNorms; in ShuffleNet
v2 each unit's branch carries its depthwise conv, and the stem feeds both branches of the
first unit.

Settings, per network (``TARGETS``): MobileNet v2 loses ``fraction`` of every prunable group,
residual stages included. ShuffleNet v2's stage channels pass a chunk and a shuffle in every
unit, which unite them into a few classes of many channels each (a class is all or nothing),
so there only the groups of one producer are pruned (``layer_fractions`` 0 for the others):
each unit's branch, the stem and the last 1x1 conv. Fine-tune: the method's own,
``FINETUNE_EPOCHS`` epochs on the full training set (cosine from ``lr``, crops and flips).
Accuracy on the full test set.

Paper: Li et al. 2016 (abstract, checked): filter pruning cuts the inference cost of VGG-16 by
up to 34% and of ResNet-110 by up to 38% on CIFAR-10, close to the original accuracy after
retraining (a retraining much longer than ours).
Smoke: tiny subsets, one epoch on 256 images; ``met`` stays None.
"""
from __future__ import annotations

import time

import torch

from .. import data, measure, models, zoo
from ..prune.channels import L1Filter, conv_coupled_groups
from ..train import evaluate

NETWORKS = ("shufflenet_v2", "mobilenet_v2")
TARGETS = {"mobilenet_v2": {"fraction": 0.2, "coupled": True},
           "shufflenet_v2": {"fraction": 0.32, "coupled": False}}
FINETUNE_EPOCHS = 5     # a quarter of the zoo recipe's 20 epochs, each on the whole training set
LR = 0.01
MAC_TARGET, DROP_TARGET = 0.30, 1.0
PAPER = ("Li et al. 2016 (abstract): VGG-16 up to -34% and ResNet-110 up to -38% FLOPs on "
         "CIFAR-10, close to the original accuracy after retraining")


def method_for(model, fraction: float, coupled: bool, epochs: int) -> L1Filter:
    """L1Filter at ``fraction``; with ``coupled`` False the groups of several producers
    (united by additions, chunks, shuffles) are left whole."""
    spared = {} if coupled else {g.name: 0.0 for g in conv_coupled_groups(model)
                                 if len(g.producers) > 1}
    return L1Filter(fraction=fraction, layer_fractions=spared, epochs=epochs, lr=LR)


def base_model(name: str, smoke: bool):
    """(network, trained?): the zoo checkpoint, or in smoke mode an untrained net if none."""
    if name in zoo.manifest():
        return zoo.pretrained(name), True
    if not smoke:
        return None, False
    torch.manual_seed(0)
    return models.build(name).eval(), False


def row(name: str, smoke: bool, train, test) -> dict:
    base, trained = base_model(name, smoke)
    out = {"bench": "prune.l1_filter on coupled channels", "model": name, "trained": trained}
    if base is None:
        return {**out, "met": None, "note": f"no {name} checkpoint in zoo.manifest() yet"}
    settings = TARGETS[name]
    epochs = 1 if smoke else FINETUNE_EPOCHS
    method = method_for(base, settings["fraction"], settings["coupled"], epochs)
    groups = conv_coupled_groups(base)
    pruned_only = L1Filter(**{**method.params(), "epochs": 0}).apply(base)
    start = time.time()
    pruned = method.apply(base, train)
    seconds = time.time() - start
    before, after = measure.report(base, latency=False), measure.report(pruned, latency=False)
    acc_before, acc_after = evaluate(base, test), evaluate(pruned, test)
    cut = 1 - after.macs / before.macs
    drop = 100 * (acc_before - acc_after)
    return {**out,
            "fraction": settings["fraction"],
            "groups": len(groups),
            "groups_pruned": sum(method.layer_fractions.get(g.name, method.fraction) > 0
                                 for g in groups),
            "coupled_groups_pruned": settings["coupled"],
            "macs_before": before.macs, "macs_after": after.macs,
            "mac_reduction": round(cut, 4), "mac_target": f">= {MAC_TARGET}",
            "params_before": before.params, "params_after": after.params,
            "acc_before": round(acc_before, 4),
            "acc_pruned_no_finetune": round(evaluate(pruned_only, test), 4),
            "acc_after": round(acc_after, 4),
            "drop_points": round(drop, 2), "drop_target": f"<= {DROP_TARGET}",
            "finetune_epochs": epochs, "lr": LR, "train_images": len(train),
            "test_images": len(test), "finetune_seconds": round(seconds, 1),
            "threads": torch.get_num_threads(), "paper": PAPER,
            "met": None if smoke or not trained else bool(cut >= MAC_TARGET
                                                          and drop <= DROP_TARGET)}


def rows(smoke: bool = False) -> list[dict]:
    # one thread: on two cores shared with other work, two threads wait on each other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = data.cifar10("train")
        test = data.cifar10("test")
        if smoke:
            train, test = train.subset(256, seed=0), test.subset(200, seed=0)
        found = []
        for name in NETWORKS:
            found.append(row(name, smoke, train, test))
            print({k: found[-1][k] for k in found[-1] if k != "paper"}, flush=True)
        return found
    finally:
        torch.set_num_threads(threads)
