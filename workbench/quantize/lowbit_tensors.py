"""Functions on tensors of the low-bit STE quantizers (DoReFa, LSQ / PACT, SYQ): the
quantizers themselves, their straight-through gradients and initial scales. The layers and
methods that use them, and the papers' details, are in ``lowbit``."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .core import round_ste

def ste(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``value`` forward, identity gradient to ``x`` backward (exact: value + 0, not x + (v-x))."""
    return value.detach() + (x - x.detach())


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """``x`` forward, gradient multiplied by ``g`` backward (LSQ's gradient scale)."""
    return (x - x * g).detach() + x * g


def quantize_unit(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's quantize_k: x in [0, 1] to the nearest of 2^k levels i / (2^k - 1), STE."""
    n = 2 ** bits - 1
    return round_ste(x * n) / n


def dorefa_weights(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa-Net eq. 9: ``2 quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1``.

    The max is not detached (as in the authors' tensorpack code), so its gradient flows too.
    1 bit: ``sign(w) * mean|w|`` with the mean held constant (DoReFa-Net, section 2.2).
    """
    if bits == 1:
        scale = w.abs().mean().detach()
        return ste(torch.where(w >= 0, 1.0, -1.0).to(w.dtype), w / scale) * scale
    t = torch.tanh(w)
    x = t / (2 * t.abs().max()) + 0.5
    return 2 * quantize_unit(x, bits) - 1


def dorefa_activations(x: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa's activation quantizer: clip to [0, 1] (gradient 0 outside), then k bits."""
    return quantize_unit(torch.clamp(x, 0.0, 1.0), bits)


def lsq_range(bits: int, signed: bool) -> tuple[int, int]:
    """(Qn, Qp): the integer codes run from -Qn to Qp."""
    return (2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def lsq_init(v: torch.Tensor, qp: int) -> torch.Tensor:
    """LSQ's initial step ``2 mean|v| / sqrt(Qp)``."""
    return 2 * v.detach().abs().mean() / math.sqrt(qp)


def lsq_quantize(v: torch.Tensor, step: torch.Tensor, qn: int, qp: int, g: float) -> torch.Tensor:
    """LSQ eq. 1-2: ``round(clip(v / s, -Qn, Qp)) * s``, STE through the rounding, the step's
    gradient scaled by ``g``. Autograd then gives the step exactly eq. 3 (see lsq_step_gradient)."""
    s = grad_scale(step, g)
    return round_ste(torch.clamp(v / s, -qn, qp)) * s


def lsq_step_gradient(v: torch.Tensor, step: float, qn: int, qp: int) -> torch.Tensor:
    """LSQ eq. 3, d v_hat / d s per element: -v/s + round(v/s) inside, -Qn / Qp when clipped."""
    u = v / step
    return torch.where(u <= -qn, float(-qn), torch.where(u >= qp, float(qp), -u + u.round()))


def pact_activations(x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT eq. 1-3: y = clip(x, 0, alpha), k-bit with the STE over the whole rounding, so that
    d y_q / d alpha = 1 where x >= alpha and 0 elsewhere (the paper's gradient)."""
    y = torch.where(x >= alpha, alpha, F.relu(x))
    n = 2 ** bits - 1
    return ste(torch.round(y * n / alpha) * alpha / n, y)


def group_shape(weight: torch.Tensor, group: str) -> tuple[int, ...]:
    """Shape of SYQ's scale tensor (broadcast over the weight): pixel (1,1,K,K), row (1,1,K,1);
    a fully connected layer, or ``layer``, has one scale."""
    if weight.dim() != 4 or group == "layer":
        return (1,) * weight.dim()
    k_h, k_w = weight.shape[2:]
    return (1, 1, k_h, k_w) if group == "pixel" else (1, 1, k_h, 1)


def symmetric_codes(w: torch.Tensor, ternary: bool, eta: float) -> torch.Tensor:
    """SYQ's codes: sign(w), and 0 where |w| <= eta * max|w| when ternary."""
    sign = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
    if not ternary:
        return sign
    return sign * (w.abs() > eta * w.detach().abs().max()).to(w.dtype)


def symmetric_quantize(w: torch.Tensor, scale: torch.Tensor, ternary: bool, eta: float
                       ) -> torch.Tensor:
    """Q(w) = a_group * code, exactly; gradients as the authors' code: d/dw = a (1 in the zero
    band), d/da = sum of dE/dQ * code over the group."""
    codes = symmetric_codes(w.detach(), ternary, eta)
    multiplier = torch.where(codes != 0, scale.expand_as(w), torch.ones_like(w))
    return ste(codes, w) * multiplier


def symmetric_init(w: torch.Tensor, ternary: bool, eta: float, group: str) -> torch.Tensor:
    """Initial scales: mean |w| of each group's nonzero codes (the least-squares scale for
    the codes; our choice, the paper loads scales from a file)."""
    codes = symmetric_codes(w.detach(), ternary, eta).abs()
    dims = [d for d, n in enumerate(group_shape(w, group)) if n == 1]
    total = (w.detach().abs() * codes).sum(dims, keepdim=True)
    return total / codes.sum(dims, keepdim=True).clamp(min=1)
