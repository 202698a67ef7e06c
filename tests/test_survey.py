"""The survey (the main job), in smoke mode: every method runs, the files are written."""
from __future__ import annotations

import json

import pytest

import workbench
from workbench import catalogue, data, measure, survey, zoo


def test_smoke_survey_covers_every_method_and_lists_the_missing(tmp_path):
    figures = survey.main(out_dir=str(tmp_path), smoke=True)
    for name in ("survey.md", "survey.html", "survey.json", "sweep.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert {r["method"] for r in figures["methods"]} == set(workbench.METHODS)
    assert figures["missing"] == [e.id for e in catalogue.missing(workbench.METHODS)]
    assert json.loads((tmp_path / "survey.json").read_text())["smoke"] is True
    for row in figures["methods"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["bytes"] > 0
        assert row["latency_b64"] is None and row["latency_vs_base"] == {}   # smoke: no timing
    html = (tmp_path / "survey.html").read_text()
    assert "data:image/png;base64," in html and "prune.magnitude" in html
    assert "latency_vs_base" not in html          # the full timings go to the JSON only


def test_method_latency_is_interleaved_with_its_base_and_lossless_shows_no_change():
    # encode.sparse returns a bit-identical network: whatever the order of measurement, the
    # survey must not show it faster than its base (it once showed 1.31x).
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    test = data.load("mnist", "test").subset(200, seed=0)
    bases = {"lenet300": measure.report(zoo.pretrained("lenet300"), test, "lenet300",
                                        latency=False)}
    [row] = survey.method_rows({"mnist": test}, bases, latency=True, smoke=True,
                               all_models=False, ids=["encode.sparse"])
    assert row["latency_b64"].startswith("no measurable change"), row["latency_vs_base"]
    paired = row["latency_vs_base"]["b64"]
    assert paired["display"] == row["latency_b64"] and not paired["significant"]
    assert paired["batch"] == 64 and paired["threads"] == survey.THREADS
    assert paired["load_avg"] >= 0 and paired["pairs"] >= 10
    assert "latency_b64_x" not in row           # no ratio of two separately taken medians
    json.dumps(row)                             # the JSON file can hold it
