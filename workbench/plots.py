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
