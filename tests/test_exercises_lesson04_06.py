"""Lessons 04, 05 and 06's exercises: each solution passes its check, the lesson's stub is "not
attempted yet", and a typical mistake is caught with a message that names it."""
import pytest
import torch
import torch.nn.functional as F

from workbench.exercises import lesson04, lesson05, lesson06

from exercise_lab import caught, solution, stub


CHECKS = [(lesson04, "lesson04", "binarize"), (lesson04, "lesson04", "xnor_dot"),
          (lesson04, "lesson04", "ternarize"), (lesson05, "lesson05", "low_rank_factors"),
          (lesson05, "lesson05", "rank_for_energy"), (lesson05, "lesson05", "circulant_product"),
          (lesson06, "lesson06", "distillation_loss"),
          (lesson06, "lesson06", "distillation_gradient"), (lesson06, "lesson06", "fsp_matrix")]


@pytest.mark.parametrize("module, lesson, name", CHECKS, ids=[c[2] for c in CHECKS])
def test_solution_passes(module, lesson, name, capsys):
    assert getattr(module, f"check_{name}")(getattr(solution(lesson), name)) is True
    assert "\N{CHECK MARK}" in capsys.readouterr().out


@pytest.mark.parametrize("module, lesson, name", CHECKS, ids=[c[2] for c in CHECKS])
def test_stub_is_not_attempted(module, lesson, name, capsys):
    assert getattr(module, f"check_{name}")(stub) is None
    assert "not attempted yet" in capsys.readouterr().out


# ------------------------------------------------------------------ lesson 04


def sign(w):
    return torch.where(w >= 0, 1.0, -1.0)


def test_binarize_one_scale_per_layer_is_caught(capsys):
    caught(lesson04.check_binarize, lambda w: w.abs().mean() * sign(w), capsys,
           "lenet300 net.1", "one scale for the whole layer")


def test_binarize_scale_over_one_dimension_of_a_conv_is_caught(capsys):
    # mean over dim 1 only: right for a dense layer, one scale per kernel position for a conv
    caught(lesson04.check_binarize, lambda w: w.abs().mean(1, keepdim=True) * sign(w), capsys,
           "lenet5 features.2", "different magnitudes")


def test_binarize_root_mean_square_is_caught(capsys):
    rms = lambda w: w.pow(2).flatten(1).mean(1).sqrt().view(-1, *[1] * (w.dim() - 1))
    caught(lesson04.check_binarize, lambda w: rms(w) * sign(w), capsys, "root mean square")


def test_xnor_dot_without_the_factor_two_is_caught(capsys):
    caught(lesson04.check_xnor_dot, lambda a, w, k: k - bin(a ^ w).count("1"), capsys,
           "K = 300", "the number of agreements", "K - 2 x popcount")


def test_xnor_dot_returning_the_popcount_is_caught(capsys):
    caught(lesson04.check_xnor_dot, lambda a, w, k: bin(a ^ w).count("1"), capsys,
           "the number of disagreeing signs")


def test_ternarize_scale_over_all_weights_is_caught(capsys):
    def all_weights(w, c):
        delta = c * w.abs().mean()
        return w.abs().mean() * ((w > delta).float() - (w < -delta).float())

    caught(lesson04.check_ternarize, all_weights, capsys, "c = 0.7",
           "the mean of |W| over all weights")


def test_ternarize_threshold_from_the_maximum_is_caught(capsys):
    def from_max(w, c):
        delta = c * w.abs().max()
        codes = (w > delta).float() - (w < -delta).float()
        return w.abs()[codes != 0].mean() * codes

    caught(lesson04.check_ternarize, from_max, capsys, "your threshold is c max|W|")


# ------------------------------------------------------------------ lesson 05


def test_low_rank_without_singular_values_is_caught(capsys):
    def no_sigma(w, k):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :k], vh[:k]

    caught(lesson05.check_low_rank_factors, no_sigma, capsys, "net.1", "singular values are missing")


def test_low_rank_keeping_the_smallest_is_caught(capsys):
    def smallest(w, k):
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, -k:] * s[-k:], vh[-k:]

    caught(lesson05.check_low_rank_factors, smallest, capsys, "the k smallest singular values")


def test_low_rank_not_optimal_reports_the_eckart_young_error(capsys):
    def perturbed(w, k):
        a, b = solution("lesson05").low_rank_factors(w, k)
        return a + 0.01, b

    caught(lesson05.check_low_rank_factors, perturbed, capsys, "sqrt(sum of the dropped sigma_i^2)")


def test_rank_for_energy_on_singular_values_is_caught(capsys):
    def on_sigma(w, energy):
        s = torch.linalg.svdvals(w.double())
        return int((s.cumsum(0) / s.sum() < energy).sum()) + 1

    caught(lesson05.check_rank_for_energy, on_sigma, capsys, "the energy is their squares")


def test_rank_for_energy_off_by_one_is_caught(capsys):
    caught(lesson05.check_rank_for_energy,
           lambda w, e: solution("lesson05").rank_for_energy(w, e) - 1, capsys, "one less")


def test_circulant_without_n_is_caught_on_the_odd_size(capsys):
    caught(lesson05.check_circulant_product,
           lambda r, x: torch.fft.irfft(torch.fft.rfft(r) * torch.fft.rfft(x)), capsys,
           "N = 101", "pass n=N")


def test_circulant_correlation_is_caught(capsys):
    def correlation(r, x):
        return torch.fft.irfft(torch.fft.rfft(r).conj() * torch.fft.rfft(x), n=r.shape[0])

    caught(lesson05.check_circulant_product, correlation, capsys, "circular correlation")


# ------------------------------------------------------------------ lesson 06


def test_kd_loss_without_t_squared_is_caught(capsys):
    caught(lesson06.check_distillation_loss,
           lambda s, t, T: solution("lesson06").distillation_loss(s, t, T) / T ** 2, capsys,
           "T = 20", "KL alone", "T^2")


def test_kd_loss_reversed_kl_is_caught(capsys):
    caught(lesson06.check_distillation_loss,
           lambda s, t, T: solution("lesson06").distillation_loss(t, s, T), capsys,
           "KL in the wrong direction")


def test_kd_loss_mean_reduction_is_caught(capsys):
    def mean_reduction(s, t, T):
        with pytest.warns(UserWarning):           # torch warns about 'mean' itself
            return T * T * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1))

    caught(lesson06.check_distillation_loss, mean_reduction, capsys, "batchmean")


def test_kd_gradient_of_kl_alone_is_caught(capsys):
    caught(lesson06.check_distillation_gradient,
           lambda s, t, T: solution("lesson06").distillation_gradient(s, t, T) / T ** 2, capsys,
           "the gradient of KL alone")


def test_kd_gradient_without_the_batch_mean_is_caught(capsys):
    caught(lesson06.check_distillation_gradient,
           lambda s, t, T: solution("lesson06").distillation_gradient(s, t, T) * len(s), capsys,
           "divide by the batch size B = 64")


def test_fsp_sum_instead_of_mean_is_caught(capsys):
    caught(lesson06.check_fsp_matrix,
           lambda a, b: solution("lesson06").fsp_matrix(a, b) * a.shape[-1] * a.shape[-2], capsys,
           "ResNet-20 stage 1", "divide by h w = 256")


def test_fsp_transposed_is_caught(capsys):
    caught(lesson06.check_fsp_matrix, lambda a, b: solution("lesson06").fsp_matrix(b, a), capsys,
           "transposed")


def test_a_function_that_changes_its_input_cannot_change_the_oracle(capsys):
    """The check hands the student copies: a binarize that takes |w| in place and then
    returns the library's own answer on the changed tensor is wrong, and the next check on the
    same cached layers still sees the trained weights."""
    from workbench.binary import core

    def sneaky(w):
        w.abs_()
        return core.binarize(w)

    assert lesson04.check_binarize(sneaky) is False
    capsys.readouterr()
    assert lesson04.check_binarize(solution("lesson04").binarize) is True
