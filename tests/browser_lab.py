"""Test-side helpers of the browser test: the lesson server, reading a widget's table and plot.

The driver itself (JupyterLab, Chromium, slider moves and their timing) is the library's
``workbench.browser``, shared with ``bench widgets_browser``; this module adds what only a test
needs: a server on a temporary copy of a lesson, and oracles for what the page shows.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from workbench import browser

ROOT = Path(__file__).resolve().parents[1]


def lesson_env() -> dict:
    """The server's (hence the kernel's) environment: smoke mode, the data, the inline backend
    (MPLBACKEND=Agg would make ``plt.show()`` draw nothing in the page), one thread per kernel."""
    data = os.environ.get("WORKBENCH_DATA", str(ROOT.parent / "shared" / "data"))
    return {"CI": "1", "WORKBENCH_DATA": data, "MPLBACKEND": None, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def lesson_server(tmp_path: Path, lesson: str):
    """JupyterLab on a free port, serving ``tmp_path`` that holds a copy of ``notebooks/lesson``."""
    shutil.copy(ROOT / "notebooks" / lesson, tmp_path / lesson)
    with browser.JupyterLab(tmp_path, lesson_env(), timeout=90) as lab:
        yield lab


class _Table(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self._cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None


def table_rows(table_html: str) -> list[dict]:
    """An HTML table (first row: the header) as a list of {column: cell text}."""
    parser = _Table()
    parser.feed(table_html)
    header, *body = [r for r in parser.rows if r]
    return [dict(zip(header, row)) for row in body]


def widget_table(widget) -> list[dict]:
    """The rows of the (first) table in a widget's output, as the page shows them."""
    return table_rows(widget.locator(browser.TABLES).first.evaluate("t => t.outerHTML"))


def long_dark_lines(png: bytes, fraction: float = 0.3) -> tuple[int, int]:
    """(vertical, horizontal) count of dark straight lines at least ``fraction`` of the image's
    height / width long: the axes' spines of a matplotlib figure (black, 1-2 px), which
    histogram bars, curves and text do not make. Adjacent pixel lines count once."""
    import matplotlib.image
    image = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    dark = image.mean(axis=2) < 0.35

    def lines(mask: np.ndarray) -> int:      # mask: (along the line, across)
        longest = np.array([_longest_run(mask[:, j]) for j in range(mask.shape[1])])
        hits = longest >= fraction * mask.shape[0]
        return int(np.count_nonzero(hits[1:] & ~hits[:-1]) + hits[0])

    return lines(dark), lines(dark.T)


def _longest_run(column: np.ndarray) -> int:
    padded = np.concatenate([[0], column.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0
