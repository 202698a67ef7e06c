"""Lesson 07's exercises: each solution passes its check, the lesson's stub is "not attempted
yet", and typical mistakes are caught with a message that names them."""
import pytest

from workbench.exercises import lesson07

from exercise_lab import caught, stub
from exercise_lab import solution as solution_module


def solution():
    return solution_module("lesson07")


NAMES = ["separable_macs", "fire_params"]


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes(name, capsys):
    assert getattr(lesson07, f"check_{name}")(getattr(solution(), name)) is True
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_not_attempted(name, capsys):
    assert getattr(lesson07, f"check_{name}")(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_separable_without_the_depthwise_part_is_caught(capsys):
    caught(lesson07.check_separable_macs,
           lambda c_in, c_out, k, h, w: (h * w * c_in * c_out, h * w * c_in * c_out * k * k),
           capsys, "mobilenet features.1", "pointwise 1x1 part only")


def test_separable_counted_on_the_input_map_is_caught(capsys):
    # right at stride 1, wrong at stride 2: only the stride-2 block is named
    def on_input(c_in, c_out, k, h, w):
        side = 2 * h if (c_in, c_out) == (32, 64) else h
        return side * side * c_in * (k * k + c_out), side * side * c_in * c_out * k * k
    assert lesson07.check_separable_macs(on_input) is False
    out = capsys.readouterr().out
    assert "features.2" in out and "input positions" in out and "features.1 " not in out


def test_full_conv_with_k_instead_of_k_squared_is_caught(capsys):
    caught(lesson07.check_separable_macs,
           lambda c_in, c_out, k, h, w: (h * w * c_in * (k * k + c_out), h * w * c_in * c_out * k),
           capsys, "full conv", "k^2 weights")


def test_fire_without_the_nine_is_caught(capsys):
    caught(lesson07.check_fire_params, lambda c_in, s, e1, e3: c_in * s + s * e1 + s * e3,
           capsys, "squeezenet (squeeze_ratio 0.125) features.4", "9 weights")


def test_fire_with_batch_norm_is_caught(capsys):
    caught(lesson07.check_fire_params,
           lambda c_in, s, e1, e3: c_in * s + s * e1 + 9 * s * e3 + 2 * (s + e1 + e3),
           capsys, "batch norm")
