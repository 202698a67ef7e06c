"""The lesson notebooks, executed with papermill, print the numbers the library gives directly.

``CI=1 pytest --nbval-lax notebooks/`` checks that every cell runs; this test checks that what a
notebook *says* is right: it runs lesson 00 on a small subset with injected parameters, reads
the ``NAME=value`` lines the notebook prints, and recomputes them here without the notebook.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workbench import data, zoo
from workbench.prune import Magnitude
from workbench.train import evaluate

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "notebooks" / "00_tour.ipynb"
N_TEST = 500


def printed_values(notebook: Path) -> dict[str, float]:
    """The ``NAME=number`` lines of the stream outputs of an executed notebook."""
    values = {}
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            text = output["text"] if isinstance(output["text"], str) else "".join(output["text"])
            for name, value in re.findall(r"^([A-Z][A-Z0-9_]*)=([-+0-9.eE]+)\s*$", text, re.M):
                values[name] = float(value)
    return values


def test_tour_prints_the_library_numbers(tmp_path):
    papermill = pytest.importorskip("papermill")
    if "lenet300" not in zoo.manifest():
        pytest.skip("no lenet300 checkpoint: python -m workbench zoo train lenet300")
    executed = tmp_path / TOUR.name
    # Papermill injects its cell after the `parameters` cell, so values derived from SMOKE
    # there are not recomputed: pass all three. 0.9 is a sweep point, so acc_at_90 comes
    # from workbench.survey.sweep (the smoke default list, without 0.9, takes the other path).
    papermill.execute_notebook(
        str(TOUR), str(executed), kernel_name="python3", cwd=str(ROOT), progress_bar=False,
        parameters={"SMOKE": True, "N_TEST": N_TEST, "SWEEP_POINTS": [0.0, 0.5, 0.9]})
    values = printed_values(executed)

    test = data.mnist("test").subset(N_TEST, seed=0)
    base = zoo.pretrained("lenet300")
    # The parameters reached the notebook (a lost `parameters` tag would run on 10,000 images).
    assert values["TEST_IMAGES"] == N_TEST
    # Accuracies on 500 images are multiples of 0.002, so the 4 printed decimals are exact.
    assert values["BASE_ACC"] == pytest.approx(evaluate(base, test), abs=1e-6)
    assert values["ACC_AT_90"] == pytest.approx(
        evaluate(Magnitude(sparsity=0.9).apply(base), test), abs=1e-6)
    # Sanity: removing 90% of the weights without retraining cannot make the network better
    # by more than chance. 0.02 is 10 of the 500 images, a generous allowance for the noise of
    # a small subset; a larger "gain" would mean the notebook mixed up its models or subsets.
    assert values["BASE_ACC"] > values["ACC_AT_90"] - 0.02
