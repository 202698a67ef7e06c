"""Lesson 01a's exercises: the magnitude mask of one layer, and the bytes of a layer in CSR.

``check_magnitude_mask(f)``: ``f(weight, sparsity)`` must return the 0/1 mask that removes the
``round(sparsity * n)`` weights of smallest |w|, as ``prune.magnitude.magnitude_mask`` does
(and ``torch.nn.utils.prune.l1_unstructured``), on LeNet-300-100's trained layers.
``check_csr_bytes(f)``: ``f(weight)`` must return the bytes of a 2-D weight in CSR with
32-bit row pointers and column indices and fp32 values, as the codec's ``csr32`` file
stores it, on magnitude-pruned layers of LeNet-300-100.
"""
from __future__ import annotations

import torch

from . import run

SPARSITIES = (0.5, 0.9, 0.99)


def _layers():
    from .. import zoo
    net = zoo.pretrained("lenet300")
    return [(name, m.weight.detach().clone()) for name, m in net.named_modules()
            if isinstance(m, torch.nn.Linear)]


def check_magnitude_mask(function) -> bool | None:
    """Compare ``function(weight, sparsity)`` with the library's mask on every layer of
    LeNet-300-100 at sparsities 0.5, 0.9 and 0.99."""
    from ..prune.magnitude import magnitude_mask
    cases = [(f"layer {name} ({w.shape[0]}x{w.shape[1]}) at sparsity {s}", (w.clone(), s), {})
             for name, w in _layers() for s in SPARSITIES]

    def judge(label, mask, args, kwargs):
        weight, sparsity = args
        expected = magnitude_mask(weight, sparsity)
        if not isinstance(mask, torch.Tensor):
            return f"expected a tensor, got {type(mask).__name__}"
        if mask.shape != weight.shape:
            return f"the mask has shape {tuple(mask.shape)}, the weight {tuple(weight.shape)}"
        values = set(torch.unique(mask.float()).tolist())
        if not values <= {0.0, 1.0}:
            return f"a mask holds only 0 and 1, yours also {sorted(values - {0.0, 1.0})[:3]}"
        kept, want = int(mask.count_nonzero()), int(expected.count_nonzero())
        if kept != want:
            hint = (" (did you keep the share `sparsity` instead of removing it?)"
                    if kept == weight.numel() - want else "")
            return f"you keep {kept:,} weights, the library keeps {want:,}{hint}"
        if not torch.equal(mask.float(), expected.float()):
            signed = torch.zeros(weight.numel())
            signed[torch.topk(weight.flatten(), want).indices] = 1
            hint = (" (you kept the smallest |w|: keep the largest)"
                    if weight.abs()[mask.bool()].mean() < weight.abs()[~mask.bool()].mean()
                    else " (rank by |w|, not by the signed w)"
                    if torch.equal(mask.flatten().float(), signed) else "")
            wrong = int((mask.float() != expected.float()).sum())
            return f"the right count, but {wrong:,} weights differ from the library's{hint}"
        return None

    return run("magnitude_mask", function, cases, judge,
               "your masks equal the library's on every layer at every sparsity")


def check_csr_bytes(function) -> bool | None:
    """Compare ``function(weight)`` with the size of the codec's ``csr32`` tensor, for every
    layer of LeNet-300-100 pruned by magnitude to 0, 0.9 and 0.99."""
    from .. import codec, zoo
    from ..prune.magnitude import Magnitude
    cases = []
    for s in (0.0, 0.9, 0.99):
        pruned = codec.decode(codec.encode(Magnitude(sparsity=s).apply(zoo.pretrained("lenet300"))))
        header = codec.read_header(codec.encode(pruned, formats=("csr32",)))
        sizes = {t["name"]: t["nbytes"] for t in header["tensors"]}
        for name, m in pruned.named_modules():
            if isinstance(m, torch.nn.Linear):
                cases.append((f"{name}.weight at sparsity {s} ({int(m.weight.count_nonzero()):,} "
                              "nonzeros)", (m.weight.detach().clone(),),
                              {"_bytes": sizes[f"{name}.weight"]}))

    def judge(label, got, args, kwargs):
        expected = kwargs["_bytes"]
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return f"expected a number of bytes, got {type(got).__name__}"
        if got != int(got):
            return f"a file holds whole bytes; you say {got}"
        got = int(got)
        if got == expected:
            return None
        rows, nnz = args[0].shape[0], int(args[0].count_nonzero())
        hints = {8 * nnz: "you left out the row pointers (rows + 1 of them, 4 bytes each)",
                 4 * nnz + 4 * (rows + 1): "you left out the column indices (4 bytes each)",
                 8 * nnz + 4 * rows: "there are rows + 1 row pointers, not rows",
                 8 * args[0].numel() + 4 * (rows + 1): "count only the nonzeros, not every weight"}
        return f"you say {got:,} bytes, the codec's csr32 file holds {expected:,}" + (
            f" ({hints[got]})" if got in hints else "")

    def call(weight, _bytes):     # the expected size travels with the case, hidden
        return function(weight)

    return run("csr_bytes", call, cases, judge,
               "your sizes equal the codec's csr32 bytes for every layer and sparsity")
