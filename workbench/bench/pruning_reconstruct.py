"""``python -m workbench bench pruning_reconstruct``: channel pruning with reconstruction of the
next layer (prune.channel_lasso, prune.thinet, prune.dcp) against naive removal of the filters
with the smallest L1 norm, every method at the same channel budget on a CIFAR-10 zoo model
(vgg_small, else resnet20; LeNet-5 on MNIST while neither checkpoint exists, and in smoke runs).

For each: test accuracy right after pruning and after the same short fine-tune, the MAC ratio,
and the measured speedup beside it (1 thread, batch 1 and 64, the pruned and the base network
timed interleaved by ``measure.compare_latency``: median per-pair ratio, its interquartile
range, "no measurable change" when that range includes 1).
Targets: the issue's, >= 30% fewer MACs within 1 point after a short fine-tune and a latency
ratio within 25% of the MAC ratio; beside them He et al. 2017 (abstract, ImageNet, fine-tuned):
VGG-16 5x faster at +0.3% error, ResNet-50 2x at -1.4% accuracy.
"""
from __future__ import annotations

import time

# The fraction of channels kept in every group, chosen for about 35% fewer MACs (the issue's
# target is 30%): a chain of convs (VGG) keeps about b^2 of its MACs, since both the inputs
# and the outputs of a middle layer shrink; ResNet-20, pruned inside its blocks only, about b.
# He et al.'s 2x is keep=0.7 on vgg_small: model_rows("vgg_small", keep=0.7).
BUDGETS = {"vgg_small": 0.8, "resnet20": 0.65, "lenet5": 0.5}
THREADS = 1


def l1_filter_keep(model, keep: float) -> dict:
    """Naive removal: in every group keep the producer's filters of largest L1 norm."""
    from ..prune.surgery import channel_groups
    chosen = {}
    for group in channel_groups(model):
        norms = model.get_submodule(group.name).weight.detach().abs().flatten(1).sum(1)
        chosen[group.name] = norms.topk(max(1, round(keep * len(norms)))).indices
    return chosen


def latency_comparison(base, pruned, batch: int, pairs: int = 30):
    """How many times faster ``pruned`` runs than ``base`` (both as shipped), the two timed
    interleaved on one thread (``measure.compare_latency``): the median per-pair ratio, its
    interquartile range, and "no measurable change" when that range includes 1."""
    from ..measure import compare_latency
    return compare_latency(pruned, base, tuple(base.input_shape), batch=batch, threads=THREADS,
                           pairs=pairs)


def pick_model(smoke: bool) -> str:
    from .. import zoo
    if smoke:
        return "lenet5"
    return next((n for n in ("vgg_small", "resnet20") if n in zoo.manifest()), "lenet5")


def rows(smoke: bool = False) -> list[dict]:
    return model_rows(pick_model(smoke), smoke)


def model_rows(name: str, smoke: bool = False, keep: float | None = None) -> list[dict]:
    """The comparison on zoo model ``name`` (e.g. "resnet20" for the residual case)."""
    from .. import data, measure, zoo
    from ..prune.reconstruct import DCP, ChannelLasso, ThiNet
    from ..prune.surgery import shrink
    from ..train import Recipe, evaluate, fit, quiet

    dataset = zoo.dataset_of(name)
    train, test = data.load(dataset, "train"), data.load(dataset, "test")
    if smoke:   # seconds: few images, a fine-tune of a few steps
        train, test = train.subset(512, seed=0), test.subset(500, seed=0)
    keep = keep or BUDGETS[name]
    sample = {"images": 64, "positions": 4} if smoke else {}
    methods = {
        "naive L1 filters": None,
        "prune.channel_lasso": ChannelLasso(keep=keep, **sample),
        "prune.thinet": ThiNet(keep=keep, **sample),
        "prune.dcp": DCP(keep=keep, **sample, **({"aux_images": 32, "head_epochs": 1}
                                                 if smoke else {})),
    }
    recipe = Recipe(epochs=1, lr=0.01, batch_size=128, weight_decay=5e-4, schedule="cosine",
                    augment=dataset == "cifar10", seed=0)
    base = zoo.pretrained(name)
    base_report = measure.report(base, test, name=name, latency=False)
    out = []
    for label, method in methods.items():
        start = time.time()
        pruned = shrink(base, l1_filter_keep(base, keep)) if method is None \
            else method.apply(base, train)
        seconds = time.time() - start
        before = evaluate(pruned, test)
        with quiet():
            fit(pruned, train, recipe)
        after = measure.report(pruned, test, name=label, latency=False)
        macs_x = base_report.macs / after.macs
        pairs = 6 if smoke else 30
        b1, b64 = (latency_comparison(base, pruned, b, pairs) for b in (1, 64))
        latency_x = b64.speedup
        out.append({
            "bench": f"channel pruning, {name}, same budget",
            "method": label, "keep": keep, "prune_s": round(seconds, 1),
            "acc_base": base_report.accuracy, "acc_pruned": round(before, 4),
            "acc_finetuned": after.accuracy,
            "loss_points": round(100 * (base_report.accuracy - after.accuracy), 2),
            "macs_x": round(macs_x, 2),
            "latency_b1_x": b1.speedup, "latency_b1_iqr": list(b1.spread),
            "latency_b1": b1.display,
            "latency_b64_x": b64.speedup, "latency_b64_iqr": list(b64.spread),
            "latency_b64": b64.display,
            # the median speedup at batch 64 within 25% of the MAC ratio (its IQR beside it)
            "latency_within_25pct": abs(latency_x / macs_x - 1) <= 0.25,
            "target": ">=1.43x MACs, <=1 pt loss after fine-tune",
            "paper": "He et al.: VGG-16 5x at +0.3% err; ResNet-50 2x at -1.4% (ImageNet)",
            "met": macs_x >= 1 / 0.7 and base_report.accuracy - after.accuracy <= 0.01,
            "fine_tune": f"{recipe.epochs} epoch, lr {recipe.lr}, {len(train)} images",
            "test_images": len(test), "threads": THREADS, "pairs": pairs,
            "load_avg": b64.load_avg,
        })
    return out
