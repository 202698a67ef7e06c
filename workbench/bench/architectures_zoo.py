"""``python -m workbench bench architectures``: every CIFAR-10 network of the zoo in one
table: accuracy, params, MACs, bytes, measured latency at batch 1 and 64 on 1 and 2 threads,
and time per MAC, with the issue's two targets:

- every compact network reaches ``MIN_ACCURACY`` on the test set;
- at least ``DOMINATING`` of them *dominate* ``vgg_small`` or ``resnet20``: no lower accuracy
  with fewer MACs *and* fewer parameters.

Time per MAC is where MACs and time disagree: a depthwise, grouped or shuffled convolution
does little arithmetic per byte it moves, so on a CPU it runs slower per MAC than a dense 3x3
convolution, and a network with a quarter of the MACs need not be four times faster. Each
latency is ``timing.time_model`` (warm, at least five blocks, thread count fixed, the load
recorded), of the network as decoded from its file. A network whose checkpoint is not in the
zoo yet has a row that says so and is left out of both targets' counts.

The full run also draws ``architectures.png`` in the current folder (``plots.architecture_map``):
accuracy against MACs, and latency against MACs, with the two reference networks marked.
"""
from __future__ import annotations

from .. import codec, zoo
from ..measure import count_params, input_shape_of, report
from ..models import ARCHITECTURES
from ..timing import time_model

MIN_ACCURACY = 0.85
DOMINATING = 3
REFERENCES = ("vgg_small", "resnet20")
PLOT = "architectures.png"


def cifar_networks() -> list[str]:
    return [n for n, (_, dataset) in ARCHITECTURES.items() if dataset == "cifar10"]


def measure_one(name: str, smoke: bool) -> dict:
    entry = zoo.manifest()[name]
    model = codec.decode(codec.encode(zoo.pretrained(name)))   # what a user would deploy
    shape = input_shape_of(model)
    figures = report(model, latency=False)
    row = {"bench": "architectures_zoo", "model": name, "accuracy": entry["test_acc"],
           "params": count_params(model)[0], "macs": figures.macs, "bytes": figures.bytes,
           "train_minutes": round(entry["wall_seconds"] / 60, 1),
           "train_threads": entry.get("threads")}
    for threads in ((1,) if smoke else (1, 2)):
        for batch in (1, 64):
            t = time_model(model, shape, batch=batch, threads=threads,
                           min_run_time=0.02 if smoke else 0.5, warmup=1 if smoke else 5)
            row[f"ms_b{batch}_t{threads}"] = round(t.median_ms, 3)
            row[f"iqr_b{batch}_t{threads}"] = round(t.iqr_ms, 3)
    # nanoseconds per multiply-accumulate at batch 64, one thread: the cost of a MAC here
    row["ns_per_mac_b64_t1"] = round(row["ms_b64_t1"] * 1e6 / (64 * figures.macs), 3)
    row["load_avg"] = t.load_avg
    return row


def dominated(row: dict, by: list[dict]) -> list[str]:
    """The reference networks that ``row`` dominates (no lower accuracy, fewer MACs and
    fewer parameters)."""
    return [ref["model"] for ref in by
            if row["accuracy"] >= ref["accuracy"] and row["macs"] < ref["macs"]
            and row["params"] < ref["params"]]


def rows(smoke: bool = False) -> list[dict]:
    trained = set(zoo.trained())
    names = cifar_networks()
    measured = [measure_one(n, smoke) for n in names if n in trained]
    refs = [r for r in measured if r["model"] in REFERENCES]
    compact = [r for r in measured if r["model"] not in REFERENCES]
    for r in measured:
        r["dominates"] = ", ".join(dominated(r, refs)) if r in compact else "(reference)"
        r["min_accuracy"] = MIN_ACCURACY if r in compact else None
        r["met"] = None if smoke or r not in compact else r["accuracy"] >= MIN_ACCURACY
    waiting = [{"bench": "architectures_zoo", "model": n, "status": "not trained yet: "
                f"python -m workbench zoo train {n}"} for n in names if n not in trained]
    count = sum(1 for r in compact if dominated(r, refs))
    summary = {"bench": "architectures_zoo", "target": f">= {DOMINATING} compact networks "
               f"dominate {' or '.join(REFERENCES)}", "dominating": count,
               "compact_trained": len(compact), "compact_missing": len(waiting),
               "met": None if smoke else count >= DOMINATING}
    if not smoke:
        _draw(measured)
    return measured + waiting + [summary]


def _draw(measured: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plots import architecture_map
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    architecture_map(axes, measured, references=REFERENCES)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)
    plt.close(fig)
    print(f"wrote {PLOT}")
