"""The zoo: checked checkpoints, a truthful manifest, clear errors."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest
import torch

from workbench import data, models, train, zoo
from workbench.zoo import CheckpointError

MANIFEST_KEYS = {"sha256", "test_acc", "command", "seed", "epochs", "wall_seconds", "torch"}
MNIST_MODELS = ["lenet300", "lenet5"]
REAL_DIR = zoo.checkpoint_dir()


def require(name: str) -> dict:
    entry = zoo.manifest().get(name)
    if entry is None:
        pytest.skip(f"no {name} checkpoint in {zoo.checkpoint_dir()} yet")
    return entry


@pytest.fixture
def tmp_zoo(tmp_path, monkeypatch):
    """An empty checkpoint folder that the zoo uses instead of data/checkpoints."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setattr(zoo, "checkpoint_dir", lambda: folder)
    return folder


@pytest.fixture(scope="module")
def real_dir():
    """The committed checkpoint folder (before any test points the zoo elsewhere)."""
    return REAL_DIR


def copy_lenet300(real_dir, folder) -> dict:
    entry = json.loads((real_dir / "manifest.json").read_text()).get("lenet300")
    if entry is None:
        pytest.skip("no lenet300 checkpoint yet")
    shutil.copyfile(real_dir / "lenet300.pt", folder / "lenet300.pt")
    (folder / "manifest.json").write_text(json.dumps({"lenet300": entry}))
    return entry


def test_pretrained_lenet300_loads_checked(real_dir):
    entry = require("lenet300")
    assert zoo.sha256_of(real_dir / entry["file"]) == entry["sha256"]
    model = zoo.pretrained("lenet300")
    assert isinstance(model, models.LeNet300) and not model.training
    state = torch.load(real_dir / "lenet300.pt", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])


def test_copy_loads_and_altered_byte_is_refused(real_dir, tmp_zoo):
    copy_lenet300(real_dir, tmp_zoo)
    assert isinstance(zoo.pretrained("lenet300"), models.LeNet300)   # the intact copy loads
    path = tmp_zoo / "lenet300.pt"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256") as err:
        zoo.pretrained("lenet300")
    assert str(path) in str(err.value)


def test_truncated_checkpoint_is_refused(real_dir, tmp_zoo):
    copy_lenet300(real_dir, tmp_zoo)
    path = tmp_zoo / "lenet300.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="altered or truncated"):
        zoo.pretrained("lenet300")


def test_state_dict_of_another_architecture_is_refused(tmp_zoo, capsys):
    torch.manual_seed(0)
    wrong = models.LeNet300(hidden=(100, 50))                  # same keys, other shapes
    zoo.save("lenet300", wrong, {"test_acc": 0.0})             # with a matching sha256
    entry = json.loads((tmp_zoo / "manifest.json").read_text())["lenet300"]
    assert entry["sha256"] == zoo.sha256_of(tmp_zoo / "lenet300.pt")
    with pytest.raises(CheckpointError, match="lenet300 architecture"):
        zoo.pretrained("lenet300")
    zoo.save("lenet5", models.LeNet300(), {"test_acc": 0.0})   # other keys altogether
    with pytest.raises(CheckpointError, match="lenet5 architecture"):
        zoo.pretrained("lenet5")


def test_save_then_pretrained_round_trip(tmp_zoo, capsys):
    torch.manual_seed(1)
    model = models.build("lenet5")
    zoo.save("lenet5", model, {"test_acc": 0.5})
    loaded = zoo.pretrained("lenet5")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert zoo.manifest()["lenet5"]["test_acc"] == 0.5
    assert not list(tmp_zoo.glob("*.part"))                   # atomic writes left no temp file


def test_missing_checkpoint_says_how_to_make_it(tmp_zoo):
    with pytest.raises(CheckpointError, match="python -m workbench zoo train resnet20"):
        zoo.pretrained("resnet20")


def test_unknown_name_raises_value_error():
    with pytest.raises(ValueError, match="alexnet"):
        zoo.pretrained("alexnet")
    with pytest.raises(ValueError, match="alexnet"):
        models.build("alexnet")


def test_checkpoint_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path))
    assert zoo.checkpoint_dir() == tmp_path
    assert zoo.manifest() == {}


def test_manifest_entries_are_complete(real_dir):
    entries = zoo.manifest()
    require("lenet300")
    for saved, entry in entries.items():
        name = entry.get("model", saved)         # a clean base names its architecture
        assert name in models.ARCHITECTURES
        assert saved == zoo.key(name, entry.get("holdout", 0), entry.get("holdout_seed", 0))
        assert MANIFEST_KEYS <= set(entry), (saved, MANIFEST_KEYS - set(entry))
        assert zoo.sha256_of(real_dir / entry["file"]) == entry["sha256"], saved
        assert entry["command"].startswith(zoo.train_command(name, entry.get("holdout", 0),
                                                             entry.get("holdout_seed", 0)))
        if "holdout" in entry:   # the same recipe on fewer images: about as good, no floor
            assert entry["train_images"] == len(data.load(zoo.dataset_of(name), "train")) \
                - entry["holdout"]
            assert entry["test_acc"] >= entries[name]["test_acc"] - 0.005, saved
        else:   # trained with the recipe the code states, which the lessons describe
            assert entry["test_acc"] >= zoo.TARGETS[name]["min_acc"], name
            assert entry["recipe"] == asdict(zoo.RECIPES[name]), name
        if "recipe" in entry:
            assert entry["seed"] == entry["recipe"]["seed"]
            assert entry["epochs"] == entry["recipe"]["epochs"]
        assert entry["wall_seconds"] > 0


@pytest.mark.parametrize("name", MNIST_MODELS)
def test_manifest_accuracy_reproduces_on_full_test_set(name):
    entry = require(name)
    model = zoo.pretrained(name)
    accuracy = train.evaluate(model, data.load(zoo.dataset_of(name), "test"))
    assert accuracy == pytest.approx(entry["test_acc"], abs=1e-4)


def test_table_rows_match_manifest():
    rows = {r["model"]: r for r in zoo.table()}
    assert set(rows) == set(models.ARCHITECTURES) | set(zoo.manifest())
    for saved, entry in zoo.manifest().items():
        assert rows[saved]["test_acc"] == entry["test_acc"]
        assert rows[saved]["dataset"] == models.ARCHITECTURES[entry.get("model", saved)][1]


def test_a_clean_base_trains_without_the_searchs_validation_images(tmp_path, monkeypatch):
    """``zoo train NAME --holdout N --seed S``: the recipe on the training images minus those
    a search with eval_images N and seed S validates on, saved under its own key."""
    from workbench.search import holdout
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path))
    seen = {}

    def fit(model, train_set, recipe, **kwargs):       # no training: what it was given
        seen["train"], seen["recipe"] = train_set, recipe
    monkeypatch.setattr(zoo, "fit", fit)
    zoo.train("lenet300", epochs=1, progress=False, holdout=500, seed=3)
    part, val = holdout(data.mnist("train"), 500, seed=3)
    assert torch.equal(seen["train"].images, part.images) and len(val) == 500
    entry = zoo.manifest()["lenet300-holdout500-seed3"]
    assert entry["train_images"] == 59_500 and entry["model"] == "lenet300"
    assert entry["command"] == "python -m workbench zoo train lenet300 --holdout 500 --seed 3 " \
                               "--epochs 1"
    assert seen["recipe"].epochs == 1
    loaded = zoo.pretrained("lenet300", holdout=500, seed=3)
    assert isinstance(loaded, models.LeNet300)
    with pytest.raises(CheckpointError, match="zoo train lenet300'"):
        zoo.pretrained("lenet300")                      # the full-data network is another file
    with pytest.raises(CheckpointError, match="--holdout 500 --seed 4"):
        zoo.pretrained("lenet300", holdout=500, seed=4)
    assert [r["model"] for r in zoo.table() if r["target_min_acc"] is None] \
        == ["lenet300-holdout500-seed3"]
