"""A product-quantized layer: the ``ProductQuantized`` parametrization (codes + codebooks are
the layer), its file format "pq" (packed codes + fp32 or fp16 codebooks; registered with the
codec by ``product``), and inference by table look-up (Wu et al. 2016) with its operation
counts."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..codec import CodecError, pack_bits, unpack_bits
from ..hooks import hooked
from .core import quantizable_layers, quantize_weights
from .product_tensors import pq_weight, subspaces

# ------------------------------------------------------------------ the layer and its format

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


# ------------------------------------------------------------------ look-up inference (Wu et al.)

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
    rows = []

    def count(module, args, output, name):
        counts = {}
        y = lut_forward(module, args[0], counts)
        n = module.weight[0].numel()
        positions = y[0, 0].numel() if y.dim() == 4 else 1
        batch, out = args[0].shape[0] * positions, module.weight.shape[0]
        rows.append({"layer": name, "mult": counts["mult"], "add": counts["add"],
                     "dense_mult": batch * out * n, "dense_add": batch * out * (n - 1),
                     "max_abs_diff": (y - output).abs().max().item()})

    layers = {name: count for name, module in quantizable_layers(model)
              if is_product_quantized(module)}
    with hooked(model, layers):
        model(x)
    return rows
