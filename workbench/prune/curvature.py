"""The curvature behind second-order pruning, on tensors: the Hessian diagonals of OBD
(exact Gauss-Newton / Fisher, Hutchinson's estimate) and the layer-wise inverse Hessian and
weight removal of OBS. The methods that use them are in ``hessian``, with the notes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import hooked
from .magnitude import prunable_layers

# ------------------------------------------------------------------ OBD: diagonal Hessian

def obd_saliency(weight: torch.Tensor, hessian_diag: torch.Tensor) -> torch.Tensor:
    """Loss increase 1/2 h_ii w_i^2 predicted for zeroing each weight (LeCun et al., eq. 6)."""
    return 0.5 * hessian_diag * weight ** 2


def _squared_example_grads(module: nn.Module, inputs: torch.Tensor,
                           grad_out: torch.Tensor) -> torch.Tensor:
    """Sum over examples of the squared per-example gradient of the layer's weight, where
    ``grad_out`` is each example's gradient at the layer's output.

    A linear layer's per-example gradient is the outer product grad_out x input, so the sum of
    its squares is (grad_out^2)^T (input^2), one matrix product. A convolution's sums that
    product over the output positions of the unfolded (im2col) input: built per example.
    """
    if isinstance(module, nn.Linear):
        return grad_out.pow(2).T @ inputs.pow(2)
    cols = F.unfold(inputs, module.kernel_size, module.dilation, module.padding, module.stride)
    grads = torch.einsum("nop,nip->noi", grad_out.flatten(2), cols)
    return grads.pow(2).sum(0).view_as(module.weight)


def _forward_recording(model: nn.Module, names: list[str], x: torch.Tensor):
    """Logits, and the input and output of each named layer (outputs stay in the graph)."""
    records = {}

    def record(module, inputs, output, name):
        records[name] = (inputs[0].detach(), output)

    with hooked(model, {name: record for name in names}):
        logits = model(x)
    return logits, records


def ggn_diagonal(model: nn.Module, x: torch.Tensor, names: list[str] | None = None,
                 chunk: int = 64) -> dict[str, torch.Tensor]:
    """Exact diagonal of the Gauss-Newton matrix of the mean cross-entropy on ``x``, for the
    weights of the named layers (default: all Conv2d and Linear).

    For softmax + cross-entropy, G = mean_n J_n^T (diag p_n - p_n p_n^T) J_n. With the columns
    b_y = sqrt(p_y) (e_y - p) of a square root of the middle factor, diag G is the mean over
    examples of sum_y (J_n^T b_y)^2: one backward pass per class gives every example's J_n^T b_y
    (examples are independent in eval mode), squared and summed. This equals the Fisher
    information with labels drawn from the model's softmax, computed over all labels exactly.
    """
    names = names or [n for n, _ in prunable_layers(model)]
    model.eval()
    diag = {n: torch.zeros_like(model.get_submodule(n).weight) for n in names}
    with torch.enable_grad():
        for xs in x.split(chunk):
            logits, records = _forward_recording(model, names, xs)
            p = logits.detach().softmax(1)
            outputs = [records[n][1] for n in names]
            for y in range(p.shape[1]):
                b = -p * p[:, y:y + 1].sqrt()
                b[:, y] += p[:, y].sqrt()
                grads = torch.autograd.grad(logits, outputs, grad_outputs=b, retain_graph=True)
                for n, g in zip(names, grads):
                    diag[n] += _squared_example_grads(model.get_submodule(n), records[n][0], g)
    return {n: d / len(x) for n, d in diag.items()}


def hutchinson_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int,
                        generator: torch.Generator, names: list[str] | None = None,
                        chunk: int = 256, probes: int = 16) -> dict[str, torch.Tensor]:
    """Hutchinson's estimate E_z[z * Hz] of the diagonal of the Hessian of the mean
    cross-entropy on (x, y), for the weights of the named layers, with ``samples`` Rademacher
    probes z (entries +-1), ``probes`` at a time; Hz is a Hessian-vector product by double
    backward. Unbiased: the
    off-diagonal terms H_ij z_i z_j average out, with a standard error of
    sqrt(sum_{j != i} H_ij^2 / samples).
    """
    names = names or [n for n, _ in prunable_layers(model)]
    model.eval()
    diag = {n: torch.zeros_like(model.get_submodule(n).weight) for n in names}
    with torch.enable_grad():
        for xs, ys in zip(x.split(chunk), y.split(chunk)):
            logits = model(xs)
            # After the forward: a pruned layer's weight (weight_orig x mask) of this pass.
            weights = [model.get_submodule(n).weight for n in names]
            loss = F.cross_entropy(logits, ys, reduction="sum") / len(x)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            for batch in range(0, samples, probes):
                b = min(probes, samples - batch)
                z = [torch.randint(0, 2, (b, *w.shape), generator=generator).to(w.dtype) * 2 - 1
                     for w in weights]
                # b Hessian-vector products at once (autograd vmaps the double backward).
                hz = torch.autograd.grad(grads, weights, grad_outputs=z, retain_graph=True,
                                         is_grads_batched=True)
                for n, zi, hzi in zip(names, z, hz):
                    diag[n] += (zi * hzi).sum(0)
    return {n: d / samples for n, d in diag.items()}


# ------------------------------------------------------------------ OBS: layer-wise inverse

def layer_hessian(module: nn.Module, inputs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """H = 2 X^T X / n of the layer's squared output error, X one row per output position:
    the inputs of a Linear layer, the unfolded patches of a convolution, with a column of ones
    appended when the layer has a bias (the bias then takes part in the correction)."""
    bias = module.bias is not None
    d = module.weight[0].numel() + bias
    h, n = torch.zeros(d, d, dtype=torch.float64), 0
    for xs in inputs.split(chunk):
        if isinstance(module, nn.Conv2d):
            xs = F.unfold(xs, module.kernel_size, module.dilation, module.padding, module.stride)
            xs = xs.transpose(1, 2).reshape(-1, d - bias)
        if bias:
            xs = torch.cat([xs, torch.ones(len(xs), 1, dtype=xs.dtype)], 1)
        h += (xs.T @ xs).double()          # float32 products, float64 sum over chunks
        n += len(xs)
    return 2 * h / n


def dampened_inverse(h: torch.Tensor, damp: float) -> torch.Tensor:
    """(H + lambda I)^-1 with lambda = damp x mean diag(H): inputs that never vary (the
    border pixels of MNIST) make X^T X singular."""
    lam = damp * h.diagonal().mean() + 1e-12
    factor, info = torch.linalg.cholesky_ex(h + lam * torch.eye(len(h), dtype=h.dtype))
    if info:
        raise ValueError(f"the layer Hessian is singular (rank-deficient inputs): damp={damp} "
                         "is too small, use e.g. 0.01")
    return torch.cholesky_inverse(factor)


def obs_saliency(w: torch.Tensor, h_inv_diag: torch.Tensor) -> torch.Tensor:
    """Loss increase w_q^2 / (2 [H^-1]_qq) of removing each weight with the best correction."""
    return w ** 2 / (2 * h_inv_diag)


def _steps(n_prune: int, alive: int, step: float):
    """How many weights each OBS step removes: ``step`` x the remaining ones, at least one."""
    removed = 0
    while removed < n_prune:
        k = min(max(1, int(step * (alive - removed))), n_prune - removed)
        yield k
        removed += k


def _compact(keep: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Drop the removed slots: rows of the (r, m) tensors, rows and columns of (r, m, m)."""
    r = len(keep)
    idx = keep.nonzero()[:, 1].view(r, -1)            # every row keeps the same number
    out = []
    for t in tensors:
        if t.dim() == 3:
            m = t.shape[1]
            t = t.gather(1, idx[:, :, None].expand(r, len(idx[0]), m))
            t = t.gather(2, idx[:, None, :].expand(r, len(idx[0]), len(idx[0])))
        else:
            t = t.gather(1, idx)
        out.append(t)
    return out


def obs_prune(weights: torch.Tensor, h_inv: torch.Tensor, n_prune: int, step: float = 0.0,
              protected: int = 0, chunk_bytes: int = 32 << 20) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """Remove ``n_prune`` weights of every row of ``weights`` (R, d) by OBS, with the shared
    inverse Hessian ``h_inv`` (d, d). Returns the corrected weights and the mask.

    Each step removes, in every row, the k weights Q of lowest OBS saliency (k = 1 for
    ``step=0``, the classic one at a time; else ``step`` x the row's remaining weights) and
    applies the exact joint correction for Q, dw = -H^-1[:, Q] (H^-1[Q, Q])^-1 w_Q, which zeroes
    w_Q; then deletes Q from the row's inverse, H^-1 <- H^-1 - H^-1[:, Q] (H^-1[Q, Q])^-1
    H^-1[Q, :] (rows and columns Q become zero). The last ``protected`` columns (a bias) are
    corrected but never removed. Rows are done in parallel, in chunks of ``chunk_bytes``; the
    removed slots are dropped from time to time, so the work shrinks with the row.
    """
    rows, d = weights.shape
    out, mask = weights.clone(), torch.ones_like(weights)
    dtype = torch.promote_types(weights.dtype, torch.float32)   # float32 is plenty, damped
    per_chunk = max(1, chunk_bytes // (dtype.itemsize * d * d))
    for start in range(0, rows, per_chunk):
        w = weights[start:start + per_chunk].to(dtype, copy=True)
        r = len(w)
        inv = h_inv.to(dtype).expand(r, d, d)     # a view until the first correction
        slots = torch.arange(d).expand(r, d).clone()      # original column of each slot
        alive = torch.ones(r, d, dtype=torch.bool)        # still prunable
        alive[:, d - protected:] = False
        live, removed = d, 0
        for k in _steps(n_prune, d - protected, step):
            score = obs_saliency(w, inv.diagonal(dim1=1, dim2=2)).masked_fill_(~alive, torch.inf)
            q = score.topk(k, dim=1, largest=False).indices                # (r, k)
            cols = inv.gather(2, q[:, None, :].expand(r, w.shape[1], k))  # H^-1[:, Q]
            inv_qq = cols.gather(1, q[:, :, None].expand(r, k, k))        # H^-1[Q, Q]
            w -= (cols @ torch.linalg.solve(inv_qq, w.gather(1, q)[:, :, None]))[:, :, 0]
            w.scatter_(1, q, 0.0)                                          # exactly, not ~1e-8
            alive.scatter_(1, q, False)
            live, removed = live - k, removed + k
            if removed == n_prune:
                break                         # the last step needs no new inverse
            update = torch.linalg.solve(inv_qq, cols.transpose(1, 2))
            if removed == k:        # first step: the shared view becomes each row's own
                inv = torch.baddbmm(inv, cols, update, alpha=-1)
            else:
                inv.baddbmm_(cols, update, alpha=-1)
            if live < 0.75 * w.shape[1]:
                keep = alive.clone()
                keep[:, w.shape[1] - protected:] = True
                w, inv, slots, alive = _compact(keep, w, inv, slots, alive)
        alive[:, w.shape[1] - protected:] = True
        w.masked_fill_(~alive, 0.0)        # removed before the last step: ~1e-18, make it 0
        out[start:start + r] = torch.zeros(r, d, dtype=dtype).scatter_(1, slots, w)
        mask[start:start + r] = torch.zeros(r, d).scatter_(1, slots, alive.float())
    return out, mask
