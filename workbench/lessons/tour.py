"""Lessons 00 (the tour) and 03 (Deep Compression end to end)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from .. import codec
from ..measure import report
from ..plots import weights_of
from .common import measured


def one_shot_vs_han(models: dict, reports: dict, test) -> list[dict]:
    """Lesson 00's paper-vs-ours rows: each MNIST network of ``models`` that Han et al. 2015
    prune (``plots.HAN_2015``), pruned one-shot by magnitude to the share of weights they keep,
    beside their retrained error; ``reports`` holds the base networks' reports on ``test``."""
    from ..plots import HAN_2015
    from ..prune import Magnitude
    rows = []
    for name, paper in HAN_2015.items():
        if name not in models:
            continue
        ours = report(Magnitude(sparsity=1 - paper["kept"]).apply(models[name]), test,
                      latency=False)
        rows.append({"model": name, "weights kept": f"{paper['kept']:.0%}",
                     "paper: base err %": round(100 * paper["base_error"], 2),
                     "paper: pruned + retrained err %": round(100 * paper["error"], 2),
                     "ours: base err %": round(100 * (1 - reports[name].accuracy), 2),
                     "ours: one-shot err %": round(100 * (1 - ours.accuracy), 2),
                     "ours: nonzeros kept": f"{ours.nonzeros / ours.params:.1%}",
                     "test images": ours.test_images})
    return rows


def latency_lines(r) -> list[str]:
    """The interleaved latency comparisons of report ``r`` (made with ``latency_vs=``), one
    sentence per batch size with how they were timed."""
    return [f"batch {key.removeprefix('b')}: {c['display']} ({c['pairs']} interleaved pairs, "
            f"{c['threads']} thread(s), load average {c['load_avg']:.1f} on {c['cpus']} CPUs)"
            for key, c in (r.latency_vs or {}).items()]


def paper_stage_bytes(model_name: str) -> dict:
    """Lesson 03: the bytes of Han et al. 2016's dense, quantized (pruning + quantization) and
    Huffman-coded files of ``model_name`` (``reproduce.PAPER``: dense KB, final KB and the
    P+Q rate of the total row); the paper gives no bytes for pruning alone."""
    from ..reproduce import PAPER
    paper = PAPER[model_name]
    dense = paper["kb"][0] * 1000
    return {"dense": dense, "quantized": paper["layers"][-1][7] / 100 * dense,
            "huffman": paper["kb"][1] * 1000}


def stage_factors(model_name: str, stage_rows: list[dict]) -> dict:
    """Lesson 03: the factor each stage adds (bytes before / bytes after) in our run
    (``reproduce.tables``' stage rows) and what Huffman coding adds in the paper (its P+Q rate
    over its P+Q+H rate, total row of ``reproduce.PAPER``)."""
    from ..reproduce import PAPER
    size = {row["stage"]: row["bytes"] for row in stage_rows}
    total = PAPER[model_name]["layers"][-1]
    return {"pruning": size["dense"] / size["pruned"],
            "quantization": size["pruned"] / size["quantized"],
            "huffman": size["quantized"] / size["huffman"],
            "paper_huffman": total[7] / total[8],
            "paper_rates_pct": (total[7], total[8])}


def chain_at(chain, base, test, points: list[dict], dense_bytes: int) -> list[dict]:
    """Lesson 03: ``chain`` (a ``pipeline.Hybrid``, knobs named as ``explore`` names them,
    e.g. ``"quant.kmeans.k"``) applied to ``base`` at each of ``points`` and measured with
    ``measured``: the knobs, the file's bytes, x smaller than ``dense_bytes``, accuracy."""
    from ..widgets import configure
    rows = []
    for values in points:
        _, row = measured(configure(chain, values), base, test)
        rows.append({**values, "file bytes": row["file bytes"],
                     "x": round(dense_bytes / row["file bytes"], 1),
                     "file bits/weight": row["file bits/weight"],
                     "accuracy": row["accuracy"], "test images": len(test)})
    return rows


def accuracy_at(curves: dict, models: dict, test, sparsity: float) -> dict:
    """Lesson 00: each swept network's accuracy at ``sparsity`` (one-shot magnitude pruning),
    from the sweep's ``curves`` when it is a sweep point, else measured here on ``test``."""
    from ..prune import Magnitude
    out = {}
    for name, rows in curves.items():
        swept = {row["sparsity"]: row["accuracy"] for row in rows}
        out[name] = swept[sparsity] if sparsity in swept else report(
            Magnitude(sparsity=sparsity).apply(models[name]), test, latency=False).accuracy
    return out


def stream_panels(dense, shared, layer: str):
    """Lesson 03: a figure of ``layer``'s weights before (``dense``) and after sharing
    (``shared``) with the shared values as lines, and the histograms of the two streams Deep
    Compression Huffman-codes (codebook indices, gaps); returns (figure, streams)."""
    from ..plots import symbol_histogram, weight_histogram
    weight = shared.get_submodule(layer).weight.detach()
    streams = codec.deep_compression_streams(weight)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained")
    weight_histogram(axes[0], weights_of(dense), weight.flatten())
    axes[0].set_title(f"{layer}: {len(streams['codebook']) - 1} shared values", fontsize=9)
    for c in streams["codebook"]:
        axes[0].axvline(float(c), color="C3", lw=0.3)
    symbol_histogram(axes[1], streams["indices"], len(streams["codebook"]),
                     "codebook index of each entry")
    symbol_histogram(axes[2], streams["gaps"], 2 ** streams["index_bits"],
                     f"relative index (gap), {streams['index_bits']} bits")
    return fig, streams
