"""``python -m workbench bench binary_size``: the real files of binary and ternary networks.

Targets (issue 10): a binary LeNet-300-100 file <= 1/25 of the dense file (1/32 of the weights,
plus the scales, the float biases and the header). ``dense_bytes`` is the fp32 file of the zoo
checkpoint, every tensor in the dense format (``codec.encode(base, formats=("dense",),
dtype="float32")``); ``bytes`` is ``len(codec.encode(model))``, the file a user ships.

The binary LeNet-300-100 is the checkpoint with every weight replaced by ``a_c sign(w)``
(``binary.core.binarize``, least-squares scale per output channel, every layer, the first and
last included; biases float); the ternary LeNet-5 has every Conv2d / Linear weight ternarized
by TWN's rule (``binary.ternary.twn_ternarize``: per layer, Delta = 0.7 E|W|, scale the mean
|W| above it; biases float). No training: the size of the file does not depend on it (the
accuracy of trained binary and ternary networks is in the other ``binary_*`` benches).

Then bytes per weight of each format on one real layer (LeNet-300-100's 300 x 784 ``net.1``):
the payload of the tensor, scales included, header entry not. Smoke mode computes the same
files (no training is involved, the figures are the full ones) and the bytes per weight on
the 300 x 100 ``net.3`` without the M-bases rows. Network sketching's M binary tensors per
output filter (``binary.bases.sketch_filters``, refined) are stored by ``row_codebook``: M bits
per weight plus each row's 2^M values, against log2(rows 2^M) bits in the per-layer codebook.
"""
from __future__ import annotations

import time

import torch
from torch import nn

XNOR = "XNOR-Net (Rastegari et al. 2016): binary weights ~32x smaller than float"
TWN = "TWN (Li et al. 2016): ternary weights 16x smaller than float (2 bits)"


def _weights(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def file_row(name: str, arch: str, make, target_ratio: float | None, paper: str) -> dict:
    from .. import codec, zoo
    start = time.perf_counter()
    base = zoo.pretrained(arch)
    dense = len(codec.encode(base, formats=("dense",), dtype="float32"))
    model = zoo.pretrained(arch)
    for m in _weights(model):
        m.weight.copy_(make(m.weight))
    blob = codec.encode(model)
    header = codec.read_header(blob)
    formats = sorted({t["format"] for t in header["tensors"] if t["name"].endswith("weight")})
    back = codec.decode(blob)
    exact = all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    ratio = dense / len(blob)
    weights = sum(m.weight.numel() for m in _weights(model))
    return {"figure": name, "model": arch, "dense_bytes": dense, "bytes": len(blob),
            "x_smaller": round(ratio, 2), "bits_per_weight": round(8 * len(blob) / weights, 3),
            "weight_formats": formats, "round_trip_exact": exact,
            "target": f">= {target_ratio}x smaller" if target_ratio else "-",
            "met": (ratio >= target_ratio and exact) if target_ratio else None,
            "paper": paper, "wall_s": round(time.perf_counter() - start, 2)}


def residual_bases(w: torch.Tensor, m: int) -> torch.Tensor:
    """Sum of M greedy binary bases with per-layer scales (at most 2^M distinct values)."""
    from ..binary.core import sign
    residual, approx = w.clone(), torch.zeros_like(w)
    for _ in range(m):
        b, a = sign(residual), residual.abs().mean()
        approx, residual = approx + a * b, residual - a * b
    return approx


@torch.no_grad()
def format_rows(smoke: bool) -> list[dict]:
    from .. import codec, zoo
    from ..binary.bases import sketch_filters
    from ..binary.core import binarize
    from ..binary.ternary import twn_ternarize
    layer = "net.3" if smoke else "net.1"       # smoke: the 300 x 100 layer, a tenth the size
    w = zoo.pretrained("lenet300").get_submodule(layer).weight.detach().clone()
    per_channel_twn = torch.cat([twn_ternarize(row.unsqueeze(0)) for row in w])
    cases = [("float32 weights", w, ("dense",), "dtype float32"),
             ("binary, one scale per layer", binarize(w, False), None, ""),
             ("binary, one scale per channel", binarize(w, True), None, ""),
             ("the same in a codebook", binarize(w, True), ("codebook",), "2C values"),
             ("ternary TWN, per layer", twn_ternarize(w), None, ""),
             ("ternary TWN, per channel", per_channel_twn, None, ""),
             ("the same in a codebook", per_channel_twn, ("codebook",), "2C + 1 values")]
    if not smoke:
        cases += [(f"{m} binary bases, per-layer scales", residual_bases(w, m), None,
                   "ABC-Net form") for m in (2, 3, 4)]
    for m in ((2, 3) if smoke else (2, 3, 4)):     # network sketching: M tensors per filter
        sketch = sketch_filters(w, m, refined=True)[0]
        cases += [(f"sketch, {m} binary tensors per filter", sketch, None,
                   "row_codebook: M bits + 2^M values per row"),
                  ("the same in a codebook", sketch, ("codebook",), "per-layer codebook")]
    out = []
    for label, tensor, formats, note in cases:
        payload, entry = codec.encode_tensor(tensor, formats,
                                             dtype="float32" if formats == ("dense",) else None)
        row = {"figure": "bytes per weight", "model": f"lenet300 {layer}", "weights": label,
               "format": entry["format"], "distinct_values": len(torch.unique(tensor)),
               "payload_bytes": len(payload),
               "bits_per_weight": round(8 * len(payload) / tensor.numel(), 3),
               "bytes_per_weight": round(len(payload) / tensor.numel(), 4), "note": note}
        if entry["format"] == "ternary":    # the 2-bit packing beside base 3 (the smaller wins)
            row["two_bit_bytes"] = -(-tensor.numel() * 2 // 8) + entry["scale_nbytes"]
        out.append(row)
    return out


def rows(smoke: bool = False) -> list[dict]:
    from ..binary.core import binarize
    from ..binary.ternary import twn_ternarize
    out = [file_row("binary LeNet-300-100 file", "lenet300",
                    lambda w: binarize(w, per_channel=True), 25, XNOR),
           file_row("ternary LeNet-5 file", "lenet5", twn_ternarize, None, TWN),
           *format_rows(smoke)]
    for row in out:
        row["setting"] = "smoke" if smoke else "full"
    return out
