"""Solutions to lesson 01b's exercises (notebooks/01b_pruning_structure.ipynb)."""
import torch

G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)


def filters_to_keep(weight, fraction):
    """Sorted indices of the filters with the largest L1 norm, removing round(fraction * n)
    of them (at least one stays; ties: the lower index stays)."""
    norms = weight.abs().flatten(1).sum(1)
    keep = max(1, len(norms) - round(fraction * len(norms)))
    order = torch.sort(norms, descending=True, stable=True).indices
    return order[:keep].sort().values


def winograd_kernel(g):
    """U = G g G^T of one 3x3 kernel (F(2x2, 3x3))."""
    return G @ g.double() @ G.T
