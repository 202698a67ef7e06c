"""``bench architectures``: the zoo table of CIFAR-10 networks and its dominance target."""
from __future__ import annotations

import ipywidgets
import pytest

from workbench import measure, zoo
from workbench.bench import architectures_zoo as bench


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


def test_widget_moves_change_one_slider_within_its_range():
    from workbench.bench import architectures_widget as widget_bench
    controls = {"width": ipywidgets.FloatSlider(value=0.5, min=0.25, max=1.0, step=0.25),
                "resolution": ipywidgets.FloatSlider(value=1.0, min=0.5, max=1.0, step=0.25)}
    moves = widget_bench.random_moves(controls, 30)
    current = {name: c.value for name, c in controls.items()}
    names = {id(c): name for name, c in controls.items()}
    for control, value in moves:
        name = names[id(control)]
        assert control.min <= value <= control.max and value != current[name]
        assert value in [control.min + control.step * k for k in range(4)]
        current[name] = value
    assert {names[id(c)] for c, _ in moves} == set(controls)      # both sliders move


def test_widget_bench_times_every_move_of_the_lesson_widget():
    from workbench.bench import architectures_widget as widget_bench
    [row] = widget_bench.rows(smoke=True)
    assert row["updates"] == 6 and 0 < row["p50_s"] <= row["p95_s"] <= row["max_s"]
    assert row["target_p95_s"] == 0.5 and row["met"] is None      # smoke judges nothing
