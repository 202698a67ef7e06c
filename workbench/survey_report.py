"""The survey's report: Markdown, HTML and figures from the figures ``survey.main`` computed.

One section per family in the catalogue's order, each opened by a sentence on what the family
does; accuracy in percent beside the base network's; ratios as "x smaller / fewer / faster";
ours beside the paper's published figure in the paper's units (``workbench.papers``);
each method's settings folded away in the HTML (and in ``survey.json``). Figures: per zoo
network, accuracy against real bytes of every method; measured speed-up against the ratio of
MACs, with the diagonal; accuracy lost against bits per weight; the magnitude sweep.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

from . import catalogue, papers
from .measure import _cell, format_table, html_table


def method_display(row: dict) -> dict:
    """A method's row as the report shows it (survey.json keeps every figure)."""
    model = row["model"] + (f" after {' then '.join(row['input'])}" if row.get("input") else "")
    return {"method": row["method"], "model": model,
            "accuracy %": round(100 * row["accuracy"], 2),
            "base %": round(100 * row["base_accuracy"], 2),
            "x fewer nonzeros": row["nonzeros_x"], "x smaller file": row["bytes_x"],
            "x fewer MACs": row["effective_macs_x"],
            "x faster (b64)": row["latency_b64"], "bits/weight": row.get("bits_per_weight"),
            "ours | paper": papers.compare(row)}


def family_sections(methods: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(title, sentence, rows) per family that has rows, in the catalogue's order."""
    sections = []
    for family, title in catalogue.FAMILIES.items():
        rows = [r for r in methods if catalogue.by_id(r["method"]).family == family]
        if rows:
            sections.append((title, catalogue.FAMILY_SUMMARIES[family], rows))
    return sections


def draw_figures(out: Path, zoo: list[dict], methods: list[dict],
                 curves: dict) -> dict[str, Path]:
    """The report's figures as PNG files in ``out``; returns them by name."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .plots import (survey_accuracy_bytes, survey_bits_accuracy, survey_speed_against_macs,
                        sweep_plot)
    paths = {}
    models = [z for z in zoo if any(r["model"] == z["name"] for r in methods)]
    if models:
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.4),
                                 layout="constrained", squeeze=False)
        for ax, base in zip(axes[0], models):
            survey_accuracy_bytes(ax, base["name"], base,
                                  [r for r in methods if r["model"] == base["name"]],
                                  papers.byte_points(base["name"], base["bytes"]))
        paths["accuracy_bytes"] = _save(fig, out / "accuracy_bytes.png", plt)
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    survey_speed_against_macs(ax, methods)     # says so when nothing was timed (smoke)
    paths["speed_macs"] = _save(fig, out / "speed_macs.png", plt)
    fig, ax = plt.subplots(figsize=(6.5, 4.6), layout="constrained")
    survey_bits_accuracy(ax, methods)
    paths["bits_accuracy"] = _save(fig, out / "bits_accuracy.png", plt)
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    sweep_plot(curves, ax)
    paths["sweep"] = _save(fig, out / "sweep.png", plt)
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(head: list[tuple[str, str, list[dict]]], families, tail, figures) -> str:
    parts = ["# Compression workbench survey"]
    for title, text, rows in head:
        parts.append(f"## {title}\n\n{text}\n\n{format_table(rows)}")
    for title, text, rows in families:
        parts.append(f"## {title}\n\n{text}\n\n"
                     f"{format_table([_markdown_cells(method_display(r)) for r in rows])}")
    for title, text, rows in tail:
        parts.append(f"## {title}\n\n{text}\n\n{format_table(rows)}")
    parts.append("## Figures\n\n" + "\n".join(f"![{name}]({path.name})"
                                                for name, path in figures.items()))
    return "\n\n".join(parts) + "\n"


def _markdown_cells(display: dict) -> dict:
    """The row with "|" escaped, which would otherwise split a Markdown cell ("ours | paper")."""
    escape = lambda v: v.replace("|", "\\|") if isinstance(v, str) else v
    return {escape(k): escape(v) for k, v in display.items()}


def _method_html(rows: list[dict]) -> str:
    """The family's table, each method's settings folded in a <details> under its name."""
    shown = [method_display(r) for r in rows]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown[0])
    body = []
    for row, display in zip(rows, shown):
        settings = html.escape(json.dumps(row["settings"]))
        cells = [f"<td><details><summary>{html.escape(row['method'])}</summary>"
                 f"<code>{settings}</code></details></td>"]
        cells += [f"<td>{html.escape(_cell(v))}</td>" for k, v in display.items()
                  if k != "method"]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(head, families, tail, figures: dict[str, Path]) -> str:
    blocks = [f"<h2>{html.escape(t)}</h2><p>{html.escape(x)}</p>{html_table(rows)}"
              for t, x, rows in head]
    blocks += [f"<h2>{html.escape(t)}</h2><p>{html.escape(x)}</p>{_method_html(rows)}"
               for t, x, rows in families]
    blocks += [f"<h2>{html.escape(t)}</h2><p>{html.escape(x)}</p>{html_table(rows)}"
               for t, x, rows in tail]
    blocks.append("<h2>Figures</h2>" + "".join(
        f"<p><img alt='{name}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'></p>" for name, path in figures.items()))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
             "font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}"
             "details code{display:block;max-width:40em;white-space:pre-wrap}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Workbench survey</title>"
            f"<style>{style}</style></head><body><h1>Compression workbench survey</h1>"
            f"{''.join(blocks)}</body></html>")
