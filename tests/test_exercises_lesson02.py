"""Lesson 02a / 02b exercises: each solution passes its check, the lesson's stub counts as not
attempted, and a typical mistake fails with a message that names it."""
import pytest
import torch

from workbench.exercises import lesson02a, lesson02b

from exercise_lab import solution as solution_module
from exercise_lab import stub

A, B = solution_module("lesson02a"), solution_module("lesson02b")


@pytest.mark.parametrize("check, solution", [
    (lesson02a.check_to_fixed_point, A.to_fixed_point),
    (lesson02a.check_lloyd_step, A.lloyd_step),
    (lesson02b.check_round_ste, B.round_ste),
    (lesson02b.check_int8_weights, B.int8_weights)])
def test_solution_passes_and_stub_is_not_attempted(check, solution, capsys):
    assert check(solution) is True
    assert check(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_fixed_point_without_saturation_is_caught(capsys):
    assert lesson02a.check_to_fixed_point(lambda x, word, frac: torch.floor(x * 2 ** frac + 0.5)
                                          / 2 ** frac) is False
    assert "beyond the range" in capsys.readouterr().out


def test_fixed_point_rounding_halves_to_even_is_caught(capsys):
    def half_even(x, word, frac):
        return torch.round(x * 2 ** frac).clamp(-2 ** (word - 1), 2 ** (word - 1) - 1) / 2 ** frac
    assert lesson02a.check_to_fixed_point(half_even) is False
    assert "round halves up" in capsys.readouterr().out


def test_lloyd_step_with_medians_is_caught(capsys):
    def medians(weights, centroids):
        w = weights.flatten().double()
        nearest = (w[:, None] - centroids.double()[None, :]).abs().argmin(1)
        return torch.stack([w[nearest == j].median() for j in range(len(centroids))])
    assert lesson02a.check_lloyd_step(medians) is False
    assert "median" in capsys.readouterr().out


def test_plain_round_without_ste_is_caught(capsys):
    assert lesson02b.check_round_ste(torch.round) is False
    assert "gradient is 0 everywhere" in capsys.readouterr().out


def test_int8_full_range_is_caught(capsys):
    def full_range(weight):
        scale = weight.flatten(1).abs().amax(1) / 127
        return scale, torch.round(weight / scale.view((-1,) + (1,) * (weight.dim() - 1)))
    assert lesson02b.check_int8_weights(full_range) is False
    assert "[-64, 64]" in capsys.readouterr().out
