"""The figures shared by the notebooks, the widgets and the survey report."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .codec import plain_state_dict

# Published points: Han et al. 2015 ("Learning both weights and connections", Table 1):
# fraction of weights kept and test error after pruning *and retraining*.
HAN_2015 = {
    "lenet300": {"kept": 0.08, "error": 0.0159, "base_error": 0.0164,
                 "label": "Han et al. 2015: 12x, 1.59% err (pruned + retrained)"},
    "lenet5": {"kept": 0.08, "error": 0.0077, "base_error": 0.0080,
               "label": "Han et al. 2015: 12x, 0.77% err (pruned + retrained)"},
}


def weights_of(model) -> torch.Tensor:
    """All Conv2d / Linear weights of a model, masks folded in, as one flat tensor."""
    state = plain_state_dict(model)
    return torch.cat([v.flatten() for k, v in state.items()
                      if k.endswith("weight") and v.dim() > 1])


def weight_histogram(ax, before: torch.Tensor, after: torch.Tensor, bins: int = 120):
    """Histogram of the base weights and of the compressed model's nonzero weights.

    Takes flat weight tensors (see ``weights_of``); counts are binned with numpy and drawn as
    steps, which is several times faster than ``ax.hist`` for a live widget.
    """
    before, after = before.numpy(), after.numpy()
    edges = np.linspace(before.min(), before.max(), bins + 1)
    ax.stairs(np.histogram(before, edges)[0], edges, fill=True, color="0.8", label="base")
    ax.stairs(np.histogram(after[after != 0], edges)[0], edges, color="C0", lw=1.5,
              label="kept (nonzero)")
    ax.set_yscale("log")
    ax.set_xlabel("weight value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)


def sweep_plot(sweeps: dict[str, list[dict]], ax=None, x: str = "sparsity"):
    """Test error against sparsity, one line per model, with Han et al.'s published points.

    ``sweeps`` maps a zoo name to rows with keys ``sparsity`` and ``accuracy``.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4))
    for i, (name, rows) in enumerate(sweeps.items()):
        ax.plot([r[x] for r in rows], [100 * (1 - r["accuracy"]) for r in rows], "o-",
                color=f"C{i}", ms=3, label=f"{name}: ours, one-shot, no retraining")
        if name in HAN_2015:
            p = HAN_2015[name]
            ax.plot([1 - p["kept"]], [100 * p["error"]], "*", color=f"C{i}", ms=14,
                    markeredgecolor="k", label=p["label"])
    ax.set_xlabel("fraction of weights removed")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def stage_bars(ax, ours: list[dict], paper: dict | None = None):
    """Bytes after each stage (log scale), ours beside the paper's (``{stage: bytes}``),
    each bar labelled with its compression rate against the dense file."""
    names = [r["stage"] for r in ours]
    x = np.arange(len(names))
    width = 0.4 if paper else 0.6
    dense = ours[0]["bytes"]
    bars = ax.bar(x - (width / 2 if paper else 0), [r["bytes"] for r in ours], width,
                  color="C0", label="ours (real file)")
    ax.bar_label(bars, [f"{dense / r['bytes']:.1f}x" for r in ours], fontsize=8)
    if paper:
        values = [paper.get(n) for n in names]
        shown = [(i, v) for i, v in enumerate(values) if v]
        bars = ax.bar([i + width / 2 for i, _ in shown], [v for _, v in shown], width,
                      color="C1", label="Han et al. 2016")
        ax.bar_label(bars, [f"{values[0] / v:.1f}x" for _, v in shown], fontsize=8)
    ax.set_xticks(x, names)
    ax.set_yscale("log")
    ax.set_ylabel("bytes")
    ax.legend(fontsize=8)
    return ax


def symbol_histogram(ax, symbols: np.ndarray, alphabet: int, title: str):
    """How often each symbol occurs, with the fixed-length and the entropy cost in the title."""
    from .huffman import entropy_bits
    counts = np.bincount(symbols, minlength=alphabet)
    ax.bar(np.arange(alphabet), counts, width=1.0, color="C2")
    fixed = np.log2(max(alphabet, 2))
    ax.set_title(f"{title}\nfixed {fixed:.0f} bits, entropy "
                 f"{entropy_bits(symbols) / max(len(symbols), 1):.2f} bits", fontsize=9)
    ax.set_xlabel("symbol")
    ax.set_ylabel("count")


def bits_curve(ax, rows: list[dict], x: str = "bits"):
    """Test accuracy against bits per weight, one line per method (rows of
    ``bench.quantization_curve``); ``x="file_bits"`` uses the real file's bits instead."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    markers = "os^vD<>ph*"
    for i, name in enumerate(methods):
        points = sorted((r[x], 100 * r["accuracy"]) for r in rows
                        if r["method"] == name and r[x] is not None)
        if points:
            ax.plot(*zip(*points), marker=markers[i % len(markers)], ms=4, lw=1,
                    color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bits per weight" + (" (real file)" if x == "file_bits" else " (nominal)"))
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return ax
