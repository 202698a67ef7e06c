"""``python -m workbench survey``: the zoo, every method at its defaults, and what is missing.

Writes ``survey.md``, ``survey.html`` (plots embedded), ``survey.json`` and ``sweep.png`` into
the output folder and prints the Markdown. Methods that retrain take minutes each at their
default settings, so the full survey takes a while (progress goes to stderr); ``--smoke`` uses
1,000 test images, each method's smoke settings, fewer sweep points and no latency.

Latency is timed on ``THREADS`` thread(s), warm; a method's speed-up is measured by timing its
network and its base interleaved (``report(..., latency_vs=base)``, see ``workbench.timing``)
and shown with the interquartile range of the per-pair ratios, or as "no measurable change".
"""
from __future__ import annotations

import base64
import html
import json
import sys
import time
from pathlib import Path

import matplotlib

from . import METHODS, catalogue, data, zoo
from .measure import format_table, html_table, report

THREADS = 1         # one thread: steadier on shared cores, and the same on every machine
SWEEP = [0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97, 0.98, 0.99]


def available_models() -> list[str]:
    return [name for name in zoo.RECIPES if name in zoo.manifest()]


def zoo_rows(test_sets, latency: bool) -> tuple[list[dict], dict]:
    rows, reports = [], {}
    for name in available_models():
        r = report(zoo.pretrained(name), test_sets[zoo.dataset_of(name)], name,
                   latency=latency, threads=THREADS)
        reports[name] = r
        target = zoo.TARGETS[name]
        rows.append({**r.row(), "target_min_acc": target["min_acc"],
                     "paper_acc": target["paper_acc"], "paper": target["paper"]})
    return rows, reports


def chosen_methods(ids=None) -> dict:
    """The methods of METHODS named by ``ids`` (all when None), in METHODS order."""
    if ids is None:
        return dict(METHODS)
    unknown = sorted(set(ids) - set(METHODS))
    if unknown:
        raise ValueError(f"survey --methods: {', '.join(unknown)} not implemented; allowed: "
                         f"{', '.join(METHODS)}")
    return {mid: cls for mid, cls in METHODS.items() if mid in ids}


def method_rows(test_sets, base_reports, latency: bool, smoke: bool,
                all_models: bool, ids=None) -> list[dict]:
    """Every method in METHODS (or those of ``ids``) at its default settings (smoke: its
    ``smoke`` settings and a 2,000-image training subset) on its reference model, the first
    zoo network with a checkpoint that it supports (``all_models``: on every one)."""
    rows = []
    bases = {name: zoo.pretrained(name) for name in base_reports}   # apply never changes them
    for method_id, cls in chosen_methods(ids).items():
        method = cls(**cls.smoke) if smoke else cls()
        names = [a for a in bases if method.supports(bases[a])]
        for name in names if all_models else names[:1]:
            start = time.perf_counter()
            base = base_reports[name]
            test = test_sets[zoo.dataset_of(name)]
            train = None
            if method.tags().needs_data:
                train = data.load(zoo.dataset_of(name), "train")
                train = train.subset(2000, seed=0) if smoke else train
            compressed = method.apply(bases[name], train)
            r = report(compressed, test, f"{method_id} on {name}", latency=latency,
                       threads=THREADS, latency_vs=bases[name] if latency else None)
            ratios = r.compare(base)
            seconds = round(time.perf_counter() - start, 1)
            print(f"survey: {method_id} on {name}: accuracy {r.accuracy} "
                  f"({seconds} s)", file=sys.stderr)
            rows.append({"method": method_id, "model": name, "settings": method.settings(),
                         "accuracy": r.accuracy, "base_accuracy": base.accuracy,
                         "nonzeros_x": ratios["nonzeros_x"], "bytes": r.bytes,
                         "bytes_x": ratios["bytes_x"], "gzip_bytes_x": ratios["gzip_bytes_x"],
                         "effective_macs_x": ratios["effective_macs_x"],
                         "latency_b64": ratios.get("latency_b64"),
                         "latency_vs_base": r.latency_vs, "seconds": seconds,
                         "paper_target": catalogue.by_id(method_id).paper_target})
    return rows


def sweep(test_sets, points) -> dict[str, list[dict]]:
    """Accuracy of one-shot magnitude pruning over sparsity, for the two MNIST networks."""
    from .prune import Magnitude
    curves = {}
    for name in ("lenet300", "lenet5"):
        if name not in available_models():
            continue
        base = zoo.pretrained(name)
        curves[name] = [{"sparsity": s, "accuracy": report(Magnitude(sparsity=s).apply(base),
                                                           test_sets["mnist"], latency=False).accuracy}
                        for s in points]
    return curves


def missing_rows() -> list[dict]:
    return [{"family": catalogue.FAMILIES[e.family], "id": e.id, "method": e.name,
             "reference": e.reference} for e in catalogue.missing(METHODS)]


def main(out_dir: str = "survey", smoke: bool = False, all_models: bool = False,
         methods=None) -> dict:
    """The survey, written to ``out_dir``; ``methods``: only these ids (all by default)."""
    chosen_methods(methods)       # a mistyped id fails before any work
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .plots import sweep_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    test_sets = {name: data.load(name, "test") for name in ("mnist", "cifar10")}
    if smoke:
        test_sets = {k: v.subset(1000, seed=0) for k, v in test_sets.items()}
    zoo_table, base_reports = zoo_rows(test_sets, latency=not smoke)
    methods_table = method_rows(test_sets, base_reports, latency=not smoke, smoke=smoke,
                                all_models=all_models, ids=methods)
    curves = sweep(test_sets, SWEEP[::3] + [0.99] if smoke else SWEEP)
    missing = missing_rows()

    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    sweep_plot(curves, ax)
    fig.savefig(out / "sweep.png", dpi=110)
    plt.close(fig)

    images = "1,000 test images (smoke run)" if smoke else "the full official test sets"
    implemented = len(METHODS)
    sections = [
        ("Model zoo", f"Accuracy on {images}; bytes are the real encoded file; MACs per image; "
                      + ("no latency in a smoke run." if smoke else
                         f"latency: warm median in ms with its interquartile range, on "
                         f"{THREADS} thread(s), the machine's 1-minute load average beside it."),
         zoo_table),
        ("Methods at their " + ("smoke" if smoke else "default") + " settings",
         "On each method's reference model; ratios are x smaller / fewer than the base model"
         + ("." if smoke else "; latency_b64: how many times faster than the base at batch 64, "
            "the two timed interleaved (median and interquartile range of the per-pair "
            "ratios), or no measurable change when that range includes 1 or the ratio is "
            "within 5% of it (all figures in survey.json)."),
         [{**{k: v for k, v in r.items() if k != "latency_vs_base"},
           "settings": json.dumps(r["settings"])} for r in methods_table]),
        ("Magnitude pruning sweep", "Test error of one-shot magnitude pruning (no retraining) "
                                    "against Han et al. 2015's pruned-and-retrained points.",
         [{"model": m, **r} for m, rows in curves.items() for r in rows]),
        (f"Catalogue ids still missing ({len(missing)} of {len(catalogue.CATALOGUE)}; "
         f"{implemented} implemented)", "", missing),
    ]
    markdown = "# Compression workbench survey\n\n" + "\n\n".join(
        f"## {title}\n\n{text}\n\n{format_table(rows)}" for title, text, rows in sections)
    markdown += "\n\n![sweep](sweep.png)\n"
    (out / "survey.md").write_text(markdown)
    (out / "survey.html").write_text(_html(sections, out / "sweep.png"))
    figures = {"zoo": zoo_table, "methods": methods_table, "sweep": curves,
               "missing": [r["id"] for r in missing], "smoke": smoke}
    (out / "survey.json").write_text(json.dumps(figures, indent=2))
    print(markdown)
    print(f"\nwrote {out / 'survey.md'}, {out / 'survey.html'}, {out / 'survey.json'}")
    return figures


def _html(sections, plot: Path) -> str:
    image = base64.b64encode(plot.read_bytes()).decode()
    body = "".join(f"<h2>{html.escape(title)}</h2><p>{html.escape(text)}</p>{html_table(rows)}"
                   for title, text, rows in sections)
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Workbench survey</title>"
            f"<style>{style}</style></head><body><h1>Compression workbench survey</h1>{body}"
            f"<img src='data:image/png;base64,{image}' alt='sweep'></body></html>")
