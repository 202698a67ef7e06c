"""``python -m workbench lessons --html DIR``: lessons executed, then written as stand-alone HTML
pages whose widgets are shown as the run left them (controls' values, tables, figures inline)."""
from __future__ import annotations

import base64
import os
import re

import nbformat
import pytest

from workbench import __main__ as cli
from workbench import lesson_runner, zoo

WIDGET_CELL = """from workbench import data, zoo, widgets
from workbench.prune import Magnitude
SMOKE = "CI" in os.environ
test = data.mnist("test").subset(100, seed=0)
widgets.explore(Magnitude, zoo.pretrained("lenet300"), test, sparsity=0.5)"""


def lesson_folder(tmp_path, cells: dict[str, list[str]]):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for name, sources in cells.items():
        notebook = nbformat.v4.new_notebook()
        notebook.cells = [nbformat.v4.new_code_cell(s) for s in sources]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                           "language": "python"}
        nbformat.write(notebook, str(folder / name))
    return folder


def test_lessons_are_chosen_by_number_or_name_and_a_wrong_name_lists_them(tmp_path):
    folder = lesson_folder(tmp_path, {"00_tour.ipynb": ["1"], "01a_pruning.ipynb": ["1"],
                                      "01b_pruning.ipynb": ["1"]})
    assert [p.name for p in lesson_runner.chosen([], folder)] == [
        "00_tour.ipynb", "01a_pruning.ipynb", "01b_pruning.ipynb"]
    assert [p.name for p in lesson_runner.chosen(["01b", "00_tour"], folder)] == [
        "01b_pruning.ipynb", "00_tour.ipynb"]
    with pytest.raises(ValueError, match="no single lesson '01'.*00_tour, 01a_pruning"):
        lesson_runner.chosen(["01"], folder)          # ambiguous: 01a or 01b


def test_the_html_page_shows_the_widget_as_the_run_left_it(tmp_path, monkeypatch):
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    folder = lesson_folder(tmp_path, {"00_w.ipynb": [
        "import os\nprint('SMOKE', 'CI' in os.environ)", WIDGET_CELL,
        "import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0])\nplt.show()"]})
    monkeypatch.setattr(lesson_runner, "NOTEBOOKS", folder)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")          # as CI sets it: the kernel must not inherit it
    rows = lesson_runner.main(["00"], str(tmp_path / "out"), smoke=True)
    assert [(r["lesson"], r["mode"], r["widgets"]) for r in rows] == [("00_w", "smoke", 1)]
    page = (tmp_path / "out" / "00_w.html").read_text()
    assert "SMOKE True" in page                     # the kernel saw CI set
    assert "CI" not in os.environ and os.environ["MPLBACKEND"] == "Agg"   # this process as it was
    assert re.search(r"<b>sparsity</b> = 0\.5</p>", page)          # the slider's value
    assert "prune.magnitude" in page and "ratios to base" in page   # the table and ratios
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    pngs = [i for i in images if base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n"]
    assert len(pngs) == 2                 # the widget's figure, and plt.show()'s drawn inline
    assert "application/vnd.jupyter.widget-view+json" not in page   # no live view left
    executed = nbformat.read(str(tmp_path / "out" / "00_w.ipynb"), as_version=4)
    assert "widgets" in executed.metadata           # the notebook keeps the live state


def test_a_lesson_that_fails_is_named_with_its_cell_and_output(tmp_path, monkeypatch, capsys):
    folder = lesson_folder(tmp_path, {"03_broken.ipynb": ["x = 1", "1 / 0"]})
    monkeypatch.setattr(lesson_runner, "NOTEBOOKS", folder)
    with pytest.raises(SystemExit) as stop:
        cli.main(["lessons", "03", "--html", str(tmp_path / "out"), "--smoke"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m workbench: error: 03_broken.ipynb failed at cell 2: "
                          "ZeroDivisionError")
    assert str(tmp_path / "out" / "03_broken.ipynb") in err


def test_an_unknown_lesson_is_one_line_with_the_allowed_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["lessons", "99_nope", "--html", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "allowed: 00_tour" in err
