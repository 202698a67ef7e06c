"""Every command's failure path: a missing data folder, an empty or damaged checkpoint
folder, a checkpoint whose bytes are not a weights-only file, a damaged manifest, an output
path that cannot be written. Each ends with one line on stderr naming the file or folder and
what to do, exit status 2, no traceback. (``test_cli.py`` runs the real ``python -m
workbench`` in a new process once; these call its ``main`` in-process.)

``SCENARIOS`` maps a name to (how to set the world up, argv, words the line must contain);
``/work/figs/s23/count_defects.py`` runs the same scenarios to count the failing ones.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from workbench import data, models
from workbench.__main__ import main


def offline(monkeypatch, root: Path) -> Path:
    """An empty data world in ``root``: no data files anywhere, no download possible."""
    for name in ("wbdata", "cache", "work"):
        (root / name).mkdir(exist_ok=True)
    monkeypatch.setenv("WORKBENCH_DATA", str(root / "wbdata"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.chdir(root / "work")

    def no_network(subdir):
        raise OSError("no network here")
    monkeypatch.setattr(data, "_download", no_network)
    data.mnist.cache_clear()
    data.cifar10.cache_clear()
    return root / "wbdata"


def checkpoints(monkeypatch, root: Path, files: dict[str, bytes] | None = None,
                manifest: bytes | None = None) -> Path:
    """A checkpoint folder holding ``files``, recorded in a manifest with their sha256 (so
    the bytes themselves are what is wrong), or the raw ``manifest`` bytes given."""
    folder = root / "checkpoints"
    folder.mkdir(exist_ok=True)
    entries = {}
    for name, raw in (files or {}).items():
        (folder / f"{name}.pt").write_bytes(raw)
        entries[name] = {"file": f"{name}.pt", "sha256": hashlib.sha256(raw).hexdigest(),
                         "test_acc": 0.99}
    if manifest is not None:
        (folder / "manifest.json").write_bytes(manifest)
    elif entries:
        (folder / "manifest.json").write_text(json.dumps(entries))
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(folder))
    return folder


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


class NotWeights:
    """An object torch.load(weights_only=True) must refuse to unpickle."""


def lenet300_state() -> dict:
    torch.manual_seed(0)
    return models.build("lenet300").state_dict()


REPRODUCE = ["reproduce", "deep-compression", "--model", "lenet300", "--smoke"]
SCENARIOS = {
    "reproduce, no data folder": (
        lambda mp, root: (offline(mp, root), checkpoints(mp, root, {
            "lenet300": saved(lenet300_state())})),
        REPRODUCE, ["not found", "WORKBENCH_DATA"]),
    "zoo train, no data folder": (
        lambda mp, root: (offline(mp, root), checkpoints(mp, root)),
        ["zoo", "train", "lenet300", "--epochs", "1", "--quiet"], ["not found", "WORKBENCH_DATA"]),
    "reproduce, empty checkpoint folder": (
        lambda mp, root: checkpoints(mp, root), REPRODUCE, ["zoo train lenet300"]),
    "reproduce, checkpoint of random bytes": (
        lambda mp, root: checkpoints(mp, root, {"lenet300": bytes(range(256)) * 4}),
        REPRODUCE, ["lenet300.pt", "zoo train lenet300"]),
    "reproduce, checkpoint truncated before it was recorded": (
        lambda mp, root: checkpoints(mp, root, {"lenet300": saved(lenet300_state())[:999]}),
        REPRODUCE, ["lenet300.pt", "zoo train lenet300"]),
    "reproduce, checkpoint that is not weights-only": (
        lambda mp, root: checkpoints(mp, root, {"lenet300": saved({"x": NotWeights()})}),
        REPRODUCE, ["lenet300.pt", "zoo train lenet300"]),
    "reproduce, checkpoint that is a plain pickle": (
        lambda mp, root: checkpoints(mp, root, {"lenet300": pickle.dumps([1, 2, 3])}),
        REPRODUCE, ["lenet300.pt", "zoo train lenet300"]),
    "reproduce, checkpoint holding a list, not a state dict": (
        lambda mp, root: checkpoints(mp, root, {"lenet300": saved([torch.zeros(3)])}),
        REPRODUCE, ["lenet300.pt", "zoo train lenet300"]),
    "reproduce, manifest that is not JSON": (
        lambda mp, root: checkpoints(mp, root, {"lenet300": saved(lenet300_state())},
                                     manifest=b"{not json"),
        REPRODUCE, ["manifest.json"]),
    "zoo list, manifest that is not JSON": (
        lambda mp, root: checkpoints(mp, root, manifest=b"\x00\xff"),
        ["zoo", "list"], ["manifest.json"]),
    "bench --json into a missing folder": (
        lambda mp, root: None,
        ["bench", "widgets", "--smoke", "--json", "/nonexistent/folder/rows.json"],
        ["/nonexistent/folder"]),
}


def run_scenario(name: str, root: Path, capsys=None) -> tuple[int | None, str]:
    """(exit status, stderr) of the command of scenario ``name`` in a world set up in
    ``root`` (restored afterwards)."""
    setup, argv, _ = SCENARIOS[name]
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        setup(mp, root)
        code = 0
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
            except SystemExit as stop:
                code = stop.code
            except BaseException:        # noqa: BLE001 - what a user would see as a traceback
                import traceback
                traceback.print_exc()
                code = 1
    data.mnist.cache_clear()
    data.cifar10.cache_clear()
    return code, err.getvalue()


def scenario_problem(name: str, root: Path) -> tuple[str, str] | None:
    """None if the scenario ends in one clear line and exit status 2."""
    code, err = run_scenario(name, root)
    lines = err.strip().splitlines()
    if "Traceback" in err:
        return "traceback", f"{name}: {lines[-1][:160] if lines else ''}"
    if code != 2 or len(lines) != 1:
        return "not_one_line", f"{name}: status {code}, {len(lines)} lines: {err[:160]}"
    missing = [w for w in SCENARIOS[name][2] if w not in lines[0]]
    if missing:
        return "unclear_message", f"{name}: {lines[0][:200]} (lacks {missing})"
    return None


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_failing_command_says_what_and_where_in_one_line(name, tmp_path):
    assert scenario_problem(name, tmp_path) is None
