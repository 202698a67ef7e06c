"""``python -m workbench``: a user's mistake ends in one line on stderr and exit status 2,
never a traceback; the line says what is wrong and what to do."""
from __future__ import annotations

import subprocess
import sys

import pytest

from workbench import data
from workbench.__main__ import main


def run_main(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_survey_without_data_is_one_line_saying_where_to_put_the_files(
        isolated_data, monkeypatch, capsys, tmp_path):
    def offline(subdir):
        raise OSError("no network here")
    monkeypatch.setattr(data, "_download", offline)
    line = run_main(["survey", "--smoke", "--out", str(tmp_path / "out")], capsys)
    assert "not found" in line and "WORKBENCH_DATA" in line


@pytest.mark.parametrize("argv, says", [
    (["survy"], "invalid choice"),
    (["zoo", "train"], "NAME"),
    (["zoo", "train", "lenet9"], "lenet9"),
    (["bench", "no_such_bench"], "no_such_bench"),
    (["survey", "--smoke", "--methods", "prune.magnitud"], "prune.magnitud"),
    (["reproduce", "deep-compression", "--model", "vgg_small"], "vgg_small"),
    (["reproduce", "deep-compression", "--model", "lenet300", "--smoke", "--set",
      "prune.sparsty=0.9"], "sparsty"),
    (["reproduce", "deep-compression", "--model", "lenet300", "--smoke", "--set",
      "fc_bits=40"], "fc_bits"),
    (["reproduce", "deep-compression", "--model", "lenet300", "--smoke", "--holdout", "-5"],
     "--holdout -5"),
    (["reproduce", "deep-compression", "--model", "lenet300", "--smoke", "--holdout",
      "99999"], "--holdout 99999: the training data has 1000 images"),
    (["reproduce", "deep-compression", "--model", "lenet300", "--clean-base"],
     "--clean-base: allowed only with --holdout N and without --smoke"),
    (["reproduce", "deep-compression", "--model", "lenet300", "--smoke", "--holdout", "200",
      "--clean-base"], "--clean-base: allowed only with --holdout N and without --smoke"),
    (["search", "prune.magnitude", "--model", "lenet300", "--smoke", "--clean-base",
      "--out", "/tmp"], "--clean-base with --smoke"),
    (["zoo", "train", "lenet300", "--holdout", "-1"], "--holdout -1 --seed 0: allowed"),
    (["zoo", "train", "lenet300", "--holdout", "60000"],
     "--holdout 60000: the training data has 60000 images; allowed is 1..59999"),
    (["zoo", "train", "lenet300", "--seed", "3"], "--seed only with --holdout N > 0"),
])
def test_mistakes_are_one_line(argv, says, capsys):
    assert says in run_main(argv, capsys)


def test_a_missing_checkpoint_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path))
    line = run_main(["reproduce", "deep-compression", "--model", "lenet300", "--smoke"], capsys)
    assert "zoo train lenet300" in line


def test_a_missing_clean_base_says_the_command_that_makes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_CHECKPOINTS", str(tmp_path))
    line = run_main(["reproduce", "deep-compression", "--model", "lenet300", "--holdout",
                     "5000", "--seed", "2", "--clean-base", "--set", "fc_bits=4"], capsys)
    assert "'lenet300-holdout5000-seed2'" in line
    assert "zoo train lenet300 --holdout 5000 --seed 2" in line


def test_the_real_command_prints_no_traceback():
    result = subprocess.run([sys.executable, "-m", "workbench", "bench", "nothing"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
