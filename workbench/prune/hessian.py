"""Second-order pruning: Optimal Brain Damage (LeCun et al. 1990) and Optimal Brain Surgeon
(Hassibi & Stork 1993), the latter layer-wise as in L-OBS (Dong et al. 2017) and OBC (Frantar
& Alistarh 2022).

Near a minimum the loss grows by about 1/2 dw^T H dw when the weights move by dw.

- OBD keeps only the diagonal of H: zeroing w_i costs s_i = 1/2 h_ii w_i^2 (the saliency), and
  the weights with the smallest saliency go. h_ii is estimated on training images, either as the
  diagonal of the Gauss-Newton matrix J^T (diag p - p p^T) J of the cross-entropy (``fisher``:
  the Fisher information, the expectation over labels drawn from the model's own softmax, here
  computed exactly over all classes) or by Hutchinson's estimator E[z * Hz] of the true
  Hessian with Rademacher probes z and Hessian-vector products. For a ReLU network the two have
  the same expectation: the logits are linear in any single weight, so the Hessian diagonal
  has no second-derivative term and equals the Gauss-Newton diagonal.
- OBS uses the full inverse Hessian: removing w_q costs w_q^2 / (2 [H^-1]_qq) and the best
  correction of the other weights is dw = -(w_q / [H^-1]_qq) H^-1[:, q]. Layer-wise, the loss is
  the squared error of the layer's outputs, whose Hessian 2 X^T X / n (X: the layer's sampled
  inputs, unfolded for a convolution) is the same for every output row; each row is pruned on
  its own, one weight (or a few) at a time, updating its H^-1 after each removal.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ..method import Method, clone_model
from .magnitude import magnitude_mask, prunable_layers
from .surgery import layer_io


def _apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    for name, module in prunable_layers(model):
        prune.custom_from_mask(module, "weight", masks[name])


def _split(flat: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sizes = [t.numel() for t in like.values()]
    return {n: part.view_as(like[n]) for n, part in zip(like, torch.split(flat, sizes))}


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
    records, handles = {}, []
    for name in names:
        def hook(module, inputs, output, name=name):
            records[name] = (inputs[0].detach(), output)
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
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


@dataclass
class OBD(Method):
    """Prune the weights of smallest saliency 1/2 h_ii w^2 (LeCun et al. 1990)."""
    id = "prune.obd"
    reference = "LeCun, Denker, Solla 1990, Optimal Brain Damage"
    sliders = {"sparsity": (0.0, 0.99, 0.01), "samples": (1, 256, 1)}
    needs_data = True
    smoke = {"images": 8, "samples": 2}

    sparsity: float = 0.9
    estimator: str = "fisher"       # "fisher" (exact Gauss-Newton diagonal) | "hutchinson"
    samples: int = 64               # Rademacher probes per batch (hutchinson only)
    images: int = 1024              # training images the Hessian is estimated on
    scope: str = "layer"            # "layer" | "global" (saliencies are losses: comparable)
    seed: int = 0

    def validate(self):
        self._check_range("sparsity", 0.0, 1.0)
        self._check_choice("estimator", ("fisher", "hutchinson"))
        self._check_choice("scope", ("layer", "global"))
        self._check_whole("samples", 1, 1_000_000)
        self._check_whole("images", 1, 1_000_000)
        self._check_whole("seed", 0, 2 ** 63 - 1)

    def settings(self) -> dict:
        shown = self.params()
        if self.estimator == "fisher":
            del shown["samples"]
        return shown

    def hessian_diagonal(self, model: nn.Module, data) -> dict[str, torch.Tensor]:
        x, y = data.subset(min(self.images, len(data)), seed=self.seed).tensors()
        if self.estimator == "fisher":
            return ggn_diagonal(model, x)
        g = torch.Generator().manual_seed(self.seed)
        return hutchinson_diagonal(model, x, y, self.samples, g)

    def saliencies(self, model: nn.Module, data) -> dict[str, torch.Tensor]:
        h = self.hessian_diagonal(model, data)
        # The true diagonal is >= 0 for these networks (see the module notes); a negative
        # Hutchinson estimate is sampling noise, read as "no curvature measured".
        return {n: obd_saliency(m.weight.detach(), h[n].clamp(min=0))
                for n, m in prunable_layers(model)}

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError("OBD estimates the Hessian on training data: pass data")
        pruned = clone_model(model)
        s = self.saliencies(pruned, data)
        if self.scope == "layer":
            masks = {n: magnitude_mask(v, self.sparsity) for n, v in s.items()}
        else:
            flat = magnitude_mask(torch.cat([v.flatten() for v in s.values()]), self.sparsity)
            masks = _split(flat, s)
        _apply_masks(pruned, masks)
        return pruned


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


@dataclass
class OBS(Method):
    """Layer-wise Optimal Brain Surgeon: prune by w^2 / [H^-1]_qq and correct the survivors."""
    id = "prune.obs"
    reference = ("Hassibi, Stork 1993, Second order derivatives for network pruning: Optimal "
                 "Brain Surgeon; layer-wise: Dong, Chen, Pan 2017 (L-OBS), Frantar, Alistarh "
                 "2022 (OBC)")
    sliders = {"sparsity": (0.0, 0.99, 0.01), "step": (0.0, 0.25, 0.01)}
    needs_data = True
    smoke = {"images": 32, "sparsity": 0.3, "step": 1.0}

    sparsity: float = 0.9
    step: float = 0.05              # share of a row's remaining weights removed per step (0: one)
    images: int = 1024              # training images whose layer inputs give H
    damp: float = 0.01              # lambda = damp x mean diag(H)
    seed: int = 0

    def validate(self):
        self._check_range("sparsity", 0.0, 1.0)
        self._check_range("step", 0.0, 1.0)
        self._check_whole("images", 1, 1_000_000)
        self._check_range("damp", 0.0, 1e6)
        self._check_whole("seed", 0, 2 ** 63 - 1)

    def prune_layer(self, module: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
        """(corrected weight, mask); the corrected bias is written into the module."""
        weight = module.weight.detach()
        rows = weight.flatten(1)
        bias = module.bias is not None
        if bias:
            rows = torch.cat([rows, module.bias.detach()[:, None]], 1)
        h_inv = dampened_inverse(layer_hessian(module, inputs), self.damp)
        n_prune = round(self.sparsity * weight[0].numel())   # the same number in every row
        new, mask = obs_prune(rows, h_inv, n_prune, self.step, protected=int(bias))
        if bias:
            module.bias.data.copy_(new[:, -1])
            new, mask = new[:, :-1], mask[:, :-1]
        return new.view_as(weight), mask.view_as(weight)

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError("OBS builds each layer's Hessian from its inputs: pass data")
        pruned, reference = clone_model(model), clone_model(model)
        layers = dict(prunable_layers(pruned))
        # The inputs of the unpruned network, as L-OBS: each layer is pruned on its own.
        for names in _batches_of_layers(reference, list(layers), self.images):
            records = layer_io(reference, data, names, self.images, seed=self.seed)
            for name in names:
                module = layers[name]
                weight, mask = self.prune_layer(module, records.pop(name)["input"])
                target = module.weight_orig if hasattr(module, "weight_orig") else module.weight
                target.data.copy_(weight)
                prune.custom_from_mask(module, "weight", mask)
        return pruned.train(model.training)


@torch.no_grad()
def _batches_of_layers(model: nn.Module, names: list[str], images: int,
                       budget_bytes: int = 256 << 20) -> list[list[str]]:
    """Consecutive layers whose sampled inputs and outputs fit in ``budget_bytes`` together,
    so that one forward pass of the images serves several layers (a CIFAR conv's inputs for
    1024 images take over a hundred MB)."""
    sizes, handles = {}, []
    for name in names:
        def hook(module, inputs, output, name=name):
            sizes[name] = 4 * images * (inputs[0].numel() + output.numel())
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *model.input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    batches, used = [[]], 0
    for name in names:
        if batches[-1] and used + sizes[name] > budget_bytes:
            batches.append([])
            used = 0
        batches[-1].append(name)
        used += sizes[name]
    return batches


# The methods this module registers in workbench.METHODS.
METHODS = (OBD, OBS)
