"""One possible answer to each exercise of lesson 05 (low rank, approximation and hashing).

The lesson's cells hold stubs; its checks (``workbench.exercises.lesson05``) compare a
function with the library's. Try the exercise before you read these.
"""
import torch


def low_rank_factors(weight, k):
    """A = U_k sqrt(S_k), B = sqrt(S_k) V_k^T: A @ B is the best rank-k approximation."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)   # largest first
    root = s[:k].sqrt()
    return u[:, :k] * root, root[:, None] * vh[:k]


def rank_for_energy(weight, energy):
    """The smallest k whose k largest squared singular values hold >= energy of the total."""
    s2 = torch.linalg.svdvals(weight.double()) ** 2
    share = s2.cumsum(0) / s2.sum()
    return int((share < energy - 1e-12).sum()) + 1


def circulant_product(r, x):
    """C(r) x, C[i, j] = r[(i - j) mod N], for every row of x: a circular convolution."""
    n = r.shape[0]
    return torch.fft.irfft(torch.fft.rfft(r) * torch.fft.rfft(x), n=n)
