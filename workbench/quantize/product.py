"""Vector quantization of weights: product and residual quantization (Gong et al. 2014),
Quantized CNN with error correction and table look-up inference (Wu et al. 2016), and PQ
pulled in by a regularizer while training (Soulie et al. 2016).

Layout (our choice, the same for all four): a layer's weight is viewed as a matrix
``W = weight.reshape(out, -1)`` (conv: out x (in*kh*kw), PyTorch's order, which is also the
order of ``F.unfold``'s patches). The INPUT axis is split into ``M = ceil(n / subvector)``
column blocks (the last zero-padded); in block ``m`` the ``out`` rows are the points that
k-means clusters into ``k`` codewords. Splitting the input axis is what makes Wu et al.'s
look-up inference possible: every output row uses the same input sub-vector of block ``m``, so
its inner products with the ``k`` codewords are computed once and looked up ``out`` times.

A quantized layer keeps its compact form through a ``torch.nn.utils.parametrize``
parametrization, ``ProductQuantized(codes, codebooks)``: ``weight = sum over stages of
codebooks[m, codes[:, m]]`` (one stage for PQ, several for RQ). ``apply()`` returns the model
NOT folded, because the codes + codebooks are the storage (``codec_hint`` gives them to the
codec format "pq": packed ceil(log2 k)-bit codes + fp32 codebooks, or fp16 ones when every
codeword is a float16 number (``codebook_dtype="float16"``); ``encode_pq``/``decode_pq``)
and the input of ``lut_forward``. k-means is scikit-learn's ``KMeans`` (k-means++, one init),
as the field uses it; run on one thread, it is fast for the small sub-spaces (300 points).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits
from torch import nn

from ..codec import CodecError, pack_bits, register_format, unpack_bits
from ..method import Method, clone_model
from ..train import Hook, Recipe, fit
from .core import quantizable_layers, quantize_weights

# ------------------------------------------------------------------ PQ and RQ on matrices


def subspaces(W: torch.Tensor, subvector: int) -> torch.Tensor:
    """(M, out, d): the rows of ``W`` (out x n) cut into column blocks of ``d`` (zero-padded)."""
    out, n = W.shape
    M = -(-n // subvector)
    padded = F.pad(W, (0, M * subvector - n))
    return padded.reshape(out, M, subvector).transpose(0, 1)


def kmeans(points: np.ndarray, k: int, seed: int, init=None) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, labels) of scikit-learn's KMeans; ``k`` is capped at the number of points."""
    k = min(k, len(points))
    km = KMeans(k, init="k-means++" if init is None else init, n_init=1, random_state=seed)
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)   # fewer distinct points than k
        km.fit(points)
    return km.cluster_centers_, km.labels_


def pq_codebooks(W: torch.Tensor, subvector: int, k: int, seed: int = 0):
    """Product quantization of a matrix: k-means in each sub-space (Gong et al. 2014).

    Returns codebooks (M, K, d) float32 and codes (out, M) int64, K = min(k, out).
    """
    blocks = subspaces(W.detach().double(), subvector).numpy()
    fitted = [kmeans(b, k, seed) for b in blocks]
    codebooks = torch.from_numpy(np.stack([c for c, _ in fitted])).float()
    codes = torch.from_numpy(np.stack([l for _, l in fitted], axis=1)).long()
    return codebooks, codes


def pq_reconstruct(codebooks: torch.Tensor, codes: torch.Tensor, n: int | None = None):
    """The (out, n) matrix the codes select: row t, block m is ``codebooks[m, codes[t, m]]``."""
    M = codebooks.shape[0]
    W = codebooks[torch.arange(M), codes]                 # (out, M, d)
    return W.reshape(codes.shape[0], -1)[:, :n]


def pq_assign(W: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """(out, M) index of the nearest codeword of every sub-vector of ``W``."""
    blocks = subspaces(W, codebooks.shape[2])             # (M, out, d)
    return torch.cdist(blocks, codebooks).argmin(2).t()


def rq_stages(W: torch.Tensor, subvector: int, k: int, stages: int, seed: int = 0):
    """Residual quantization (Gong et al. 2014): stage s runs PQ on what stages < s missed.

    Returns codebooks (S, M, K, d) and codes (S, out, M); ``subvector=n`` quantizes whole rows.
    """
    residual, books, codes = W.detach().float(), [], []
    for s in range(stages):
        cb, cd = pq_codebooks(residual, subvector, k, seed + s)
        residual = residual - pq_reconstruct(cb, cd, W.shape[1])
        books.append(cb)
        codes.append(cd)
    return torch.stack(books), torch.stack(codes)


def pq_weight(codebooks: torch.Tensor, codes: torch.Tensor, shape) -> torch.Tensor:
    """The layer weight of a (multi-stage) PQ: stages summed in order; one function for the
    model's forward and the decoder, so both give the same bits."""
    n = math.prod(shape[1:])
    W = pq_reconstruct(codebooks[0], codes[0], n)
    for s in range(1, codes.shape[0]):
        W = W + pq_reconstruct(codebooks[s], codes[s], n)
    return W.reshape(shape)


# ------------------------------------------------------------------ Q-CNN (Wu et al. 2016)

def qcnn_refine(X: torch.Tensor, T: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor,
                sweeps: int = 3, damping: float = 1e-3):
    """Minimize the OUTPUT error ``||T - X W_hat^T||`` over codebooks and codes (Wu et al.).

    ``X`` (N, n): sampled inputs of the layer; ``T`` (N, out): the outputs to reproduce. Block
    coordinate descent over the sub-spaces: with the other blocks fixed, block m must explain
    the residual ``R = T - sum_{m' != m} S_m' W_m'^T``; its codewords are the least-squares
    solution for the rows assigned to them, then each row takes the codeword of lowest output
    error, ``D_k' G D_k - 2 D_k' P_t`` with ``G = S'S``, ``P = S'R``. ``damping`` (relative to
    G's mean diagonal) pulls a codeword toward its old value where the samples say nothing
    (e.g. an input that is always zero), instead of leaving it undefined.
    """
    M, K, d = codebooks.shape
    S_all = subspaces(X.double(), d)                      # (M, N, d)
    D = codebooks.double().clone()
    codes = codes.clone()
    T = T.double()
    Wb = D[torch.arange(M), codes].transpose(0, 1)        # (M, out, d): current block weights
    Y = torch.einsum("mnd,mod->no", S_all, Wb)
    for _ in range(sweeps):
        for m in range(M):
            S = S_all[m]
            R = T - Y + S @ Wb[m].t()
            G, P = S.t() @ S, S.t() @ R                  # (d, d), (d, out)
            lam = damping * G.diagonal().mean() + 1e-12
            counts = torch.bincount(codes[:, m], minlength=K).double()
            summed = torch.zeros(K, d, dtype=torch.float64).index_add_(0, codes[:, m], P.t())
            A = counts[:, None, None] * G + lam * counts.clamp(min=1)[:, None, None] * \
                torch.eye(d, dtype=torch.float64)
            rhs = summed + lam * counts.clamp(min=1)[:, None] * D[m]
            D[m] = torch.where(counts[:, None] > 0, torch.linalg.solve(A, rhs), D[m])
            cost = ((D[m] @ G) * D[m]).sum(1)[:, None] - 2 * D[m] @ P    # (K, out)
            codes[:, m] = cost.argmin(0)
            new = D[m][codes[:, m]]
            Y += S @ (new - Wb[m]).t()
            Wb[m] = new
    return D.float(), codes


def lut_linear(x: torch.Tensor, codebooks: torch.Tensor, codes: torch.Tensor,
               counts: dict | None = None) -> torch.Tensor:
    """``x @ W_hat^T`` by table look-up (Wu et al. 2016): the inner product of each input
    sub-vector with every codeword of its sub-space (a table N x M x K), then each output
    sums the M entries its codes select. ``counts`` (if given) receives the multiplications
    and additions actually performed, counted from the tensors computed."""
    M, K, d = codebooks.shape
    xs = subspaces(x, d)                                  # (M, N, d)
    products = xs[:, :, None, :] * codebooks[:, None, :, :]    # (M, N, K, d): every product
    table = products.sum(3)                               # (M, N, K)
    picked = table[torch.arange(M)[:, None], :, codes.t()]     # (M, out, N)
    y = picked.sum(0).t()
    if counts is not None:
        counts["mult"] = counts.get("mult", 0) + products.numel()
        counts["add"] = counts.get("add", 0) + table.numel() * (d - 1) + y.numel() * (M - 1)
    return y


def lut_ops(batch: int, out: int, n: int, subvector: int, k: int) -> dict:
    """The formula: table ``N*M*K*d`` mult, ``N*M*K*(d-1) + N*out*(M-1)`` add, vs dense
    ``N*out*n`` mult (Wu et al.: ``C_s K`` products per input instead of ``C_s C_t``)."""
    M = -(-n // subvector)
    return {"mult": batch * M * k * subvector,
            "add": batch * M * k * (subvector - 1) + batch * out * (M - 1),
            "dense_mult": batch * out * n, "dense_add": batch * out * (n - 1)}


def lut_forward(module: nn.Module, x: torch.Tensor, counts: dict | None = None):
    """A PQ-parametrized Linear / Conv2d evaluated by table look-up (conv through im2col)."""
    p = module.parametrizations.weight[0]
    books, codes = p.codebooks.detach(), p.codes
    if codes.shape[0] != 1:
        raise ValueError("look-up inference is for one-stage PQ (Q-CNN), not RQ")
    if isinstance(module, nn.Linear):
        y = lut_linear(x.flatten(1), books[0], codes[0], counts)
    else:
        patches = F.unfold(x, module.kernel_size, module.dilation, module.padding,
                           module.stride)             # (B, n, L)
        B, n, L = patches.shape
        y = lut_linear(patches.transpose(1, 2).reshape(B * L, n), books[0], codes[0], counts)
        h = (x.shape[2] + 2 * module.padding[0] - module.dilation[0] * (module.kernel_size[0] - 1)
             - 1) // module.stride[0] + 1
        y = y.reshape(B, L, -1).transpose(1, 2).reshape(B, -1, h, L // h)
    if module.bias is not None:
        y = y + (module.bias.view(1, -1, 1, 1) if y.dim() == 4 else module.bias)
    return y


def is_product_quantized(module: nn.Module) -> bool:
    chain = getattr(module, "parametrizations", {})
    return "weight" in chain and isinstance(chain["weight"][0], ProductQuantized)


@torch.no_grad()
def lut_op_table(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Per PQ layer: multiplications and additions of look-up inference on batch ``x``,
    counted while ``lut_forward`` runs, beside the dense layer's; outputs checked equal."""
    rows, hooks = [], []

    def count(module, args, output, name):
        counts = {}
        y = lut_forward(module, args[0], counts)
        n = module.weight[0].numel()
        positions = y[0, 0].numel() if y.dim() == 4 else 1
        batch, out = args[0].shape[0] * positions, module.weight.shape[0]
        rows.append({"layer": name, "mult": counts["mult"], "add": counts["add"],
                     "dense_mult": batch * out * n, "dense_add": batch * out * (n - 1),
                     "max_abs_diff": (y - output).abs().max().item()})

    for name, module in quantizable_layers(model):
        if is_product_quantized(module):
            hooks.append(module.register_forward_hook(
                lambda m, a, o, name=name: count(m, a, o, name)))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return rows


# ------------------------------------------------------------------ PQ regularizer (Soulie)

def pq_penalty(W: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """``||W - Q(W)||^2``, Q(W) the nearest-codeword reconstruction, held constant: its
    gradient is ``2 (W - Q(W))``, a pull of each sub-vector toward its codeword."""
    target = pq_reconstruct(codebooks, pq_assign(W.detach(), codebooks), W.shape[1])
    return ((W - target.detach()) ** 2).sum()


def lloyd_update(W: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """One k-means step in every sub-space: codewords move to the mean of their sub-vectors
    (a codeword nobody uses stays)."""
    M, K, d = codebooks.shape
    blocks, codes = subspaces(W, d), pq_assign(W, codebooks)       # (M, out, d), (out, M)
    slot = (codes.t() + K * torch.arange(M)[:, None]).flatten()    # codeword id over all m
    sums = torch.zeros(M * K, d, dtype=W.dtype).index_add_(0, slot, blocks.reshape(-1, d))
    n = torch.bincount(slot, minlength=M * K)[:, None]
    new = torch.where(n > 0, sums / n.clamp(min=1), codebooks.reshape(-1, d))
    return new.reshape(M, K, d)


# ------------------------------------------------------------------ storage: format "pq"

class ProductQuantized(nn.Module):
    """weight = sum over stages of codebooks gathered by codes; the codebooks are trainable.

    The layer's own float weight is dropped (``right_inverse`` returns an empty tensor): the
    codes and codebooks are the whole layer, in the state dict and in the file.
    """

    def __init__(self, codes: torch.Tensor, codebooks: torch.Tensor, shape):
        super().__init__()
        self.register_buffer("codes", codes.to(torch.int64))          # (S, out, M)
        self.codebooks = nn.Parameter(codebooks.float().clone())      # (S, M, K, d)
        self.shape = tuple(shape)

    def forward(self, _empty: torch.Tensor) -> torch.Tensor:
        return pq_weight(self.codebooks, self.codes, self.shape)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.new_zeros(0)

    def codec_hint(self) -> dict:
        return dict(format="pq", codes=self.codes, codebooks=self.codebooks.detach())


def encode_pq(tensor: torch.Tensor, dtype: str | None = None, hint: dict | None = None
              ) -> tuple[bytes, dict]:
    """Packed codes (ceil(log2 K) bits each, LSB-first) + fp32 codebooks; checks that the
    decoder gives back ``tensor`` bit for bit. ``dtype`` is ignored: the codebooks stay fp32
    so the weight the model computes is stored exactly. ValueError: the hint does not fit."""
    if not hint or hint.get("format") != "pq":
        raise ValueError("format pq needs the hint of a ProductQuantized parametrization")
    codes, books = hint["codes"], hint["codebooks"].float().contiguous()
    S, M, K, d = books.shape
    bits = max(1, math.ceil(math.log2(K)))
    packed = pack_bits(codes.flatten().numpy(), bits)
    # Codewords that are all float16 numbers (PQ(codebook_dtype="float16")) take 2 bytes.
    half = torch.equal(books.half().float(), books)
    payload = packed + books.numpy().astype("<f2" if half else "<f4").tobytes()
    meta = {"stages": S, "subspaces": M, "k": K, "subvector": d, "rows": codes.shape[1],
            "code_bits": bits, "codes_nbytes": len(packed), "codebook_bytes": 2 if half else 4}
    back = decode_pq(payload, list(tensor.shape), str(tensor.dtype).removeprefix("torch."), meta)
    if not torch.equal(back, tensor.detach()):
        raise ValueError("format pq: the codes and codebooks do not give this tensor")
    return payload, meta


def decode_pq(payload: bytes, shape, dtype: str, meta: dict) -> torch.Tensor:
    S, M, K, d = meta["stages"], meta["subspaces"], meta["k"], meta["subvector"]
    head, count = meta["codes_nbytes"], S * meta["rows"] * M
    codes = torch.from_numpy(unpack_bits(payload[:head], meta["code_bits"], count)
                             .astype(np.int64)).reshape(S, meta["rows"], M)
    width = meta.get("codebook_bytes", 4)
    if len(payload) - head != width * S * M * K * d or (count and codes.max() >= K):
        raise CodecError(f"corrupt pq tensor: {len(payload)} bytes for {S}x{M}x{K}x{d} codebooks")
    books = torch.from_numpy(np.frombuffer(payload[head:], "<f2" if width == 2 else "<f4")
                             .astype(np.float32)).reshape(S, M, K, d)
    return pq_weight(books, codes, shape).to(getattr(torch, dtype))


def pq_bytes(out: int, n: int, subvector: int, k: int, stages: int = 1,
             codebook_bytes: int = 4) -> int:
    """Explanation only (the real bytes come from the file): codes + codebooks."""
    M, K = -(-n // subvector), min(k, out)
    bits = max(1, math.ceil(math.log2(K)))
    return -(-stages * out * M * bits // 8) + codebook_bytes * stages * M * K * subvector


def set_product_quantized(module: nn.Module, codebooks: torch.Tensor, codes: torch.Tensor):
    """Register ``ProductQuantized`` (codebooks (S, M, K, d), codes (S, out, M)) on a layer."""
    quantize_weights(module, lambda _, m: ProductQuantized(codes, codebooks, m.weight.shape),
                     layers=("",))


def _matrix(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().reshape(module.weight.shape[0], -1)


# ------------------------------------------------------------------ methods

@dataclass
class PQ(Method):
    """Product quantization of every Conv2d / Linear weight (Gong et al. 2014): k-means with
    ``k`` codewords in each sub-space of ``subvector`` columns; ``log2(k)/subvector`` bits of
    codes per weight plus the codebooks. Returned NOT folded (the codes are the storage)."""
    id = "quant.pq"
    reference = ("Gong, Liu, Yang, Bourdev 2014, Compressing Deep Convolutional Networks "
                 "using Vector Quantization")
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1)}
    # Our choice: the LeNets only. Each sub-space is one scikit-learn k-means call, thousands
    # on the CIFAR nets (minutes per apply); nothing else stops them.
    archs = ("lenet300", "lenet5")
    smoke = {"subvector": 25, "k": 4}

    subvector: int = 4
    k: int = 16
    codebook_dtype: str = "float32"   # "float16": codewords rounded to fp16, stored in 2 bytes
    seed: int = 0

    def validate(self):
        self._check_choice("codebook_dtype", ("float32", "float16"))
        self._check_int("subvector", 1, 1 << 16)
        self._check_int("k", 1, 1 << 16)
        self._check_int("seed", 0, 2**31 - 1)

    def bits_per_weight(self) -> float:
        """Code bits per weight (the codebooks come on top; the file says how much)."""
        return math.log2(self.k) / self.subvector

    def rounded(self, codebooks: torch.Tensor) -> torch.Tensor:
        """The codebooks in the storage precision chosen (fp16 values kept as float32)."""
        return codebooks.half().float() if self.codebook_dtype == "float16" else codebooks

    def quantize(self, W: torch.Tensor, seed: int):
        cb, cd = pq_codebooks(W, self.subvector, self.k, seed)
        return cb[None], cd[None]

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        out = clone_model(model)
        for i, (_, module) in enumerate(quantizable_layers(out)):
            books, codes = self.quantize(_matrix(module), self.seed + 7919 * i)
            set_product_quantized(module, self.rounded(books), codes)
        return out.eval()


@dataclass
class RQ(PQ):
    """Residual quantization (Gong et al. 2014): ``stages`` rounds of PQ, each on the residual
    the earlier ones left; the weight is the sum of the stages' codewords. ``subvector`` = the
    whole row (e.g. 10000) gives Gong et al.'s RQ of full vectors; smaller ones combine RQ with
    PQ. Returned NOT folded."""
    id = "quant.rq"
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1), "stages": (1, 4, 1)}
    smoke = {"subvector": 25, "k": 4, "stages": 2}

    stages: int = 2

    def validate(self):
        super().validate()
        self._check_int("stages", 1, 64)

    def bits_per_weight(self) -> float:
        return self.stages * math.log2(self.k) / self.subvector

    def quantize(self, W: torch.Tensor, seed: int):
        return rq_stages(W, self.subvector, self.k, self.stages, seed)


def layer_rows(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows that multiply ``W^T``: the flat input, or conv patches."""
    if isinstance(module, nn.Linear):
        return inputs.reshape(-1, inputs.shape[-1])
    patches = F.unfold(inputs, module.kernel_size, module.dilation, module.padding,
                       module.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


@torch.no_grad()
def captured_rows(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The rows ``layer_rows`` of layer ``name`` when ``model`` runs on ``x``."""
    module, seen = model.get_submodule(name), []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return layer_rows(module, seen[0])


@dataclass
class QCNN(PQ):
    """Quantized CNN (Wu et al. 2016): PQ of each layer, then codebooks and codes refined to
    reproduce the layer's OUTPUT on ``samples`` sampled input rows (``qcnn_refine``).

    ``correction="accumulated"`` (Wu et al.'s multi-layer error correction): layers are done in
    order; a layer's inputs come from the network whose earlier layers are already quantized,
    its targets from the original network, so each layer also corrects the error let in
    before it. ``"layer"``: inputs and targets both from the original network. Inference by
    table look-up: ``lut_forward`` / ``lut_op_table``. Returned NOT folded.

    Our choices: start from plain PQ (k-means on the weights), ``sweeps`` passes over the
    sub-spaces, inputs from ``images`` training images (a conv layer's rows are its im2col
    patches, so its sub-vectors run over (in, kh, kw) rather than over input channels at one
    position as in Wu et al.), biases unchanged. Measured on LeNet-300-100, subvector 8, k 16:
    97.29 % (plain PQ) -> 97.96 % ("layer") -> 98.12 % ("accumulated").
    """
    id = "quant.qcnn"
    reference = ("Wu, Leng, Wang, Hu, Cheng 2016, Quantized Convolutional Neural Networks "
                 "for Mobile Devices")
    needs_data = True
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1), "sweeps": (0, 10, 1)}
    smoke = {"subvector": 25, "k": 4, "sweeps": 1, "images": 64, "samples": 256}

    correction: str = "accumulated"     # "accumulated" | "layer"
    sweeps: int = 3                     # passes of block coordinate descent per layer
    images: int = 1000                  # training images run through the networks
    samples: int = 4000                 # input rows (patches for a conv) per layer
    damping: float = 1e-3

    def validate(self):
        super().validate()
        self._check_choice("correction", ("accumulated", "layer"))
        self._check_int("sweeps", 0, 1000)
        self._check_int("images", 1, 60000)
        self._check_int("samples", 1, 1 << 24)
        self._check_range("damping", 0.0, 1e6)

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError("QCNN needs data: training images to sample layer inputs from")
        original, out = clone_model(model).eval(), clone_model(model).eval()
        x = data.subset(min(self.images, len(data)), seed=self.seed).tensors()[0]
        g = torch.Generator().manual_seed(self.seed)
        for i, (name, module) in enumerate(quantizable_layers(out)):
            W = _matrix(module)
            inputs = captured_rows(original, name, x)
            pick = torch.randperm(len(inputs), generator=g)[:self.samples]
            target = inputs[pick] @ W.t()
            if self.correction == "accumulated":
                inputs = captured_rows(out, name, x)
            books, codes = pq_codebooks(W, self.subvector, self.k, self.seed + 7919 * i)
            books, codes = qcnn_refine(inputs[pick], target, books, codes, self.sweeps,
                                       self.damping)
            set_product_quantized(module, self.rounded(books)[None], codes[None])
        return out.eval()


class PQPull(Hook):
    """Soulie et al.'s regularizer: ``strength * sum_layers ||W - Q(W)||^2`` added to the loss;
    after every step each layer's codebooks take one k-means (Lloyd) step on its weights."""

    def __init__(self, codebooks: dict, strength: float):
        self.codebooks, self.strength = codebooks, strength

    def loss(self, model, x, y, logits, loss):
        for name, books in self.codebooks.items():
            W = model.get_submodule(name).weight
            loss = loss + self.strength * pq_penalty(W.reshape(W.shape[0], -1), books)
        return loss

    def after_step(self, model):
        for name, books in self.codebooks.items():
            self.codebooks[name] = lloyd_update(_matrix(model.get_submodule(name)), books)


@dataclass
class PQReg(PQ):
    """PQ learned while training (Soulie et al. 2016): k-means codebooks to start, then
    ``epochs`` of training with the pull toward the nearest codeword (``PQPull``; codebooks
    follow the weights by a Lloyd step after every SGD step), then every sub-vector is
    snapped to its nearest codeword. Our choices where the paper is not in our sources: the
    codeword target is held constant in the gradient (``2 strength (W - Q(W))``), the codebooks
    follow by one Lloyd step per SGD step, no L2 weight decay. Returned NOT folded."""
    id = "quant.pq_reg"
    reference = ("Soulie, Gripon, Robert 2016, Compression of Deep Neural Networks on the Fly")
    needs_data = True
    progress: ClassVar[bool] = True
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1), "strength": (0.0, 2.0, 0.01),
               "epochs": (1, 10, 1)}
    smoke = {"subvector": 25, "k": 4, "epochs": 1}

    # On LeNet-300-100 (subvector 8, k 16, 3 epochs), after the snap: 97.25 % at 0 (train,
    # then snap), 97.61 % at 0.01, 98.21 % at 0.1, 98.32 % at 1; the penalty sums all weights.
    strength: float = 1.0
    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 128

    def validate(self):
        super().validate()
        self._check_range("strength", 0.0, 1e6)
        self._check_range("lr", 1e-8, 10.0)
        self._check_int("epochs", 0, 1000)
        self._check_int("batch_size", 1, 1 << 16)

    def apply(self, model: nn.Module, data=None) -> nn.Module:
        if data is None:
            raise ValueError("PQReg needs data: the training set to train on")
        out = clone_model(model)
        books = {name: pq_codebooks(_matrix(m), self.subvector, self.k, self.seed + 7919 * i)[0]
                 for i, (name, m) in enumerate(quantizable_layers(out))}
        pull = PQPull(books, self.strength)
        fit(out, data, Recipe(epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                              weight_decay=0.0, schedule="cosine", seed=self.seed),
            hooks=[pull], progress=self.progress)
        for name, module in quantizable_layers(out):
            cb = self.rounded(pull.codebooks[name])
            set_product_quantized(module, cb[None], pq_assign(_matrix(module), cb)[None])
        return out.eval()


# The file format of a PQ layer, tried for tensors whose parametrization hints "pq".
register_format("pq", encode_pq, decode_pq, hinted=True)

METHODS = (PQ, RQ, QCNN, PQReg)
