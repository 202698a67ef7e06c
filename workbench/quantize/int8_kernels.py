"""Integer inference from scratch, in torch integer tensors (Jacob et al. 2018).

``int8_linear`` / ``int8_conv2d`` accumulate (q_x - Z_x)(q_w - Z_w) in int32 (eq. 7), add the
int32 bias quantized with scale S_x * S_w (sec. 2.4), and ``requantize`` scales the
accumulators by the fixed-point multiplier M = S_x S_w / S_y = M0 * 2^-n, M0 an int32 in
[2^30, 2^31) (sec. 2.2), rounding as gemmlowp does. These are the exact sums: what a runtime
computes too, as long as its kernel does not saturate (see ``pair_sum_bound``).

``quant.int8`` (``workbench.quantize.int8``) re-exports every function here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACT_MIN, ACT_MAX = 0, 255                      # uint8 activations
INT16_MAX = 2 ** 15 - 1


def _per_channel(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def pair_sum_bound(qmin: int, qmax: int, act_max: int = ACT_MAX) -> int:
    """The largest |q_x,k q_w,k + q_x,k+1 q_w,k+1| of uint8 activations in [0, act_max] and
    weights in [qmin, qmax]: what x86's ``vpmaddubsw`` (AVX2 / AVX-512 without VNNI) sums into
    ONE int16, saturating at 32767. ONNX Runtime's u8 x s8 kernels use it on such CPUs, so their
    int32 sums are exact only if this bound is at most ``INT16_MAX``: 2 * 255 * 127 = 64,770 for
    full 8-bit weights, 2 * 255 * 64 = 32,640 for the reduced range [-64, 64]."""
    return 2 * act_max * max(abs(qmin), abs(qmax))


def quantize_tensor(x: torch.Tensor, scale, zero_point, qmin: int = ACT_MIN,
                    qmax: int = ACT_MAX, axis: int | None = None) -> torch.Tensor:
    """q = clamp(round(x / scale) + Z, qmin, qmax) as an int32 tensor (round half to even,
    as ONNX QuantizeLinear); ``axis`` for a scale per slice along that dimension."""
    scale, zero_point = torch.as_tensor(scale), torch.as_tensor(zero_point)
    if axis is not None:
        shape = [1] * x.dim()
        shape[axis] = -1
        scale, zero_point = scale.view(shape), zero_point.view(shape)
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax).to(torch.int32)


def quantize_multiplier(m) -> tuple[torch.Tensor, torch.Tensor]:
    """M = M0 * 2^-shift with M0 an int32 in [2^30, 2^31) (Jacob et al. sec. 2.2): returns
    (M0, shift) as int64 tensors, one per element of ``m`` (0 < M < 1 in practice)."""
    m = torch.as_tensor(m, dtype=torch.float64)
    mantissa, exponent = torch.frexp(m)                 # m = mantissa * 2^exponent, in [0.5, 1)
    m0 = torch.round(mantissa * 2 ** 31).to(torch.int64)
    carry = m0 == 2 ** 31                               # mantissa rounded up to 1.0
    m0 = torch.where(carry, m0 // 2, m0)
    return m0, (-exponent.to(torch.int64) - carry.to(torch.int64))


def requantize(acc: torch.Tensor, m0: torch.Tensor, shift: torch.Tensor, zero_point: int,
               qmin: int = ACT_MIN, qmax: int = ACT_MAX, axis: int = 1) -> torch.Tensor:
    """int32 accumulators -> int8/uint8 outputs: round(acc * M0 / 2^31) (gemmlowp's
    SaturatingRoundingDoublingHighMul), then a rounding right shift by ``shift`` (half away
    from zero, RoundingDivideByPOT), plus the output zero point, clamped. ``m0`` / ``shift``
    per output channel along ``axis`` or scalars. Only integer operations."""
    shape = [1] * acc.dim()
    shape[axis] = -1
    m0, shift = (t.view(shape) if t.dim() else t for t in (m0, shift))
    # M >= 1 (rare: an output range narrower than the product's) shifts left first.
    product = (acc.to(torch.int64) << torch.clamp(-shift, min=0)) * m0
    nudge = torch.where(product >= 0, 1 << 30, 1 - (1 << 30))
    high = torch.div(product + nudge, 1 << 31, rounding_mode="trunc")
    shift = torch.clamp(shift, min=0)
    mask = (torch.ones_like(shift) << shift) - 1
    threshold = (mask >> 1) + (high < 0).to(torch.int64)
    out = (high >> shift) + ((high & mask) > threshold).to(torch.int64)
    return torch.clamp(out + zero_point, qmin, qmax).to(torch.int32)


def int8_linear(xq, x_zp, wq, w_zp, bias_q=None) -> torch.Tensor:
    """int32 accumulators of a Linear layer: sum_k (xq - Z_x)(wq - Z_w) (+ int32 bias)."""
    acc = (xq.to(torch.int32) - x_zp) @ (wq.to(torch.int32) - _per_channel(
        torch.as_tensor(w_zp, dtype=torch.int32).expand(wq.shape[0]), wq)).t()
    return acc if bias_q is None else acc + bias_q.to(torch.int32)


def int8_conv2d(xq, x_zp, wq, w_zp, bias_q=None, stride=1, padding=0) -> torch.Tensor:
    """int32 accumulators of a Conv2d (groups=1): im2col on integers, then ``int8_linear``.
    Padding uses the input zero point: the quantized value of a real 0."""
    stride, padding = nn.modules.utils._pair(stride), nn.modules.utils._pair(padding)
    kh, kw = wq.shape[2:]
    x = F.pad(xq.to(torch.int32) - x_zp, (padding[1], padding[1], padding[0], padding[0]))
    patches = x.unfold(2, kh, stride[0]).unfold(3, kw, stride[1])   # N, C, OH, OW, kh, kw
    n, c, oh, ow = patches.shape[:4]
    columns = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    acc = int8_linear(columns, 0, wq.reshape(wq.shape[0], -1), w_zp, bias_q)
    return acc.view(n, oh, ow, -1).permute(0, 3, 1, 2)


def quantize_bias(bias: torch.Tensor, x_scale: float, w_scale: torch.Tensor) -> torch.Tensor:
    """int32 bias with scale S_x * S_w and zero point 0 (Jacob et al. sec. 2.4)."""
    return torch.round(bias.double() / (x_scale * w_scale.double())).to(torch.int32)
