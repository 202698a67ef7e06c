"""Lesson 08's exercises: each solution passes its check, the lesson's stub is "not attempted
yet", and typical mistakes are caught with a message that names them."""
import math

import pytest

from workbench import zoo
from workbench.exercises import lesson08

from exercise_lab import caught, stub
from exercise_lab import solution as solution_module

pytestmark = pytest.mark.skipif(
    "lenet300" not in zoo.manifest(),
    reason="no lenet300 checkpoint: python -m workbench zoo train lenet300")


def solution():
    return solution_module("lesson08")


NAMES = ["pareto_front", "inference_energy", "trials_to_reach"]


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes(name, capsys):
    assert getattr(lesson08, f"check_{name}")(getattr(solution(), name)) is True
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_attempted(name, capsys):
    assert getattr(lesson08, f"check_{name}")(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_the_cases_hold_what_the_mistakes_need():
    # the real study has dominated trials, the tie case duplicates on its front
    (_, points, front), (_, ties, tie_front) = lesson08._front_cases()
    assert 1 <= len(front) < len(points)
    assert {0, 1} <= tie_front and 3 not in tie_front
    # both sides of the SRAM: some cases read from DRAM, some from SRAM, one at the edge
    sizes = [args for _, args, _ in lesson08._energy_cases()]
    assert any(b > s for b, _, s in sizes) and any(b < s for b, _, s in sizes)
    assert any(b == s for b, _, s in sizes) and any(b % 4 for b, _, _ in sizes)
    # thresholds reached early, late and never, and a Hyperband study with pruned trials
    answers = [reach for _, _, reach in lesson08._reach_cases()]
    assert None in answers and len({a for a in answers if a}) >= 3
    pruned = [r for r in lesson08._studies()["hyperband at 1/25"].trials
              if r.state.name == "PRUNED"]
    assert pruned


def test_front_of_the_dominated_points_is_caught(capsys):
    def dominated(points):
        front = set(solution().pareto_front(points))
        return [i for i in range(len(points)) if i not in front]
    caught(lesson08.check_pareto_front, dominated, capsys, "those are the dominated points")


def test_front_with_bytes_maximized_is_caught(capsys):
    caught(lesson08.check_pareto_front,
           lambda points: solution().pareto_front([(a, -b) for a, b in points]),
           capsys, "bytes maximized")


def test_front_that_drops_duplicates_is_caught(capsys):
    def strict(points):      # "dominated" by an equal point: one of the two copies is lost
        return [i for i, p in enumerate(points)
                if not any(q[0] >= p[0] and q[1] <= p[1] for j, q in enumerate(points) if j < i)
                and not any(q[0] >= p[0] and q[1] <= p[1] and q != p
                            for j, q in enumerate(points) if j > i)]
    caught(lesson08.check_pareto_front, strict, capsys, "7 points with ties",
           "do not dominate each other")


def test_energy_in_picojoules_is_caught(capsys):
    caught(lesson08.check_inference_energy,
           lambda b, m, s: 1e6 * solution().inference_energy(b, m, s), capsys, "picojoules")


def test_energy_without_the_add_is_caught(capsys):
    def multiply_only(b, m, s):
        return solution().inference_energy(b, m, s) - m * 0.9 / 1e6
    caught(lesson08.check_inference_energy, multiply_only, capsys, "AND an add")


def test_energy_that_does_not_fit_at_the_edge_is_caught(capsys):
    def strict(b, m, s):
        return solution().inference_energy(b, m, s if b < s else b - 1)
    caught(lesson08.check_inference_energy, strict, capsys, "as large as the file",
           "<= SRAM bytes")


def test_energy_without_rounding_the_words_up_is_caught(capsys):
    def exact(b, m, s):
        read = 5.0 if b <= s else 640.0
        return (b / 4 * read + m * 4.6) / 1e6
    caught(lesson08.check_inference_energy, exact, capsys, "round the words up")


def test_trials_counted_from_zero_is_caught(capsys):
    def from_zero(trials, threshold, budget):
        found = solution().trials_to_reach(trials, threshold, budget)
        return None if found is None else found - 1
    caught(lesson08.check_trials_to_reach, from_zero, capsys, "count from 1")


def test_trials_without_the_pruned_ones_is_caught(capsys):
    def complete_only(trials, threshold, budget):
        return solution().trials_to_reach([t for t in trials if t["state"] == "complete"],
                                          threshold, budget)
    caught(lesson08.check_trials_to_reach, complete_only, capsys, "hyperband at 1/25",
           "count every trial")


def test_trials_ignoring_the_budget_is_caught(capsys):
    caught(lesson08.check_trials_to_reach,
           lambda trials, threshold, budget: solution().trials_to_reach(trials, threshold,
                                                                        math.inf),
           capsys, "must meet both")
