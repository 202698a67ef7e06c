"""One possible answer to each exercise of lesson 04 (binary and ternary networks).

The lesson's cells hold stubs; its checks (``workbench.exercises.lesson04``) compare a
function with the library's. Try the exercise before you read these.
"""
import torch


def binarize(weight):
    """alpha_c * sign(W) with alpha_c = mean |W| over each output channel (BWN)."""
    dims = tuple(range(1, weight.dim()))                    # all but the output channel
    alpha = weight.abs().mean(dim=dims, keepdim=True)
    return alpha * torch.where(weight >= 0, 1.0, -1.0)      # sign(0) = +1


def xnor_dot(a_bits, w_bits, k):
    """The dot product of two +-1 vectors packed as bits: K - 2 popcount(a XOR w)."""
    return k - 2 * bin(a_bits ^ w_bits).count("1")


def ternarize(weight, c=0.7):
    """TWN: Delta = c mean|W| (whole layer), codes in {-1, 0, 1}, alpha = mean|W| kept."""
    delta = c * weight.abs().mean()
    codes = (weight > delta).float() - (weight < -delta).float()
    kept = codes != 0
    alpha = weight.abs()[kept].mean() if kept.any() else weight.new_zeros(())
    return alpha * codes
