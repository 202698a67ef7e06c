"""Lessons 00 and 03's exercises: each solution passes its check, the lesson's stub is "not
attempted yet", and a typical mistake is caught with a message that names it."""
import numpy as np
import pytest

from workbench import codec, zoo
from workbench.exercises import lesson00, lesson03
from workbench.measure import count_params

from exercise_lab import solution, stub


pytestmark = pytest.mark.skipif(not {"lenet300", "lenet5", "resnet20"} <= set(zoo.manifest()),
                                reason="needs the zoo's lenet300, lenet5 and resnet20")


@pytest.mark.parametrize("check, name", [
    (lesson00.check_layer_macs, "layer_macs"),
    (lesson00.check_compression_ratio, "compression_ratio"),
    (lesson03.check_huffman_lengths, "huffman_lengths"),
    (lesson03.check_index_bits, "index_bits_per_weight")])
def test_solution_passes_and_stub_is_not_attempted(check, name, capsys):
    module = "lesson00" if check.__module__.endswith("lesson00") else "lesson03"
    assert check(getattr(solution(module), name)) is True
    assert check(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_layer_macs_counting_each_weight_once_is_caught(capsys):
    def once(layer, output_shape):           # right for Linear, wrong for a convolution
        return layer.weight.numel()

    assert lesson00.check_layer_macs(once) is False
    out = capsys.readouterr().out
    assert "lenet5 features.0" in out and "once per output position" in out


def test_layer_macs_counting_flops_is_caught(capsys):
    def flops(layer, output_shape):
        return 2 * solution("lesson00").layer_macs(layer, output_shape)

    assert lesson00.check_layer_macs(flops) is False
    assert "that is FLOPs" in capsys.readouterr().out


def test_compression_ratio_from_nonzeros_is_caught(capsys):
    def by_count(base, compressed):          # a formula instead of the file
        params, nonzeros = count_params(compressed)
        return params / nonzeros

    assert lesson00.check_compression_ratio(by_count) is False
    out = capsys.readouterr().out
    assert "90% sparsity" in out and "parameters over nonzeros" in out


def test_compression_ratio_upside_down_is_caught(capsys):
    def inverted(base, compressed):
        return len(codec.encode(compressed)) / len(codec.encode(base))

    assert lesson00.check_compression_ratio(inverted) is False
    assert "upside down" in capsys.readouterr().out


def test_huffman_lengths_fixed_length_code_is_caught(capsys):
    def fixed(counts):
        counts = np.asarray(counts)
        return np.where(counts > 0, int(np.ceil(np.log2((counts > 0).sum()))), 0)

    assert lesson03.check_huffman_lengths(fixed) is False
    out = capsys.readouterr().out
    assert "net.1 codebook indices" in out and "fixed-length code" in out


def test_huffman_lengths_that_are_no_prefix_code_are_caught(capsys):
    def rounded_down(counts):                # floor(-log2 p): too short, Kraft sum above 1
        counts = np.asarray(counts, dtype=float)
        p = counts / counts.sum()
        return np.where(counts > 0, np.maximum(1, np.floor(-np.log2(np.where(p > 0, p, 1)))), 0)

    assert lesson03.check_huffman_lengths(rounded_down) is False
    assert "Kraft sum" in capsys.readouterr().out


def test_index_bits_without_fillers_is_caught(capsys):
    def no_fillers(weight, bits):
        return float(bits)

    assert lesson03.check_index_bits(no_fillers) is False
    out = capsys.readouterr().out
    assert "net.1 at 3-bit gaps" in out and "filler entries" in out
