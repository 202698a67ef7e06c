"""``bench widgets --browser`` finds its widget in every lesson: the lessons change, and a
widget cell that no longer matches would only show when the (long) bench runs."""
from __future__ import annotations

import json

import pytest

from workbench.bench import widgets_browser


def test_every_lesson_has_one_entry_and_its_widget_cell_is_found():
    lessons = sorted(p.name for p in widgets_browser.NOTEBOOKS.glob("[0-9]*.ipynb"))
    assert sorted(widgets_browser.LESSONS) == lessons         # one widget timed per lesson
    for lesson, (marker, _, _) in widgets_browser.LESSONS.items():
        path = widgets_browser.NOTEBOOKS / lesson
        cell = json.loads(path.read_text())["cells"][widgets_browser.widget_cell(path, marker)]
        source = "".join(cell["source"])
        assert "explore" in source or "widget" in source, (lesson, source)   # a widget's cell


def test_a_marker_that_matches_no_cell_names_the_lesson():
    path = widgets_browser.NOTEBOOKS / "00_tour.ipynb"
    with pytest.raises(ValueError, match="00_tour.ipynb: no code cell contains 'nope'"):
        widgets_browser.widget_cell(path, "nope")
