"""Test-side helpers of the exercise tests: a lesson's solution module (it lives outside the
package, in solutions/), the lesson's stub, and "this wrong answer is caught, and the message
names the mistake"."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def solution(name: str):
    """``solutions/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "solutions" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stub(*args, **kwargs):
    """What the lesson's exercise cell holds before the student writes it."""
    raise NotImplementedError


def caught(check, function, capsys, *phrases):
    """``check(function)`` fails, and its message holds every one of ``phrases``."""
    assert check(function) is False
    out = capsys.readouterr().out
    for phrase in phrases:
        assert phrase in out, out
