"""``python -m workbench survey``: the zoo, every method at its defaults, and what is missing.

Writes ``survey.md``, ``survey.html`` (figures embedded), ``survey.json`` and the figures
(``workbench.survey_report``) into the output folder and prints the Markdown. Every cell is
cached in ``OUT/cells`` and cells can run in parallel processes (``workbench.cells``).
Methods that retrain take minutes each at their default settings, so the full survey takes a
while (progress goes to stderr); ``--smoke`` uses 1,000 test images, each method's smoke
settings, fewer sweep points and no latency.

Latency is timed on ``THREADS`` thread(s), warm, after every cell has been computed; a
method's speed-up is measured by timing its network (as shipped: decoded from its file) and
its base interleaved (``measure.compare_latency``) and shown with the interquartile range of
the per-pair ratios, or as "no measurable change". A network that runs its base's very
layers (``measure.same_layers``) is not timed, and says so. A cached timing is reused only on
the machine that measured it (``cells.machine``).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, fields
from functools import lru_cache
from pathlib import Path

from . import (IMPLEMENTED, METHODS, catalogue, cells, codec, data, papers, survey_report,
               zoo)
from .cells import Cache, canonical
from .measure import Report, compare_latency, report, same_layers
from .train import quiet

THREADS = 1         # one thread: steadier on shared cores, and the same on every machine
# A network that, decoded from its file, has its base's very layers (classes, settings,
# shapes, dtypes: unstructured pruning, weight sharing, lossless encodings) runs its base's
# kernels; it is not timed, and its row says why instead of showing noise around 1x.
SAME_LAYERS = "runs the base's layers: not timed"
# A/B pairs per comparison (timing.PAIRS is 30): dozens of networks are timed one after
# another, and at batch 64 a CIFAR-10 block takes seconds; 12 pair ratios still give the
# interquartile range that decides "no measurable change".
PAIRS = 12
# A lossless encoding changes the file, not the network: on a dense network it has nothing to
# encode. Each is shown on the network it is for, in Deep Compression's order: these methods
# run first, at their defaults, and the row says so and compares the file with theirs.
INPUTS = {"encode.sparse": ("prune.iterative",),
          "encode.huffman": ("prune.iterative", "quant.kmeans")}
SWEEP = [0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97, 0.98, 0.99]


def available_models() -> list[str]:
    return [name for name in zoo.RECIPES if name in zoo.manifest()]


@lru_cache(maxsize=4)
def test_set(dataset: str, images: int | None):
    """The official test split, or a fixed random subset of ``images`` (smoke runs)."""
    test = data.load(dataset, "test")
    return test if images is None else test.subset(images, seed=0)


def zoo_job(name: str, test_images: int | None, latency: bool) -> dict:
    return {"kind": "zoo", "model": name, "sha256": zoo.manifest()[name]["sha256"],
            "test_images": test_images, "latency": latency, "threads": THREADS,
            "machine": cells.machine() if latency else None}


def compute_zoo(job: dict) -> dict:
    """A zoo network's report (every field but the per-layer table), timed in this process."""
    r = report(zoo.pretrained(job["model"]), test_set(zoo.dataset_of(job["model"]),
                                                      job["test_images"]),
               job["model"], latency=job["latency"], threads=job["threads"])
    return {k: v for k, v in asdict(r).items() if k not in ("layers", "latency_vs")}


def zoo_rows(test_images: int | None, latency: bool, cache: Cache) -> tuple[list, dict, dict]:
    """The zoo table, each network's ``Report`` (for the methods' ratios) and the cell counts
    (``cells.run``). Computed one
    network after another in this process: these are the latencies every ratio rests on."""
    names = available_models()
    fields, counts = cells.run([zoo_job(n, test_images, latency) for n in names], compute_zoo,
                               cache, label="survey: zoo")
    rows, reports = [], {}
    for name, f in zip(names, fields):
        reports[name] = Report(**f)
        target = zoo.TARGETS[name]
        rows.append({**reports[name].row(), "target_min_acc": target["min_acc"],
                     "paper_acc": target["paper_acc"], "paper": target["paper"]})
    return rows, reports, counts


def chosen_methods(ids=None) -> dict:
    """The methods of METHODS named by ``ids`` (all when None), in METHODS order."""
    if ids is None:
        return dict(METHODS)
    unknown = sorted(set(ids) - set(METHODS))
    if unknown:
        raise ValueError(f"survey --methods: {', '.join(unknown)} not implemented; allowed: "
                         f"{', '.join(METHODS)}")
    return {mid: cls for mid, cls in METHODS.items() if mid in ids}


def make_method(method_id: str, smoke: bool, overrides: dict | None = None):
    """``method_id`` at its defaults (smoke: its smoke settings, as they must be beside
    ``overrides``, e.g. a chosen pruner's), with ``overrides``."""
    cls = METHODS[method_id]
    knobs = [f.name for f in fields(cls)]
    unknown = sorted(set(overrides or {}) - set(knobs))
    if unknown:
        raise ValueError(f"{method_id} has no setting {', '.join(unknown)}; allowed: "
                         f"{', '.join(knobs)}")
    overrides = overrides or {}
    return cls(**{**(cls.smoke_beside(overrides) if smoke else {}), **overrides})


def method_jobs(base_reports: dict, smoke: bool, all_models: bool = False, ids=None,
                overrides: dict | None = None, test_images: int | None = None,
                latency: bool = True) -> list[dict]:
    """One cell per method of ``ids`` (all by default) on its reference model, the first zoo
    network with a checkpoint that it supports (``all_models``: on every one). ``overrides``
    maps a method id to settings that replace its defaults."""
    overrides = overrides or {}
    bases = {name: zoo.pretrained(name) for name in base_reports}
    jobs = []
    for method_id in chosen_methods(ids):
        method = make_method(method_id, smoke, overrides.get(method_id))
        if method.unavailable():        # listed by ``not_run_rows`` instead
            continue
        inputs = [make_method(i, smoke, overrides.get(i)) for i in INPUTS.get(method_id, ())]
        names = [a for a in bases
                 if all(m.supports(bases[a]) for m in (*inputs, method))]
        for name in names if all_models else names[:1]:
            jobs.append({"kind": "method", "method": method_id, "settings": method.params(),
                         "overrides": overrides.get(method_id, {}), "smoke": smoke,
                         "input": [[i, make_method(i, smoke, overrides.get(i)).params()]
                                   for i in INPUTS.get(method_id, ())],
                         "model": name, "sha256": zoo.manifest()[name]["sha256"],
                         # what else it reads: a retrained teacher or architecture recomputes it
                         "reads": {n: zoo.manifest()[n]["sha256"] for n in method.checkpoints()
                                   if n in zoo.manifest()},
                         "test_images": test_images, "latency": latency, "threads": THREADS,
                         "machine": cells.machine() if latency else None,
                         "_base": {k: v for k, v in asdict(base_reports[name]).items()
                                   if k not in ("layers", "latency_vs")}})
    return jobs


def compute_method(job: dict) -> dict:
    """A method's row on its network (smoke: a 2,000-image training subset), without the
    latency, and the compressed network's file when it is to be timed."""
    start = time.perf_counter()
    method = make_method(job["method"], job["smoke"], job["overrides"])
    name, base = job["model"], Report(**job["_base"])
    test = test_set(zoo.dataset_of(name), job["test_images"])
    train = None
    if method.tags().needs_data or any(METHODS[i](**settings).tags().needs_data
                                       for i, settings in job["input"]):
        train = data.load(zoo.dataset_of(name), "train")
        train = train.subset(2000, seed=0) if job["smoke"] else train
    # Quiet: the run has one progress bar (cells done, time left); two workers' epoch bars
    # would interleave with it, and epoch lines would go into the printed report.
    with quiet():
        start_from, input_bytes = input_network(job, train)
        start = time.perf_counter()        # the method's own time, its input's training apart
        compressed = method.apply(start_from, train)
    r = report(compressed, test, f"{job['method']} on {name}", latency=False,
               threads=job["threads"])
    ratios = r.compare(base)
    seconds = round(time.perf_counter() - start, 1)
    print(f"survey: {job['method']} on {name}: accuracy {r.accuracy} ({seconds} s)",
          file=sys.stderr)
    row = {"method": job["method"], "model": name, "settings": method.settings(),
           "accuracy": r.accuracy, "base_accuracy": base.accuracy,
           "nonzeros_x": ratios["nonzeros_x"], "bytes": r.bytes, "bytes_x": ratios["bytes_x"],
           "gzip_bytes_x": ratios["gzip_bytes_x"],
           "effective_macs_x": ratios["effective_macs_x"],
           "bits_per_weight": method.bits_per_weight(), "latency_b64": None,
           "latency_vs_base": {}, "seconds": seconds,
           "paper_target": catalogue.by_id(job["method"]).paper_target,
           "paper": papers.as_dict(job["method"])}
    if job["input"]:
        row.update(input=[i for i, _ in job["input"]], input_bytes=input_bytes,
                   bytes_x_vs_input=round(input_bytes / r.bytes, 3))
    timed = job["latency"] and not same_layers(compressed, zoo.pretrained(name))
    if job["latency"] and not timed:
        row["latency_b64"] = SAME_LAYERS
    return {"row": row, "file": codec.encode(compressed) if timed else None}


def input_network(job: dict, train):
    """The network a method of ``INPUTS`` starts from (the job's input methods applied to the
    zoo network in order) and its file's bytes; the zoo network itself (bytes None) otherwise."""
    model = zoo.pretrained(job["model"])
    if not job["input"]:
        return model, None
    for method_id, settings in job["input"]:
        model = METHODS[method_id](**settings).apply(model, train)
    return model, len(codec.encode(model))


def time_method(job: dict, computed: dict) -> dict:
    """The row with the compressed network (as shipped: decoded from its file) timed against
    its base, interleaved at batch 1 and 64, in this process after every cell has run."""
    row = dict(computed["row"])
    if computed["file"] is not None:
        deployed, base = codec.decode(computed["file"]), zoo.pretrained(job["model"])
        row["latency_vs_base"] = {f"b{b}": compare_latency(deployed, base, batch=b,
                                                           threads=job["threads"],
                                                           pairs=PAIRS).row()
                                  for b in (1, 64)}
        row["latency_b64"] = row["latency_vs_base"]["b64"]["display"]
    return canonical(row)


def method_rows(base_reports: dict, smoke: bool, all_models: bool = False, ids=None,
                overrides: dict | None = None, test_images: int | None = None,
                latency: bool = True, cache: Cache | None = None,
                workers: int = 1) -> tuple[list[dict], dict]:
    """The methods' rows (``method_jobs``), computed in ``workers`` processes, cached."""
    jobs = method_jobs(base_reports, smoke, all_models, ids, overrides, test_images, latency)
    return cells.run(jobs, compute_method, cache or Cache(None), workers, finish=time_method,
                     label="survey: methods", cost=expected_cost)


def expected_cost(job: dict) -> int:
    """A rough rank of a cell's time, to start the long ones first: cells that train before
    cells that only evaluate, each by the MACs of its network per image (a LeNet-5 training
    costs far more than a LeNet-300-100 one, on the same data)."""
    method = make_method(job["method"], job["smoke"], job["overrides"])
    trains = method.tags().needs_data or bool(job["input"])
    return trains * 10**15 + job["_base"]["macs"]


def compute_sweep_point(job: dict) -> dict:
    from .prune import Magnitude
    pruned = Magnitude(sparsity=job["sparsity"]).apply(zoo.pretrained(job["model"]))
    return {"sparsity": job["sparsity"],
            "accuracy": report(pruned, test_set("mnist", job["test_images"]),
                               latency=False).accuracy}


def sweep(points, test_images: int | None = None, cache: Cache | None = None,
          workers: int = 1) -> tuple[dict[str, list[dict]], dict]:
    """Accuracy of one-shot magnitude pruning over sparsity, for the two MNIST networks."""
    jobs = [{"kind": "sweep", "model": name, "sha256": zoo.manifest()[name]["sha256"],
             "sparsity": s, "test_images": test_images}
            for name in ("lenet300", "lenet5") if name in available_models() for s in points]
    results, counts = cells.run(jobs, compute_sweep_point, cache or Cache(None), workers,
                                label="survey: sweep")
    curves = {}
    for job, result in zip(jobs, results):
        curves.setdefault(job["model"], []).append(result)
    return curves, counts


def not_run_rows(smoke: bool, ids=None, overrides: dict | None = None) -> list[dict]:
    """The methods that cannot run on this machine yet, and why (``Method.unavailable``)."""
    rows = []
    for method_id in chosen_methods(ids):
        reason = make_method(method_id, smoke, (overrides or {}).get(method_id)).unavailable()
        if reason:
            rows.append({"family": catalogue.FAMILIES[catalogue.by_id(method_id).family],
                         "id": method_id, "why": reason})
    return rows


def missing_rows() -> list[dict]:
    return [{"family": catalogue.FAMILIES[e.family], "id": e.id, "method": e.name,
             "reference": e.reference} for e in catalogue.missing(IMPLEMENTED)]


def main(out_dir: str = "survey", smoke: bool = False, all_models: bool = False,
         methods=None, overrides: dict | None = None, workers: int = 1,
         cache: bool = True) -> dict:
    """The survey, written to ``out_dir``; ``methods``: only these ids (all by default);
    ``overrides``: settings by method id that replace its defaults; ``workers`` processes
    compute the cells; ``cache``: reuse the cells kept in ``out_dir/cells`` (module
    ``workbench.cells``) and keep the new ones there."""
    chosen_methods(methods)       # a mistyped id fails before any work
    if workers < 1:
        raise ValueError(f"survey workers={workers}; allowed: 1 or more")
    for method_id, settings in (overrides or {}).items():
        chosen_methods([method_id])
        make_method(method_id, smoke, settings)     # a bad setting fails before any work too
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = Cache(out / "cells" if cache else None)
    test_images = 1000 if smoke else None
    for dataset in ("mnist", "cifar10"):    # a missing data file fails before any work
        test_set(dataset, test_images)
    zoo_table, base_reports, zoo_counts = zoo_rows(test_images, not smoke, store)
    methods_table, counts = method_rows(base_reports, smoke, all_models, methods, overrides,
                                        test_images, latency=not smoke, cache=store,
                                        workers=workers)
    curves, sweep_counts = sweep(SWEEP[::3] + [0.99] if smoke else SWEEP, test_images, store,
                                 workers)
    missing = missing_rows()
    not_run = not_run_rows(smoke, methods, overrides)

    images = "1,000 test images (smoke run)" if smoke else "the full official test sets"
    head = [("Model zoo", f"Accuracy on {images}; bytes are the real encoded file; MACs per "
                          "image; " + ("no latency in a smoke run." if smoke else
                                       f"latency: warm median in ms with its interquartile "
                                       f"range, on {THREADS} thread(s), the machine's 1-minute "
                                       "load average beside it."), zoo_table)]
    families = [(title, f"{text} Each method at its {'smoke' if smoke else 'default'} "
                        "settings (under its name in the HTML page) on its reference model; "
                        "ratios are x smaller / fewer than that model"
                        + ("." if smoke else "; x faster: the two networks timed interleaved "
                           "at batch 64, median and interquartile range of the per-pair "
                           "ratios, or no measurable change; a network that runs its base's "
                           "very layers (same classes, settings, shapes and dtypes) is not "
                           "timed."), rows)
                for title, text, rows in survey_report.family_sections(methods_table)]
    tail = [("Magnitude pruning sweep", "Test accuracy (%) of one-shot magnitude pruning (no "
                                        "retraining) at each sparsity (share of weights "
                                        "removed); the figure sets Han et al. 2015's "
                                        "pruned-and-retrained points beside it.",
             [{"model": m, **{f"{100 * r['sparsity']:g}%": round(100 * r["accuracy"], 2)
                              for r in rows}} for m, rows in curves.items()])]
    if not_run:
        tail.append((f"Methods not run on this machine ({len(not_run)})",
                     "Implemented, but what they need is not here yet.", not_run))
    tail += [(f"Catalogue ids still missing ({len(missing)} of {len(catalogue.CATALOGUE)}; "
             f"{len(IMPLEMENTED)} implemented)", "", missing)]
    pictures = survey_report.draw_figures(out, zoo_table, methods_table, curves)
    markdown = survey_report.markdown(head, families, tail, pictures)
    (out / "survey.md").write_text(markdown)
    (out / "survey.html").write_text(survey_report.page(head, families, tail, pictures))
    run = {kind: c for kind, c in (("zoo", zoo_counts), ("methods", counts),
                                   ("sweep", sweep_counts))}
    run["seconds"] = round(time.perf_counter() - start, 1)
    run["workers"] = workers
    figures = {"zoo": zoo_table, "methods": methods_table, "sweep": curves,
               "missing": [r["id"] for r in missing], "not_run": not_run, "smoke": smoke,
               "run": run}
    (out / "survey.json").write_text(json.dumps(figures, indent=2))
    print(markdown)
    computed = sum(c["computed"] for c in (zoo_counts, counts, sweep_counts))
    cached = sum(c["cached"] for c in (zoo_counts, counts, sweep_counts))
    print(f"\nwrote {out / 'survey.md'}, {out / 'survey.html'}, {out / 'survey.json'}\n"
          f"{computed} cells computed, {cached} reused from {store.root or 'no cache'}, "
          f"in {run['seconds']} s with {workers} worker(s)")
    return figures

