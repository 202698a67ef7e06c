"""Lesson 00 in a real browser: JupyterLab started here, Debian's Chromium driven by Playwright.

The test runs every cell of the lesson in smoke mode (CI=1), moves the sparsity slider of its
first widget with the keyboard, and checks what a person sees: the slider's new value, the
table's row recomputed for that value (the oracle: the library, in this process, on the same
model and test images), and a new, complete plot (both panels' axes drawn). It reports the time
from key press to finished plot. Skips only where Playwright or Chromium is missing; a server
that does not start fails with its log.
"""
from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from workbench import browser, data, zoo
from workbench.measure import html_table, report
from workbench.prune import Magnitude

from browser_lab import long_dark_lines, lesson_server, table_rows, widget_table

LESSON = "00_tour.ipynb"
KEYS = ("ArrowRight", "PageUp")          # one step, then noUiSlider's page (several steps)

pytestmark = pytest.mark.skipif(browser.missing() is not None,
                                reason=f"browser test: {browser.missing()}")


def expected_row(base, test, sparsity: float, columns) -> dict:
    """The widget's table row for ``sparsity``, computed here and formatted as the widget does."""
    model = Magnitude(sparsity=sparsity).apply(base)
    row = report(model, test, name="prune.magnitude", latency=False).row()
    return table_rows(html_table([{c: row[c] for c in columns if c in row}]))[0]


def magnitude_row(rows: list[dict]) -> dict:
    matches = [r for r in rows if r.get("name") == "prune.magnitude"]
    assert len(matches) == 1, f"the widget's table has no single prune.magnitude row: {rows}"
    return matches[0]


def assert_table_shows(widget, base, test, sparsity: float, wait: float = 15.0):
    """The widget's table shows the row for ``sparsity`` within ``wait`` seconds.

    The kernel sets the table before the figure, but the page applies each widget's update on
    its own promise chain, so the new figure can be painted a moment before the new table."""
    shown = magnitude_row(widget_table(widget))
    expected = expected_row(base, test, sparsity, shown)
    assert "accuracy" in expected and "nonzeros" in expected, shown
    deadline = time.monotonic() + wait
    while shown != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        shown = magnitude_row(widget_table(widget))
    assert shown == expected, (f"sparsity {sparsity}: after {wait:g} s the table shows {shown}, "
                               f"expected {expected}")


def assert_plot_complete(widget, where: str, save: Path):
    """The last figure of the widget's output is loaded and has both panels' axes."""
    figure = widget.locator(browser.FIGURES).last
    figure.scroll_into_view_if_needed()
    box = figure.bounding_box()
    assert box and box["width"] > 300 and box["height"] > 100, f"{where}: figure box {box}"
    src = figure.get_attribute("src") or ""
    # an inline PNG: its own bytes (what the kernel sent); a canvas: what the page paints
    png = (base64.b64decode(src.split(",", 1)[1]) if src.startswith("data:image/png")
           else figure.screenshot())
    save.write_bytes(png)
    save.with_suffix(".screen.png").write_bytes(figure.screenshot())
    vertical, horizontal = long_dark_lines(png)
    # two panels side by side: a left and a right spine each; the top and bottom spines of the
    # two share their rows
    # (explore() used to send, now and then, a figure with only the histogram and no axes)
    assert vertical >= 4 and horizontal >= 2, (
        f"{where}: the figure ({save}) shows {vertical} vertical and {horizontal} horizontal "
        "axis lines: an incomplete plot")
    return box


def test_lesson00_sparsity_slider_updates_table_and_plot(tmp_path):
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint: python -m workbench zoo train lenet300")
    base = zoo.pretrained("lenet300")
    with lesson_server(tmp_path, LESSON) as lab, browser.browser() as page:
        browser.open_notebook(page, lab, LESSON, timeout=90)
        errors = browser.run_cells(page, timeout=240)
        assert not errors, f"cells of {LESSON} raised:\n" + "\n---\n".join(errors)
        widget, handle = browser.find_slider(page, "sparsity")
        widget.scroll_into_view_if_needed()
        # the lesson prints how many test images the widget measures (smoke: a subset)
        printed = page.get_by_text(re.compile(r"last update took .* on [\d,]+ images")).first
        images = int(re.search(r"on ([\d,]+) images", printed.inner_text())[1].replace(",", ""))
        test = data.mnist("test").subset(images, seed=0)

        value = browser.slider_value(handle)
        assert_table_shows(widget, base, test, value)       # also checks the oracle's setup
        box = assert_plot_complete(widget, f"at creation ({value})", tmp_path / "plot0.png")
        moves = []
        for key in KEYS:
            moved = browser.move(page, widget, handle, key, timeout=60)
            assert moved.after > moved.before, moved
            assert_table_shows(widget, base, test, moved.after)
            after = assert_plot_complete(widget, f"after {key} ({moved.before} -> {moved.after})",
                                         tmp_path / f"plot-{key}.png")
            # same figure size: a pre-sized figure, not a half-drawn one (tight bbox: a few px)
            assert abs(after["width"] - box["width"]) < 0.1 * box["width"], (box, after)
            moves.append(moved)
    for m in moves:
        print(f"{m.key}: sparsity {m.before} -> {m.after}: key press -> finished plot "
              f"{m.seconds:.2f} s; figure absent {sum(m.figure_gaps_s):.2f} s; widget heights "
              f"{m.widget_heights} px")
