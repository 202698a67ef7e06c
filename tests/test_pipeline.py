"""workbench.pipeline and ``reproduce deep-compression``: a hybrid is its steps in order; Deep
Compression keeps pruned zeros at zero, shares 2**bits - 1 values per layer, and each stage's
file is smaller than the last, the final one decoding to identical outputs."""
from __future__ import annotations

import json

import pytest
import torch
from conftest import sample_input, untrained

from workbench import METHODS, codec, pipeline
from workbench.__main__ import main
from workbench.prune import prunable_layers


def test_hybrid_is_its_steps_in_order(mnist_train_small):
    model = untrained("lenet300", seed=5)
    steps = (("prune.magnitude", {"sparsity": 0.7}), ("quant.kmeans", {"k": 8}))
    out = pipeline.Hybrid(steps=steps).apply(model, mnist_train_small)
    by_hand = METHODS["quant.kmeans"](k=8).apply(METHODS["prune.magnitude"](sparsity=0.7).apply(model))
    x = sample_input(model)
    torch.testing.assert_close(out(x), by_hand(x), atol=0, rtol=0)
    stages = pipeline.Hybrid(steps=steps).stages(model, mnist_train_small)
    assert [name for name, _ in stages] == ["base", "prune.magnitude", "quant.kmeans"]
    assert stages[0][1] is model


@pytest.mark.parametrize("steps,match", [
    ((), "non-empty"),
    ((("prune.nothing", {}),), "not a method"),
    ((("pipeline.hybrid", {}),), "not a method"),
    ((("prune.magnitude", {"sparsity": 2.0}),), "sparsity"),
    ((("prune.magnitude", {"spars": 0.5}),), "spars"),
    (("prune.magnitude",), "pair"),
])
def test_hybrid_rejects_bad_steps(steps, match):
    with pytest.raises(ValueError, match=match):
        pipeline.Hybrid(steps=steps)


def test_bits_of_a_hybrid_are_those_of_its_last_lossy_step():
    steps = (("prune.magnitude", {"sparsity": 0.5}), ("quant.kmeans", {"k": 16}),
             ("encode.huffman", {}))
    assert pipeline.Hybrid(steps=steps).bits_per_weight() == 4.0


def test_deep_compression_bad_bits_are_named():
    with pytest.raises(ValueError, match="fc_bits"):
        pipeline.DeepCompression(fc_bits=1)
    with pytest.raises(ValueError, match="conv_bits"):
        pipeline.DeepCompression(conv_bits=4.5)


@pytest.mark.parametrize("pruner,prune,match", [
    ("prune.dns", {"rounds": 2}, r"prune=\{'rounds': 2\}: pruner \(prune.dns\): unknown settings"),
    ("prune.dns", {"c_rate": 99.0}, "c_rate"),
    ("prune.iterative", {"c_rate": 1.0}, r"pruner \(prune.iterative\): unknown settings"),
    ("prune.iterative", {"layer_sparsity": {"features.0": 2.0}}, "layer_sparsity"),
])
def test_deep_compression_checks_prune_against_its_pruner(pruner, prune, match):
    with pytest.raises(ValueError, match=match):
        pipeline.DeepCompression(pruner=pruner, prune=prune)


def test_deep_compression_pruner_is_one_of_two():
    with pytest.raises(ValueError, match="pruner='prune.magnitude'.*prune.iterative.*prune.dns"):
        pipeline.DeepCompression(pruner="prune.magnitude")


def test_deep_compression_hands_half_biases_to_its_quantizer():
    steps = pipeline.DeepCompression(half_biases=True).methods()
    assert steps[1].id == "quant.trained_kmeans" and steps[1].half_biases is True
    assert pipeline.DeepCompression().methods()[1].half_biases is False
    with pytest.raises(ValueError, match="half_biases"):
        pipeline.DeepCompression(half_biases=1.5)


def test_a_smoke_run_of_our_settings_keeps_their_pruning_shares_and_bits():
    from workbench import reproduce
    for name, ours in reproduce.SETTINGS.items():
        quick, full = reproduce.our_pipeline(name, smoke=True), reproduce.our_pipeline(name)
        assert quick.prune == {**full.prune, "rounds": 1, "epochs": 1}, name
        assert (quick.fc_bits, quick.conv_bits) == (full.fc_bits, full.conv_bits) == (
            ours["fc_bits"], ours["conv_bits"])
        assert quick.quant_epochs == 1 and full.quant_epochs == ours["quant_epochs"]


SMOKE_PRUNERS = {"prune.iterative": pipeline.DeepCompression.smoke,
                 "prune.dns": {"pruner": "prune.dns", "quant_epochs": 1,
                              "prune": {"c_rate": 0.5, "output_c_rate": 0.0, "epochs": 1}}}


@pytest.mark.parametrize("pruner", pipeline.PRUNERS)
def test_deep_compression_stages(mnist_train_small, pruner):
    model = untrained("lenet5", seed=6)
    method = pipeline.DeepCompression(fc_bits=3, conv_bits=4, **SMOKE_PRUNERS[pruner])
    stages = method.stages(model, mnist_train_small)
    assert [name for name, _ in stages] == ["base", pruner, "quant.trained_kmeans",
                                            "encode.huffman"]
    (_, base), (_, pruned), (_, shared), (_, final) = stages
    assert 0 < sum(int((m.weight == 0).sum()) for _, m in prunable_layers(pruned))
    for name, module in prunable_layers(shared):
        before = pruned.get_submodule(name).weight.detach()
        after = module.weight.detach()
        assert torch.equal(after[before == 0], torch.zeros_like(after[before == 0]))
        bits = 4 if isinstance(module, torch.nn.Conv2d) else 3
        assert len(torch.unique(after)) <= 2 ** bits          # 2**bits - 1 shared and the zero
    sizes = [len(codec.encode(base, formats=("dense",), dtype="float32")),
             len(codec.encode(pruned, formats=("dense", "sparse_rel"))),
             len(codec.encode(shared)),
             len(codec.encode(final))]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    # the file of the last stage is the shared network Huffman-coded (its header also says so)
    assert sizes[-1] == len(codec.encode(METHODS["encode.huffman"]().apply(shared)))
    assert sizes[-1] < len(codec.encode(shared, formats=codec.DEFAULT_FORMATS))
    x = sample_input(model)
    torch.testing.assert_close(codec.decode(codec.encode(final))(x), shared.eval()(x),
                               atol=0, rtol=0)


@pytest.mark.parametrize("pruner", pipeline.PRUNERS)
def test_deep_compression_retrains_on_shifted_images_where_asked(mnist_train_small, pruner,
                                                                 monkeypatch):
    """``prune.augment`` reaches the pruner's retraining and ``quant_augment`` the k-means
    fine-tune, each training on ``loader(augment=True)`` (shifts on MNIST); off by default and
    then hidden from the settings, so that earlier results keep their keys."""
    from workbench import data
    seen = []
    loader = data.Dataset.loader

    def spy(self, batch_size=128, shuffle=False, seed=0, augment=False):
        if shuffle:                                   # a training pass, not an evaluation
            seen.append(augment)
        return loader(self, batch_size, shuffle, seed, augment)

    monkeypatch.setattr(data.Dataset, "loader", spy)
    smoke = SMOKE_PRUNERS[pruner]
    model = untrained("lenet5", seed=6)
    for prune_on, quant_on in [(True, False), (False, True), (False, False)]:
        seen.clear()
        method = pipeline.DeepCompression(**{**smoke, "prune": {**smoke.get("prune", {}),
                                                                "augment": prune_on},
                                             "quant_augment": quant_on})
        pruner_step, quant_step, _ = method.methods()
        assert (pruner_step.augment, quant_step.augment) == (prune_on, quant_on)
        assert ("augment" in pruner_step.settings()) == prune_on
        assert ("augment" in quant_step.settings()) == quant_on
        assert ("quant_augment" in method.settings()) == quant_on
        method.apply(model, mnist_train_small)
        epochs = [pruner_step.epochs * getattr(pruner_step, "rounds", 1), quant_step.epochs]
        assert seen == [prune_on] * epochs[0] + [quant_on] * epochs[1], seen
    with pytest.raises(ValueError, match="quant_augment"):
        pipeline.DeepCompression(quant_augment="yes")


def test_reproduce_runs_a_searchs_trials_to_the_bytes_they_recorded(tmp_path):
    """``reproduce --set ... --holdout N --seed S`` (the command line the search prints) writes,
    for each trial of a real search, the file of the bytes that trial recorded."""
    import shlex

    from workbench import data, reproduce, zoo
    from workbench.search import RandomSearch
    from workbench.search.command import SMOKE_TRAIN
    from workbench.train import quiet
    fixed = {"prune.rounds": 1, "prune.epochs": 1, "quant_epochs": 1, "quant_lr": 1e-3}
    search = RandomSearch(method="pipeline.deep_compression", fixed=fixed, trials=2, seed=3,
                          space={"prune.sparsity": (0.85, 0.97), "fc_bits": (2, 5, 1)},
                          eval_images=200)
    with quiet():
        _, study = search.run(zoo.pretrained("lenet300"),
                              data.mnist("train").subset(SMOKE_TRAIN, seed=0), search.open())
    for trial in study.trials:
        settings = {**fixed, **trial.params}
        line = reproduce.command_line("lenet300", settings, 200, 3, smoke=True)
        words = shlex.split(line)
        assert words[:4] == ["OMP_NUM_THREADS=1", "python", "-m", "workbench"]
        out, report = tmp_path / f"{trial.number}.wbnc", tmp_path / f"{trial.number}.json"
        main([*words[4:], "--out", str(out), "--json", str(report)])
        tables = json.loads(report.read_text())
        assert len(out.read_bytes()) == tables["summary"]["final_bytes"] \
            == trial.user_attrs["bytes"]
        assert tables["given"] == {"settings": settings, "holdout": 200, "seed": 3,
                                   "clean_base": False}
        assert tables["summary"]["met"] is None and tables["summary"]["target"] == "-"
        assert tables["summary"]["train_images"] == SMOKE_TRAIN - 200
        assert [s["stage"] for s in tables["stages"]] == ["dense", "pruned", "quantized",
                                                          "huffman"]
        assert tables["stages"][-1]["bits"] == f"{trial.params['fc_bits']} fc / 8 conv"


def test_reproduce_command_smoke(tmp_path, capsys):
    out, report = tmp_path / "dc.wbnc", tmp_path / "dc.json"
    main(["reproduce", "deep-compression", "--model", "lenet300", "--smoke",
          "--out", str(out), "--json", str(report)])
    printed = capsys.readouterr().out
    assert "Han et al. 2016" in printed and "huffman at the paper's bits" in printed
    tables = json.loads(report.read_text())
    summary = tables["summary"]
    assert summary["final_bytes"] == len(out.read_bytes())
    assert summary["decoded_err_pct"] == summary["err_pct"]
    assert [s["stage"] for s in tables["stages"]] == ["dense", "pruned", "quantized", "huffman",
                                                      "huffman at the paper's bits"]
    assert tables["stages"][-1]["bits"] == "6 fc / 8 conv"
    assert [row["layer"] for row in tables["layers"]] == ["net.1", "net.3", "net.5"]
    coded = [row for row in tables["layers"] if row["format_pqh"] == "huffman_sparse"]
    assert coded, "the big layers are Huffman-coded"
    for row in coded:
        assert row["indices_vs_entropy"] <= 1.03 and row["gaps_vs_entropy"] <= 1.03
        # 15 shared weights and the zero: 4 bits an entry, a little more per kept weight
        assert 4.0 <= row["weight_bits_pq"] < 6 and row["weight_bits_pqh"] < row["weight_bits_pq"]


def test_reproduce_clean_base_starts_from_the_network_that_never_saw_the_validation(
        monkeypatch):
    """``reproduce --holdout N --seed S --clean-base``: the pipeline starts from the zoo network
    trained without those N images and trains on the rest, as such a trial did."""
    from workbench import reproduce, zoo
    if "lenet300-holdout5000-seed0" not in zoo.manifest():
        pytest.skip("no clean LeNet-300-100 base")
    seen = {}

    def run_stages(model_name, smoke, train, settings, base):
        seen.update(base=base, train=train)
        raise KeyboardInterrupt                 # stop before hours of training
    monkeypatch.setattr(reproduce, "run_stages", run_stages)
    with pytest.raises(KeyboardInterrupt):
        reproduce.deep_compression("lenet300", settings={"fc_bits": 4}, holdout=5000, seed=0,
                                   clean_base=True)
    clean = zoo.pretrained("lenet300", holdout=5000, seed=0).state_dict()
    assert all(torch.equal(v, clean[k]) for k, v in seen["base"].state_dict().items())
    assert len(seen["train"]) == 55_000


def test_search_clean_base_loads_the_network_without_its_validation_images(monkeypatch,
                                                                           tmp_path):
    from workbench import zoo
    asked = {}

    def pretrained(name, **kwargs):
        asked.update(name=name, **kwargs)
        raise KeyboardInterrupt
    monkeypatch.setattr(zoo, "pretrained", pretrained)
    with pytest.raises(KeyboardInterrupt):
        main(["search", "prune.magnitude", "--model", "lenet300", "--eval-images", "3000",
              "--seed", "7", "--clean-base", "--out", str(tmp_path)])
    assert asked == {"name": "lenet300", "holdout": 3000, "seed": 7}
