"""Lessons 01a and 01b's exercises: each solution passes its check, the lesson's stub is "not
attempted yet", and a typical mistake is caught with a message that names it."""
import pytest
import torch

from workbench.exercises import lesson01a, lesson01b

from exercise_lab import solution, stub


def test_magnitude_mask_solution_passes():
    assert lesson01a.check_magnitude_mask(solution("lesson01a").magnitude_mask) is True


def test_magnitude_mask_stub_is_not_attempted(capsys):
    assert lesson01a.check_magnitude_mask(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_magnitude_mask_keeping_the_smallest_is_caught(capsys):
    def smallest(weight, sparsity):     # keeps the right count, but the wrong end
        n_keep = weight.numel() - round(sparsity * weight.numel())
        mask = torch.zeros_like(weight)
        mask.view(-1)[torch.topk(weight.abs().flatten(), n_keep, largest=False).indices] = 1
        return mask

    assert lesson01a.check_magnitude_mask(smallest) is False
    out = capsys.readouterr().out
    assert "net.1" in out and "you kept the smallest |w|" in out


def test_magnitude_mask_keeping_the_share_is_caught(capsys):
    def inverted(weight, sparsity):     # keeps `sparsity` of the weights instead of removing it
        return solution("lesson01a").magnitude_mask(weight, 1 - sparsity)

    assert lesson01a.check_magnitude_mask(inverted) is False
    assert "instead of removing it" in capsys.readouterr().out


def test_csr_bytes_solution_passes():
    assert lesson01a.check_csr_bytes(solution("lesson01a").csr_bytes) is True


def test_csr_bytes_stub_is_not_attempted(capsys):
    assert lesson01a.check_csr_bytes(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_csr_bytes_without_row_pointers_is_caught(capsys):
    assert lesson01a.check_csr_bytes(lambda w: 8 * int(w.count_nonzero())) is False
    assert "row pointers" in capsys.readouterr().out


def test_filters_to_keep_solution_passes():
    assert lesson01b.check_filters_to_keep(solution("lesson01b").filters_to_keep) is True


def test_filters_to_keep_stub_is_not_attempted(capsys):
    assert lesson01b.check_filters_to_keep(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_filters_to_keep_weakest_is_caught(capsys):
    def weakest(weight, fraction):
        norms = weight.abs().flatten(1).sum(1)
        keep = max(1, len(norms) - round(fraction * len(norms)))
        return torch.argsort(norms)[:keep].sort().values

    assert lesson01b.check_filters_to_keep(weakest) is False
    out = capsys.readouterr().out
    assert "features.0" in out and "keep the largest" in out


def test_winograd_kernel_solution_passes():
    assert lesson01b.check_winograd_kernel(solution("lesson01b").winograd_kernel) is True


def test_winograd_kernel_stub_is_not_attempted(capsys):
    assert lesson01b.check_winograd_kernel(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


def test_winograd_kernel_transposed_is_caught(capsys):
    G = solution("lesson01b").G

    def transposed(g):
        return (G @ g.double() @ G.T).T

    assert lesson01b.check_winograd_kernel(transposed) is False
    assert "transposed" in capsys.readouterr().out


@pytest.mark.parametrize("check", [lesson01a.check_magnitude_mask, lesson01a.check_csr_bytes,
                                   lesson01b.check_filters_to_keep,
                                   lesson01b.check_winograd_kernel])
def test_a_raising_function_is_reported_not_raised(check, capsys):
    def broken(*args):
        raise ValueError("oops")

    assert check(broken) is False
    assert "ValueError: oops" in capsys.readouterr().out
