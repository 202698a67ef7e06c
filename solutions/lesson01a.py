"""Solutions to lesson 01a's exercises (notebooks/01a_pruning_weights.ipynb)."""
import torch


def magnitude_mask(weight, sparsity):
    """1 for the weights that stay, 0 for the round(sparsity * n) of smallest |w|."""
    n_drop = round(sparsity * weight.numel())
    mask = torch.ones_like(weight)
    if n_drop:
        drop = torch.topk(weight.abs().flatten(), n_drop, largest=False).indices
        mask.view(-1)[drop] = 0
    return mask


def csr_bytes(weight):
    """CSR with 32-bit indices: rows + 1 row pointers, one column index and one fp32 value
    per nonzero, 4 bytes each."""
    nonzeros = int(weight.count_nonzero())
    return 4 * (weight.shape[0] + 1) + 4 * nonzeros + 4 * nonzeros
