"""``bench architectures``: the zoo table of CIFAR-10 networks and its dominance target; lesson
07's width widget timed."""
from __future__ import annotations

import json
from pathlib import Path

import ipywidgets
import pytest

from workbench import measure, zoo
from workbench.bench import architectures_zoo as bench

LESSON07 = Path(__file__).resolve().parents[1] / "notebooks" / "07_architectures.ipynb"


def row(model, accuracy, macs, params):
    return {"model": model, "accuracy": accuracy, "macs": macs, "params": params}


def test_dominating_needs_no_lower_accuracy_and_fewer_macs_and_params():
    refs = [row("vgg_small", 0.895, 38_700_000, 308_000), row("resnet20", 0.890, 40_600_000,
                                                                270_000)]
    assert bench.dominated(row("a", 0.90, 10e6, 200_000), refs) == ["vgg_small", "resnet20"]
    assert bench.dominated(row("b", 0.892, 10e6, 200_000), refs) == ["resnet20"]
    assert bench.dominated(row("c", 0.90, 10e6, 300_000), refs) == ["vgg_small"]
    assert bench.dominated(row("d", 0.90, 39e6, 100_000), refs) == ["resnet20"]
    assert bench.dominated(row("e", 0.88, 1e6, 1_000), refs) == []   # cheaper but worse


def test_smoke_rows_measure_the_decoded_checkpoints(monkeypatch):
    chosen = [n for n in ("vgg_small", "resnet20", "shufflenet_v2") if n in zoo.trained()]
    monkeypatch.setattr(bench, "cifar_networks", lambda: chosen + ["not_a_net_yet"])
    monkeypatch.setattr(bench.zoo, "trained", lambda: chosen)
    out = bench.rows(smoke=True)
    measured = [r for r in out if r.get("macs")]
    assert [r["model"] for r in measured] == chosen
    for r in measured:
        rep = measure.report(zoo.pretrained(r["model"]), latency=False)
        assert (r["macs"], r["params"], r["bytes"]) == (rep.macs, rep.params, rep.bytes)
        assert r["accuracy"] == zoo.manifest()[r["model"]]["test_acc"]
        assert r["ns_per_mac_b64_t1"] == pytest.approx(          # rounded to 3 decimals
            r["ms_b64_t1"] * 1e6 / (64 * r["macs"]), rel=0.01, abs=5e-4)
        assert r["met"] is None                       # smoke figures judge nothing
    assert any(r.get("status", "").startswith("not trained yet") for r in out)
    summary = out[-1]
    assert summary["met"] is None and summary["compact_missing"] == 1


def test_widget_moves_change_one_slider_to_a_value_of_its_range():
    from workbench.bench import architectures_widget as widget_bench
    controls = {"width": ipywidgets.FloatSlider(value=0.5, min=0.25, max=1.0, step=0.25),
                "expansion": ipywidgets.IntSlider(value=6, min=1, max=6, step=1),
                "ratio": ipywidgets.FloatSlider(value=0.1, min=0.1, max=0.45, step=0.1),
                "fixed": ipywidgets.IntSlider(value=3, min=3, max=3)}
    assert widget_bench.slider_values(controls["ratio"]) == [0.1, 0.2, 0.3, 0.4]  # not above max
    moves = widget_bench.random_moves(controls, 60)
    current = {name: c.value for name, c in controls.items()}
    names = {id(c): name for name, c in controls.items()}
    for control, value in moves:
        name = names[id(control)]
        assert value in widget_bench.slider_values(control) and value != current[name]
        assert type(value) is type(control.value)
        current[name] = value
    assert {names[id(c)] for c, _ in moves} == {"width", "expansion", "ratio"}
    with pytest.raises(ValueError, match="none has two values"):
        widget_bench.random_moves({"fixed": controls["fixed"]}, 3)


def test_widget_bench_times_every_move_of_the_lesson_widget():
    from workbench.bench import architectures_widget as widget_bench
    [row] = widget_bench.rows(smoke=True)
    assert row["updates"] == 6 and 0 < row["p50_s"] <= row["p95_s"] <= row["max_s"]
    assert row["target_p95_s"] == 0.5 and row["met"] is None      # smoke judges nothing


def test_widget_bench_builds_the_widget_as_lesson_07_does():
    from workbench.bench import architectures_widget as widget_bench
    cells = ["".join(c["source"]) for c in json.loads(LESSON07.read_text())["cells"]
             if c["cell_type"] == "code"]
    sliders = ", ".join(f'"{s}"' for s in widget_bench.SLIDERS)
    call = f'lessons.explore_architecture("mobilenet", [{sliders}], min_run_time=WIDGET_RUN_TIME)'
    assert any(call in c for c in cells), call
    run_time = (f"WIDGET_RUN_TIME = {widget_bench.RUN_TIME['smoke']} if SMOKE else "
                f"{widget_bench.RUN_TIME['full']}")
    assert any(run_time in c for c in cells), run_time
