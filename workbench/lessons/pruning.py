"""Lessons 01a and 01b: pruning weights, and pruning structure."""
from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import codec
from ..measure import count_params
from ..method import Method, layers_of
from ..widgets import Explorer, interactive_for, sliders_for
from .common import configured


def compared(method_id: str, smoke: bool = False, same: dict | None = None, **lesson) -> Method:
    """``configured``, except that ``same`` (the knobs a comparison holds equal, e.g. the
    share of channels kept) wins over the method's smoke settings too."""
    method = configured(method_id, smoke, **lesson, **(same or {}))
    return dataclasses.replace(method, **(same or {}))


def kept_weights(model) -> torch.Tensor:
    """Which weights of the Conv2d and Linear layers are nonzero, as one flat bool tensor."""
    return torch.cat([(m.weight != 0).flatten() for _, m in layers_of(model)])


def fc_params(model) -> int:
    """Weights and biases of the Linear layers."""
    return sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
               for m in model.modules() if isinstance(m, torch.nn.Linear))


def sensitivity_plot(scan: list[dict], base_accuracy: float, images: int, title: str):
    """One line per layer of ``prune.layer_sensitivity``'s rows: accuracy against the sparsity
    of that layer alone, with the unpruned accuracy dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for layer in dict.fromkeys(r["layer"] for r in scan):
        rows = [r for r in scan if r["layer"] == layer]
        ax.plot([r["sparsity"] for r in rows], [r["accuracy"] for r in rows], "o-", ms=3,
                label=f"{layer} ({rows[0]['weights']:,} weights)")
    ax.axhline(base_accuracy, color="0.5", ls="--", label="unpruned")
    ax.set_xlabel("sparsity of this one layer")
    ax.set_ylabel(f"accuracy ({images:,} test images)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)


def storage_row(model, formats: dict, tensor: str = "net.1.weight") -> dict:
    """The real file bytes of ``model`` in each of ``formats`` (name -> codec formats), the
    bytes its nonzero values alone take in fp32, and how the relative-index file (the last
    format) stores ``tensor``: format, index bits, fillers."""
    blobs = {name: codec.encode(model, formats=f) for name, f in formats.items()}
    header = codec.read_header(list(blobs.values())[-1])
    entry = next(t for t in header["tensors"] if t["name"] == tensor)
    nonzeros = count_params(model)[1]
    return {**{name: len(blob) for name, blob in blobs.items()},
            "values only (4 B x nonzeros)": 4 * nonzeros,
            f"bytes per nonzero, {list(formats)[-1]}":
                round(len(list(blobs.values())[-1]) / nonzeros, 2),
            f"{tensor}: format": entry["format"], "index bits": entry.get("index_bits"),
            "fillers": entry.get("fillers")}


def storage_plot(storage: list[dict], names, xlabel: str):
    """File size (log scale) against sparsity, one line per format; the values alone dotted."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for name in [*names, "values only (4 B x nonzeros)"]:
        ax.plot([r["sparsity"] for r in storage], [r[name] / 1e3 for r in storage],
                "k:" if name.startswith("values") else "o-", ms=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("file size (kB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)


class StorageExplorer(Explorer):
    """``widgets.Explorer`` for lesson 01a's storage section: the base pruned by magnitude,
    its real file in each of ``formats`` (``storage_row``) as a table and as bars (left), and
    every format's bytes against the sparsities visited (right), ``mark`` as a line."""

    def __init__(self, *args, formats: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.formats = formats

    def compute(self, **values):
        model, result, ratios = super().compute(**values)
        self.trail[-1].update(storage_row(model, self.formats))
        return model, result, ratios

    def rows(self, model, result) -> list[dict]:
        return [{"sparsity": self.trail[-1]["sparsity"], "accuracy": result.accuracy,
                 **{k: v for k, v in self.trail[-1].items()
                    if k not in ("sparsity", "accuracy", "bytes", "macs", "effective_macs")}}]

    def draw(self, left, right, model, knob: str):
        names = [*self.formats, "values only (4 B x nonzeros)"]
        sizes = [self.trail[-1][n] / 1e3 for n in names]
        left.barh(range(len(names)), sizes, color=[f"C{i}" for i in range(len(self.formats))]
                  + ["0.6"], alpha=0.6)
        for i, (label, size) in enumerate(zip(names, sizes)):     # labels inside the axes
            left.text(min(sizes) * 0.3, i, f"{label}: {size:,.0f} kB", va="center", fontsize=8)
        left.set_xscale("log")
        left.set_xlim(min(sizes) * 0.25, max(sizes) * 1.5)
        left.set_yticks([])
        left.set_xlabel("file size (kB, log scale)")
        trail = sorted(self.trail, key=lambda r: r[knob])
        for i, name in enumerate(names):
            right.plot([r[knob] for r in trail], [r[name] / 1e3 for r in trail],
                       "k:" if i == len(self.formats) else "o-", ms=3, label=name)
        if self.mark is not None:
            right.axvline(self.mark, color="k", ls="--", lw=0.8,
                          label=self.mark_label or f"{knob} = {self.mark}")
        right.set_yscale("log")
        right.set_xlabel(knob)
        right.set_ylabel("file size (kB)")
        right.legend(fontsize=7)


def explore_storage(base, test, formats: dict, name: str = "base", mark=None,
                    mark_label: str = "", sparsity: float = 0.9):
    """A ``sparsity`` slider (``Magnitude``): ``base`` pruned to it and written in each of
    ``formats`` (name -> codec formats): the bytes of every file, as a table, as bars, and
    against the sparsities visited; ``mark`` draws the paper's sparsity. The returned widget
    has ``.explorer`` like ``explore``'s."""
    from ..prune.magnitude import Magnitude
    explorer = StorageExplorer(Magnitude, base, test, None, name, mark, mark_label,
                               formats=formats)
    controls = sliders_for(Magnitude, ["sparsity"], True)
    controls["sparsity"].value = sparsity
    return interactive_for(explorer, Magnitude, controls, {}, None)


def speedup(model, base, pairs: int, batch: int = 64):
    """How many times faster ``model`` runs than ``base`` (both as shipped), batch ``batch``,
    one thread, interleaved in ``pairs`` pairs (``measure.compare_latency``)."""
    from ..measure import compare_latency
    return compare_latency(model, base, batch=batch, threads=1, pairs=pairs)


def speed_columns(c) -> dict:
    """A timing comparison as table columns: the model's median ms, the speed-up, in words."""
    return {"ms (b64)": round(c.a_ms, 1), "speed-up": c.speedup, "vs dense": c.display}


def sparse_speed_plot(detail: list[dict]) -> list[dict]:
    """The rows of bench ``pruning_speed`` at one thread: per case, the dense and the CSR
    product's median ms against sparsity (log scale). Returns, per case, how much the dense
    product's time moved between the first and the last sparsity of the plot (each point
    is its own timing run, so this drift is the machine's, see the interleaved check)."""
    cases = list(dict.fromkeys(r["case"] for r in detail))
    fig, axes = plt.subplots(1, len(cases), figsize=(11, 3.6), layout="constrained")
    drift = []
    for ax, case in zip(np.atleast_1d(axes), cases):
        rows = [r for r in detail if r["case"] == case]
        for kind in ("dense", "csr"):
            ax.plot([r["sparsity"] for r in rows], [r[f"{kind}_ms"] for r in rows], "o-",
                    ms=3, label=f"{kind} ({rows[0]['weights']} weights)")
        ax.set_yscale("log")
        ax.set_title(case, fontsize=9)
        ax.set_xlabel("weight sparsity")
        ax.set_ylabel("ms per product (1 thread)")
        ax.legend(fontsize=8)
        drift.append({"case": case, "dense ms at 0": rows[0]["dense_ms"],
                      f"dense ms at {rows[-1]['sparsity']}": rows[-1]["dense_ms"],
                      "last / first (separate runs)":
                          round(rows[-1]["dense_ms"] / rows[0]["dense_ms"], 2)})
    plt.show()
    plt.close(fig)
    return drift


def speed_vs_macs_plot(points: dict):
    """Measured speed-up (median, IQR bars) against how many times fewer (effective) MACs,
    log-log, one series per label of ``points`` (label -> [(MACs x, Comparison)]), with the
    diagonal where time would fall with the MACs; prints each point in words."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2), layout="constrained")
    for label, xy in points.items():
        ax.errorbar([x for x, _ in xy], [c.speedup for _, c in xy], fmt="o", capsize=2,
                    label=label, yerr=[[c.speedup - c.spread[0] for _, c in xy],
                                       [c.spread[1] - c.speedup for _, c in xy]])
    top = max(x for xy in points.values() for x, _ in xy)
    ax.plot([1, top], [1, top], "k:", label="speed-up = MAC reduction")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("MACs x fewer (effective)")
    ax.set_ylabel("measured speed-up (median, IQR), batch 64, 1 thread")
    ax.set_title("VGG-small: fewer MACs vs less time", fontsize=10)
    ax.legend(fontsize=8)
    plt.show()
    plt.close(fig)
    for label, xy in points.items():
        for x_macs, c in xy:
            print(f"{label}: {x_macs:.2f}x fewer MACs, {c.display} "
                  f"(latency ratio / MAC ratio = {x_macs / c.speedup:.2f})")
