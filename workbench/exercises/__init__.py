"""Self-checking exercises for the lessons: the student writes a small function in a marked
cell, and the check cell calls ``exercises.lessonNN.check_<name>(their_function)``.

Each check runs the student's function on real inputs (layers of the zoo's networks, real test
images), compares it with the library's own answer, and prints one verdict that says what is
wrong when it is: which input, what was expected and what came back. It returns True (right),
False (wrong) or None (not attempted: the function still raises ``NotImplementedError``, as the
stub in the lesson does, so a lesson runs from top to bottom before the student starts).
The solutions live outside the lessons and the library, in ``solutions/`` at the top of the
repository; ``tests/test_exercises_*.py`` check that each solution passes and that a typical
mistake is caught with a useful message. The student's function always gets copies of the
inputs: one that changes its arguments in place cannot change the oracle's answer, nor the next
case's input.
"""
from __future__ import annotations

from typing import Callable

import torch

PASS, FAIL, TODO = "\N{CHECK MARK}", "\N{BALLOT X}", "\N{HOURGLASS}"


def attempt(name: str, function: Callable, *args, **kwargs):
    """``function(*args, **kwargs)``; ``(True, result)``, or ``(False, message)`` when it is
    not written yet (``NotImplementedError``) or raises."""
    try:
        return True, function(*args, **kwargs)
    except NotImplementedError:
        return False, f"{TODO} {name}: not attempted yet (the cell still raises " \
                      "NotImplementedError); write your code in place of the raise"
    except Exception as error:     # the student's bug, reported rather than raised
        return False, f"{FAIL} {name}: your function raised {type(error).__name__}: {error}"


def verdict(name: str, problems: list[str], passed: str) -> bool:
    """Print the check's result: every problem found (at most five), or ``passed``."""
    if problems:
        shown = problems[:5] + ([f"... and {len(problems) - 5} more"] if len(problems) > 5
                                else [])
        print(f"{FAIL} {name}: not yet right\n  - " + "\n  - ".join(shown))
        return False
    print(f"{PASS} {name}: {passed}")
    return True


def copied(value):
    """``value`` with every tensor in it cloned (in tuples, lists and dicts), so the student's
    function cannot change the judge's inputs. A tensor that requires grad is passed as is: the
    check reads the gradient the function sends back to it."""
    if isinstance(value, torch.Tensor) and not value.requires_grad:
        return value.clone()
    if isinstance(value, (tuple, list)):
        return type(value)(copied(v) for v in value)
    if isinstance(value, dict):
        return {k: copied(v) for k, v in value.items()}
    return value


def run(name: str, function: Callable, cases: list[tuple[str, tuple, dict]],
        judge: Callable[[str, object, tuple, dict], str | None], passed: str) -> bool | None:
    """The common check: ``function`` on each case ``(label, args, kwargs)``; ``judge(label,
    result, args, kwargs)`` returns what is wrong with ``result`` (a sentence) or None."""
    problems = []
    for label, args, kwargs in cases:
        ok, result = attempt(name, function, *copied(args), **copied(kwargs))
        if not ok:
            if result.startswith(TODO):
                print(result)
                return None
            problems.append(f"{label}: {result.split(': ', 1)[1]}")
            continue
        problem = judge(label, result, args, kwargs)
        if problem:
            problems.append(f"{label}: {problem}")
    return verdict(name, problems, passed)
