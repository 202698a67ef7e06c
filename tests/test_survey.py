"""The survey (the main job), in smoke mode: every method runs, the files are written."""
from __future__ import annotations

import json

import workbench
from workbench import catalogue, survey


def test_smoke_survey_covers_every_method_and_lists_the_missing(tmp_path):
    figures = survey.main(out_dir=str(tmp_path), smoke=True)
    for name in ("survey.md", "survey.html", "survey.json", "sweep.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert {r["method"] for r in figures["methods"]} == set(workbench.METHODS)
    assert figures["missing"] == [e.id for e in catalogue.missing(workbench.METHODS)]
    assert json.loads((tmp_path / "survey.json").read_text())["smoke"] is True
    for row in figures["methods"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["bytes"] > 0
    html = (tmp_path / "survey.html").read_text()
    assert "data:image/png;base64," in html and "prune.magnitude" in html
