"""``python -m workbench bench widgets_browser``: one widget of each lesson, moved in a real
browser (JupyterLab started here, Debian's Chromium driven by Playwright, ``workbench.browser``)
with the keyboard: p50 / p95 / max of the time from key press to the finished plot over 20
moves. Target (issue 16): p95 under 1 s for the methods that do not retrain.

Each lesson runs in a temporary copy, its cells up to and including the widget's cell (the
cells before build what the widget needs), in full mode; smoke: lesson 00 only, in smoke mode
(CI=1), 5 moves. Without Playwright or Chromium the rows say why and measure nothing.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np

from .. import browser

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TARGET_P95_S = 1.0

# lesson -> (a text of the widget's cell, the label of the slider moved, whether it retrains)
LESSONS = {
    "00_tour.ipynb": ("widget = explore(wb.Magnitude, base, test_small", "sparsity", False),
    "01a_pruning_weights.ipynb": ("widget = explore(wb.Magnitude, lenet300", "sparsity", False),
    "01b_pruning_structure.ipynb": ('widget = explore(wb.METHODS["prune.activity"]', "fraction",
                                    False),
    "02a_quantization_codebooks.ipynb": ('sliders=["budget"]', "budget", False),
    "02b_quantization_lowbit_int8.ipynb": ('sliders=["weight_bits"]', "weight_bits", True),
    "03_deep_compression.ipynb": ("knobs = explore(chain", "prune.magnitude.sparsity", False),
    "04_binary.ipynb": ('lesson04_widget("binary.abc"', "M", False),
    "05_lowrank.ipynb": ("explore_rank(SVD", "rank", False),
    "06_distillation.ipynb": ("explore_temperature(", "T", False),
    "07_architectures.ipynb": ('explore_architecture("mobilenet"', "width", False),
    "08_search.ipynb": ("explore_budget(", "x smaller", False),
}


def widget_cell(lesson: Path, marker: str) -> int:
    """Index of the first code cell of ``lesson`` whose source contains ``marker``."""
    import json
    cells = json.loads(lesson.read_text())["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and marker in "".join(cell["source"]):
            return i
    raise ValueError(f"{lesson.name}: no code cell contains {marker!r}; allowed is a text of "
                     "the widget's cell (LESSONS)")


def time_moves(lesson: str, label: str, moves: int, smoke: bool) -> list[browser.Move]:
    """Run ``lesson`` through its widget's cell in JupyterLab, then press ArrowRight on the
    slider ``moves`` times (ArrowLeft once it reaches its end, and back)."""
    marker = LESSONS[lesson][0]
    env = {"WORKBENCH_DATA": os.environ.get("WORKBENCH_DATA"), "MPLBACKEND": None,
           "OMP_NUM_THREADS": "1", "CI": "1" if smoke else None}
    root = Path(tempfile.mkdtemp(prefix="bench-browser-"))
    try:
        shutil.copy(NOTEBOOKS / lesson, root / lesson)
        cell = widget_cell(root / lesson, marker)
        with browser.JupyterLab(root, env, timeout=90) as lab, browser.browser() as page:
            browser.open_notebook(page, lab, lesson, timeout=120)
            errors = browser.run_cells(page, through=cell, timeout=6 * 3600)
            if errors:
                raise RuntimeError(f"{lesson}: a cell raised:\n{errors[0]}")
            widget, handle = browser.find_slider(page, label)
            widget.scroll_into_view_if_needed()
            out, keys, turns = [], ["ArrowRight", "ArrowLeft"], 0
            while len(out) < moves:
                try:
                    out.append(browser.move(page, widget, handle, keys[0], timeout=120))
                    turns = 0
                except ValueError:          # the slider is at its end: go the other way
                    turns += 1
                    if turns > 2:           # stuck both ways: not an end, a broken widget
                        raise RuntimeError(f"{lesson}: the '{label}' slider moves neither "
                                           "way") from None
                    keys.reverse()
            return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lesson_row(lesson: str, moves: list[browser.Move], smoke: bool) -> dict:
    seconds = sorted(m.seconds for m in moves)
    p95 = float(np.percentile(seconds, 95))
    retrains = LESSONS[lesson][2]
    gaps = [sum(m.figure_gaps_s) for m in moves]
    return {"bench": f"browser widget, {lesson}, slider {LESSONS[lesson][1]}",
            "moves": len(moves), "p50_s": round(statistics.median(seconds), 3),
            "p95_s": round(p95, 3), "max_s": round(seconds[-1], 3),
            "figure_absent_median_s": round(statistics.median(gaps), 3),
            "target_p95_s": None if retrains else TARGET_P95_S,
            "met": None if smoke or retrains else p95 < TARGET_P95_S,
            "load_avg_1min": round(os.getloadavg()[0], 1)}


def rows(smoke: bool = False) -> list[dict]:
    reason = browser.missing()
    lessons = ["00_tour.ipynb"] if smoke else list(LESSONS)
    if reason:
        return [{"bench": f"browser widget, {lesson}", "skipped": reason, "met": None}
                for lesson in lessons]
    moves = 5 if smoke else 20
    return [lesson_row(lesson, time_moves(lesson, LESSONS[lesson][1], moves, smoke), smoke)
            for lesson in lessons]
