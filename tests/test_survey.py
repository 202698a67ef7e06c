"""The survey (the main job), in smoke mode: every method runs, the files are written."""
from __future__ import annotations

import ast
import json

import pytest

import workbench
from workbench import catalogue, cells, codec, data, measure, survey, zoo
from workbench.models import build


def test_smoke_survey_covers_every_method_and_lists_the_missing(tmp_path):
    figures = survey.main(out_dir=str(tmp_path), smoke=True)
    for name in ("survey.md", "survey.html", "survey.json", "sweep.png", "accuracy_bytes.png",
                 "speed_macs.png", "bits_accuracy.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert {r["method"] for r in figures["methods"]} == set(workbench.METHODS)
    assert figures["missing"] == [e.id for e in catalogue.missing(workbench.IMPLEMENTED)]
    assert json.loads((tmp_path / "survey.json").read_text())["smoke"] is True
    for row in figures["methods"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["bytes"] > 0
        assert row["latency_b64"] is None and row["latency_vs_base"] == {}   # smoke: no timing
    html = (tmp_path / "survey.html").read_text()
    assert "data:image/png;base64," in html and "prune.magnitude" in html
    assert "latency_vs_base" not in html          # the full timings go to the JSON only
    # one section per family, in the catalogue's order, settings folded under each name
    titles = [t for t in catalogue.FAMILIES.values() if t in html]
    assert titles == list(catalogue.FAMILIES.values())[:len(titles)] and len(titles) >= 6
    assert html.count("<details>") == len(figures["methods"])
    assert html.count("data:image/png;base64,") == 4


def test_a_network_that_runs_its_bases_layers_is_not_timed_and_says_so(lenet300_bases):
    # encode.sparse's row is its input, prune.iterative's network, stored sparse: decoded, it
    # has the base's very layers, so timing it could only measure noise.
    [row], _ = survey.method_rows(lenet300_bases, smoke=True, ids=["encode.sparse"],
                                  test_images=200, latency=True)
    assert row["latency_b64"] == survey.SAME_LAYERS and row["latency_vs_base"] == {}
    assert row["effective_macs_x"] > 5            # fewer MACs on paper, the same kernels


def test_same_layers_tells_the_networks_that_run_other_kernels():
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    base = zoo.pretrained("lenet300")
    same = {"prune.magnitude": {"sparsity": 0.9}, "quant.kmeans": {}}
    other = {"prune.apoz": {"epochs": 0}, "lowrank.svd": {"epochs": 0}, "binary.ebp": {}}
    data_ = data.mnist("train").subset(256, seed=0)
    for method_id, settings in same.items():
        assert measure.same_layers(workbench.METHODS[method_id](**settings).apply(base), base)
    for method_id, settings in other.items():
        method = workbench.METHODS[method_id](**{**workbench.METHODS[method_id].smoke,
                                                 **settings})
        assert not measure.same_layers(method.apply(base, data_), base), method_id
    half = codec.decode(codec.encode(base)).half()          # another dtype, other kernels
    assert measure.layer_signature(half) != measure.layer_signature(base)
    # the same parameters at half the input resolution: a quarter of the MACs
    assert not measure.same_layers(build("mobilenet", resolution=0.5), build("mobilenet"))


def test_method_latency_is_interleaved_with_its_base_and_lossless_shows_no_change(
        lenet300_bases, monkeypatch):
    # Timed anyway (as before the survey skipped same-layer networks): whatever the order of
    # measurement, the survey must not show the base's own layers faster than the base (it
    # once showed 1.31x). At batch 64, as test_measure's lossless check and for its reason.
    bases = lenet300_bases        # conftest: skips without the checkpoint
    monkeypatch.setattr(survey, "same_layers", lambda model, base: False)
    [row], counts = survey.method_rows(bases, smoke=True, ids=["encode.sparse"],
                                       test_images=200, latency=True)
    assert counts == {"computed": 1, "cached": 0}
    assert row["latency_b64"].startswith("no measurable change"), row["latency_vs_base"]
    paired = row["latency_vs_base"]["b64"]
    assert paired["display"] == row["latency_b64"] and not paired["significant"]
    assert paired["batch"] == 64 and paired["threads"] == survey.THREADS
    assert paired["load_avg"] >= 0 and paired["pairs"] >= 10
    assert "latency_b64_x" not in row           # no ratio of two separately taken medians
    json.dumps(row)                             # the JSON file can hold it


def test_a_lossless_encoding_runs_on_the_pruned_and_shared_network_it_is_for(lenet300_bases):
    bases = lenet300_bases
    [job] = survey.method_jobs(bases, smoke=True, ids=["encode.huffman"], test_images=200,
                               latency=False)
    assert [i for i, _ in job["input"]] == ["prune.iterative", "quant.kmeans"]
    [row], _ = survey.method_rows(bases, smoke=True, ids=["encode.huffman"], test_images=200,
                                  latency=False)
    # the same input again (the methods are deterministic): its file and its accuracy
    train = data.load("mnist", "train").subset(2000, seed=0)
    given, given_bytes = survey.input_network(job, train)
    assert row["input"] == ["prune.iterative", "quant.kmeans"]
    assert row["input_bytes"] == given_bytes == len(codec.encode(given))
    assert row["bytes"] < given_bytes             # Huffman coding of the shared indices
    assert row["bytes_x_vs_input"] == round(given_bytes / row["bytes"], 3)
    test = survey.test_set("mnist", 200)             # the images the cell evaluated on
    assert row["accuracy"] == measure.report(given, test, latency=False).accuracy  # lossless
    assert row["nonzeros_x"] > 5                  # the pruned network, not the dense one


def test_a_method_whose_checkpoint_is_not_trained_is_listed_not_run_and_says_how(monkeypatch):
    if "vgg_small" not in zoo.manifest():
        pytest.skip("no vgg_small checkpoint")
    test = data.load("cifar10", "test").subset(50, seed=0)
    bases = {"vgg_small": measure.report(zoo.pretrained("vgg_small"), test, "vgg_small",
                                         latency=False)}
    trained = {k: v for k, v in zoo.manifest().items() if k != "mobilenet"}
    monkeypatch.setattr(zoo, "manifest", lambda: trained)
    ids = ["arch.mobilenet", "prune.winograd"]
    jobs = survey.method_jobs(bases, smoke=False, ids=ids, test_images=50, latency=False)
    assert [j["method"] for j in jobs] == ["prune.winograd"]
    assert survey.not_run_rows(smoke=False, ids=ids) == [
        {"family": catalogue.FAMILIES["architecture"], "id": "arch.mobilenet",
         "why": "the zoo's mobilenet is not trained yet: python -m workbench zoo train "
                "mobilenet"}]
    # in a smoke run it trains a small network of its own, so it runs
    assert survey.not_run_rows(smoke=True, ids=ids) == []


def _counts(figures):
    return {kind: figures["run"][kind]["computed"] for kind in ("zoo", "methods", "sweep")}


def test_a_rerun_reuses_every_cell_and_a_changed_setting_recomputes_exactly_one(tmp_path):
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint")
    ids = ["prune.magnitude", "encode.huffman"]
    first = survey.main(out_dir=str(tmp_path), smoke=True, methods=ids)
    again = survey.main(out_dir=str(tmp_path), smoke=True, methods=ids)
    assert _counts(again) == {"zoo": 0, "methods": 0, "sweep": 0}
    assert again["methods"] == first["methods"] and again["zoo"] == first["zoo"]
    changed = survey.main(out_dir=str(tmp_path), smoke=True, methods=ids,
                          overrides={"prune.magnitude": {"sparsity": 0.5}})
    assert _counts(changed) == {"zoo": 0, "methods": 1, "sweep": 0}
    [row] = [r for r in changed["methods"] if r["method"] == "prune.magnitude"]
    assert row["settings"]["sparsity"] == 0.5
    # the row is what the method gives at that setting, not the cached default's
    base = zoo.pretrained(row["model"])
    pruned = workbench.METHODS["prune.magnitude"](sparsity=0.5).apply(base)
    assert row["bytes"] == measure.report(pruned, latency=False).bytes
    [old] = [r for r in first["methods"] if r["method"] == "prune.magnitude"]
    assert row["bytes"] != old["bytes"]


def test_an_unreadable_cache_file_is_computed_again_and_replaced(tmp_path):
    cache = cells.Cache(tmp_path)
    job = {"kind": "test", "value": 3}
    results, counts = cells.run([job], _square, cache)
    assert results == [9] and counts == {"computed": 1, "cached": 0}
    cache.path(cells.cell_key(job)).write_text('{"result": 9')      # cut short
    with pytest.warns(UserWarning, match="unreadable"):
        results, counts = cells.run([job], _square, cache)
    assert results == [9] and counts["computed"] == 1
    assert cells.run([job], _square, cache)[1] == {"computed": 0, "cached": 1}


def test_the_key_follows_the_parts_and_the_code_but_not_the_underscored_inputs():
    job = {"kind": "method", "settings": {"sparsity": 0.9, "layers": ("fc1",)}}
    key = cells.cell_key(job)
    assert key == cells.cell_key({**job, "_base": {"accuracy": 0.98}})
    assert key == cells.cell_key({"settings": {"layers": ["fc1"], "sparsity": 0.9},
                                  "kind": "method"})          # order and tuple/list
    assert key != cells.cell_key({**job, "settings": {"sparsity": 0.8, "layers": ("fc1",)}})
    assert cells.code_version().startswith(workbench.__version__ + "+")


def imported_modules(path) -> set[str]:
    """The workbench modules ``path`` imports, in any form (``from . import plots``, ``from
    ..plots import x``, ``import workbench.plots``), as paths inside the package."""
    package = path.relative_to(cells.PACKAGE).parent.parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".") if node.module else []
            if node.level:
                where = [*package[:len(package) - node.level + 1], *module]
            elif module[:1] == ["workbench"]:
                where = module[1:]
            else:
                continue
            found |= {"/".join(where)} | {"/".join([*where, a.name]) for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {"/".join(a.name.split(".")[1:]) for a in node.names
                      if a.name.split(".")[0] == "workbench"}
    return found


def test_the_code_digest_covers_what_computes_and_not_what_presents():
    names = {p.relative_to(cells.PACKAGE).as_posix() for p in cells.computing_sources()}
    assert {"codec/__init__.py", "train.py", "measure.py", "survey.py", "cells.py",
            "prune/__init__.py", "quantize/kmeans.py"} <= names
    assert not any(n.startswith(("lessons/", "exercises/", "bench/")) for n in names)
    assert "survey_report.py" not in names and "widgets.py" not in names
    # No computing module imports a presenting one, else an edit there could change a
    # result. The one exception: survey.py's main writes the report, after every cell.
    presenting = [p.removesuffix(".py").rstrip("/") for p in cells.PRESENTATION]
    for name in names:
        for module in imported_modules(cells.PACKAGE / name):
            shown = any(module == p or module.startswith(p + "/") for p in presenting)
            assert not shown or (name, module) == ("survey.py", "survey_report"), \
                (name, module)


def test_cells_in_two_processes_give_the_results_of_one(tmp_path):
    jobs = [{"kind": "test", "value": v} for v in range(4)]
    serial, _ = cells.run(jobs, _square, cells.Cache(None))
    parallel, counts = cells.run(jobs, _square, cells.Cache(tmp_path), workers=2)
    assert parallel == serial == [0, 1, 4, 9] and counts["computed"] == 4
    with pytest.raises(ValueError, match="workers=0; allowed: 1 or more"):
        cells.run(jobs, _square, cells.Cache(None), workers=0)


def test_the_costliest_cells_start_first_and_results_keep_the_jobs_order():
    jobs = [{"kind": "test", "value": v, "cost": c} for v, c in ((1, 0), (2, 5), (3, 1), (4, 5))]
    started = []
    results, _ = cells.run(jobs, lambda job: started.append(job["value"]) or job["value"] ** 2,
                           cells.Cache(None), cost=lambda job: job["cost"])
    assert started == [2, 4, 3, 1] and results == [1, 4, 9, 16]
    # the survey's estimate: training before evaluating only, each by the network's MACs
    macs = lambda model: measure.report(build(model), latency=False).macs
    job = lambda method, model: {"method": method, "model": model, "smoke": False,
                                 "overrides": {}, "input": [], "_base": {"macs": macs(model)}}
    assert survey.expected_cost(job("binary.bireal", "resnet20")) \
        > survey.expected_cost(job("distill.fitnets", "lenet5")) \
        > survey.expected_cost(job("distill.kd", "lenet300")) \
        > survey.expected_cost(job("prune.winograd", "vgg_small")) \
        > survey.expected_cost(job("prune.magnitude", "lenet300"))


def _square(job):            # module level: sent to worker processes
    return job["value"] ** 2


def test_a_failing_cell_is_named_and_the_others_are_kept(tmp_path):
    jobs = [{"kind": "test", "value": v} for v in (1, 2, -1, 3)]
    cache = cells.Cache(tmp_path)
    with pytest.raises(RuntimeError, match=r'cells: the cell .*"value": -1.* failed: '
                                           r'ValueError: negative'):
        cells.run(jobs, _root, cache)
    # the cells computed before the failure are kept; the failed one and those after are not
    assert [cache.get(cells.cell_key(j)) for j in jobs] == [1, 4, None, None]


def _root(job):
    if job["value"] < 0:
        raise ValueError("negative")
    return job["value"] ** 2


def test_the_checkpoints_a_method_reads_are_in_its_cell_key(lenet300_bases):
    # a retrained teacher or architecture must recompute the cells that read it
    assert workbench.METHODS["arch.mobilenet"]().checkpoints() == ("mobilenet",)
    assert workbench.METHODS["arch.mobilenet"](epochs=1).checkpoints() == ()
    assert workbench.METHODS["prune.iterative"](kd_teacher="lenet5").checkpoints() == ("lenet5",)
    assert workbench.METHODS["prune.iterative"](kd_teacher="input").checkpoints() == ()
    bases = lenet300_bases
    [job] = survey.method_jobs(bases, smoke=False, ids=["prune.iterative"], test_images=200,
                               latency=False, overrides={"prune.iterative": {"kd_teacher": "lenet5"}})
    assert job["reads"] == {"lenet5": zoo.manifest()["lenet5"]["sha256"]}
    changed = {**zoo.manifest()["lenet5"], "sha256": "0" * 64}
    assert cells.cell_key(job) != cells.cell_key({**job, "reads": {"lenet5": changed["sha256"]}})


def test_smoke_settings_follow_a_chosen_pruner():
    # ``--smoke --set pipeline.deep_compression.pruner=prune.dns``: DNS has no rounds
    dns = survey.make_method("pipeline.deep_compression", True, {"pruner": "prune.dns"})
    assert dns.pruner == "prune.dns" and dns.prune == workbench.METHODS["prune.dns"].smoke
    iterative = survey.make_method("pipeline.deep_compression", True)
    assert iterative.prune == workbench.METHODS["prune.iterative"].smoke
    with pytest.raises(ValueError, match="prune.magnitude"):
        survey.make_method("pipeline.deep_compression", True, {"pruner": "prune.magnitude"})
