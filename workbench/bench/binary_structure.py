"""``python -m workbench bench binary_structure``: binary methods that change a network's
structure or choose which filters are binary: Bi-Real Net, pattern binarization, LBC.

- Bi-Real Net on ResNet-20 (zoo checkpoint) with and without the per-convolution real-valued
  shortcuts, at equal fine-tuning (same data, epochs, seed): the accuracy of each and the
  difference, the benefit the paper claims for its shortcuts (issue 10).
- Pattern binarization (binary 3x3 / 5x5 filters, float 1x1 and linear layers) on ResNet-20
  and LeNet-5: the accuracy after the same fine-tuning. The trained zoo networks have no 1x1
  convolutions (ResNet-20 uses zero-padded shortcuts); the compact networks that have many
  (MobileNet, SqueezeNet, NiN ...) are not trained yet.
- LBC on ResNet-20: learnable parameters against the convolutions it replaced beside the
  paper's 9x-169x (no target: with width 1 the ratio is k^2 by construction, 9 for 3x3), the
  fixed anchor weights beside them, and the accuracy.

Fine-tuning is short: a stratified subset of the training set for a few epochs on one
thread (papers train for hundreds of GPU epochs). Accuracy is on a stratified subset of the
official test set; both sizes are in each row.
"""
from __future__ import annotations

import time

import torch

BIREAL = ("Bi-Real-18 ImageNet 56.4% top-1, up to 10 points above XNOR-Net (abstract, arXiv "
          "1808.00278)")
LBC = "9x-169x fewer learnable parameters than the conv layers (abstract, arXiv 1608.06049)"
SEP = "SEP-Net: kxk binary, 1x1 float, marginal drop on GoogLeNet / Inception (abstract)"


def _run(method, base, train, test) -> tuple[torch.nn.Module, dict]:
    from .. import codec
    from ..train import evaluate, quiet
    start = time.perf_counter()
    with quiet():
        out = method.apply(base, train if method.tags().needs_data else None)
    wall = time.perf_counter() - start
    acc, base_acc = 100 * evaluate(out, test), 100 * evaluate(base, test)
    settings = " ".join(f"{k}={v}" for k, v in method.settings().items()
                        if k in ("shortcuts", "keep_first", "sparsity", "width", "epochs", "lr"))
    return out, {"method": method.id, "settings": settings, "acc_pct": round(acc, 2),
                 "base_acc_pct": round(base_acc, 2), "delta_pts": round(acc - base_acc, 2),
                 "bytes": len(codec.encode(out)), "train_images": len(train),
                 "test_images": len(test), "wall_s": round(wall, 1),
                 "threads": torch.get_num_threads()}


def rows(smoke: bool = False) -> list[dict]:
    from .. import data, zoo
    from ..binary.bireal import BiReal, Pattern
    from ..binary.lbc import LocalBinary, parameter_counts
    cifar_train, cifar_test = data.cifar10("train"), data.cifar10("test")
    mnist_train, mnist_test = data.mnist("train"), data.mnist("test")
    if smoke:   # seconds: tiny subsets, one epoch (figures not meaningful)
        sizes, epochs = (256, 200, 256, 200), 1
    else:
        sizes, epochs = (4000, 2000, 6000, 2000), 2
    cifar_train, cifar_test = cifar_train.subset(sizes[0], 0), cifar_test.subset(sizes[1], 0)
    mnist_train, mnist_test = mnist_train.subset(sizes[2], 0), mnist_test.subset(sizes[3], 0)
    resnet, lenet = zoo.pretrained("resnet20"), zoo.pretrained("lenet5")
    out = []

    accs = {}
    for shortcuts in (False, True):
        _, row = _run(BiReal(shortcuts=shortcuts, epochs=epochs), resnet, cifar_train,
                      cifar_test)
        accs[shortcuts] = row["acc_pct"]
        out.append({**row, "model": "resnet20", "target": "-", "paper": BIREAL, "met": None})
    benefit = round(accs[True] - accs[False], 2)
    out.append({"method": "binary.bireal shortcut benefit", "model": "resnet20",
                "settings": f"epochs={epochs}, same data and seed",
                "benefit_pts": benefit, "target": "> 0 points", "paper": BIREAL,
                "met": None if smoke else benefit > 0})

    for model, base, train, test in (("resnet20", resnet, cifar_train, cifar_test),
                                     ("lenet5", lenet, mnist_train, mnist_test)):
        _, row = _run(Pattern(epochs=epochs), base, train, test)
        out.append({**row, "model": model, "target": "-", "paper": SEP, "met": None})

    lbc, row = _run(LocalBinary(epochs=epochs), resnet, cifar_train, cifar_test)
    learnable, fixed = parameter_counts(lbc)
    replaced = sum(m.weight.numel() for n, m in resnet.named_modules()
                   if n in set(LocalBinary().target_layers(resnet)))
    mixed = sum(m.mix.weight.numel() for m in lbc.modules() if hasattr(m, "anchors"))
    ratio = round(replaced / mixed, 2)
    out.append({**row, "model": "resnet20", "learnable": learnable, "fixed": fixed,
                "base_params": sum(p.numel() for p in resnet.parameters()),
                "replaced_conv_params": replaced, "lbc_learnable_params": mixed,
                "learnable_ratio": ratio, "target": "-",
                "paper": LBC, "met": None,
                "note": "no target we could miss: with width=1 an LBC layer learns c_in c_out of "
                        "a kxk layer's c_in k^2 c_out weights, k^2 fewer by construction (9x for "
                        "ResNet-20's 3x3; the paper's 169x is 13x13 kernels)"})
    return out
