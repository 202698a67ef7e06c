"""What every lesson uses: a method at the lesson's settings, applied and measured; tables under a
smoke banner.
"""
from __future__ import annotations

import time

from IPython.display import HTML, display

from .. import METHODS, codec
from ..measure import html_table
from ..method import Method, layers_of
from ..train import evaluate, quiet


def configured(method_id: str, smoke: bool = False, **lesson) -> Method:
    """``METHODS[method_id]`` with the lesson's settings, the smoke ones winning in smoke runs
    (smoke runs shrink data and epochs, never the knobs a comparison is about)."""
    if method_id not in METHODS:
        raise ValueError(f"unknown method {method_id!r}; allowed: {sorted(METHODS)}")
    cls = METHODS[method_id]
    return cls(**{**lesson, **(cls.smoke if smoke else {})})


def weight_count(model) -> int:
    """Weights of the Conv2d and Linear layers (what bits per weight are counted over)."""
    return sum(m.weight.numel() for _, m in layers_of(model))


def measured(method: Method, base, test, data=None, label: str | None = None):
    """(network, row): ``method`` applied to ``base`` without progress bars, and its figures."""
    start = time.perf_counter()
    with quiet():
        model = method.apply(base, data if method.tags().needs_data else None)
    seconds = time.perf_counter() - start
    blob = codec.encode(model)
    bits = method.tags().bits_per_weight
    row = {"method": label or method.id,
           "settings": ", ".join(f"{k}={v}" for k, v in method.settings().items()),
           "bits (nominal)": None if bits is None else round(bits, 3),
           "file bytes": len(blob),
           "file bits/weight": round(8 * len(blob) / weight_count(base), 2),
           "accuracy": round(evaluate(model, test), 4), "seconds": round(seconds, 1)}
    return model, row


def formats(model) -> list[dict]:
    """How each weight tensor of ``model`` is stored in its file (format, bytes, k or bits)."""
    header = codec.read_header(codec.encode(model))
    return [{"tensor": t["name"], "format": t["format"], "bytes": t["nbytes"],
             "k / bits": t.get("k") or t.get("bits") or t.get("code_bits"),
             "stored as": t.get("stored_dtype", t["dtype"])}
            for t in header["tensors"] if t["name"].endswith("weight")]


SMOKE_BANNER = ("<p><b>Smoke run</b>: small subsets and few epochs, to check that the cell "
                "runs; these figures are not the lesson's results.</p>")


def show(rows: list[dict], smoke: bool = False) -> None:
    """A table of dicts in the notebook, under a banner in a smoke run."""
    display(HTML((SMOKE_BANNER if smoke else "") + html_table(rows)))


def weight_ratio(report) -> float:
    """Compression as Han et al. and Guo et al. count it: dense weights over nonzero weights
    of the Conv2d and Linear layers (biases are never pruned)."""
    return sum(row["params"] for row in report.layers) / sum(row["nonzeros"]
                                                             for row in report.layers)


def kept_by_layer(report) -> str:
    """The percentage of weights each layer keeps, "66.0 / 12.0 / ..."."""
    return " / ".join(f"{100 * row['nonzeros'] / row['params']:.1f}" for row in report.layers)


def paper_rows(ids, quoted: dict, ours: dict, every_id: bool = False) -> list[dict]:
    """"Paper vs ours" for catalogue ``ids``: a row for the catalogue's ``paper_target`` and one
    for ``quoted[id]`` = (the source's words, source), each beside ``ours[id]``. An id with
    neither is left out, or (``every_id``) shown with "-"."""
    from .. import catalogue
    rows = []
    for entry in map(catalogue.by_id, ids):
        found = ([(entry.paper_target, "catalogue")] if entry.paper_target else []) + \
                ([quoted[entry.id]] if entry.id in quoted else [])
        if not found and every_id:
            found = [("-", "no figure in the catalogue")]
        for paper, source in found:
            rows.append({"id": entry.id, "reference": entry.reference, "paper": paper,
                         "source": source,
                         "ours (this notebook)": ours.get(entry.id, "not measured in this lesson")})
    return rows
