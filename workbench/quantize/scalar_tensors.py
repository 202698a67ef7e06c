"""Scalar number formats on tensors: the fixed-point grid Qm.n (Gupta et al. 2015), rounding
to fp16 / bf16, and Lin et al.'s (2016) bit allocation under a size budget. The methods that
put whole networks in these formats, and the theory, are in ``scalar``."""
from __future__ import annotations

import math

import torch

# ------------------------------------------------------------------ fixed point

ROUNDINGS = ("nearest", "stochastic")


def fixed_point_range(word: int, frac: int) -> tuple[float, float, float]:
    """(lowest, highest, step) of Q(word, frac): two's complement integers times 2**-frac."""
    step = 2.0 ** -frac
    return -(2 ** (word - 1)) * step, (2 ** (word - 1) - 1) * step, step


def fixed_point(x: torch.Tensor, word: int, frac: int, rounding: str = "nearest",
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` rounded to the ``word``-bit fixed-point grid with ``frac`` fraction bits.

    Values beyond the range saturate to its ends (Gupta et al.'s Convert). Division and
    multiplication by a power of two are exact in floating point, so the result is exactly a
    grid point.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r}; allowed: {', '.join(ROUNDINGS)}")
    scaled = x / 2.0 ** -frac
    if rounding == "nearest":
        k = torch.floor(scaled + 0.5)
    else:   # floor(s + u), u ~ U[0, 1): up with probability s - floor(s), hence unbiased
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        k = torch.floor(scaled + u)
    k = k.clamp(-(2 ** (word - 1)), 2 ** (word - 1) - 1)
    return k * 2.0 ** -frac


def fixed_point_ste(x, word, frac, rounding="nearest", generator=None):
    """Forward: ``fixed_point``; backward: identity (straight-through)."""
    return x + (fixed_point(x.detach(), word, frac, rounding, generator) - x).detach()


def best_frac(w: torch.Tensor, word: int) -> int:
    """The fraction length with the smallest squared rounding error (nearest) for ``w``.

    Starts from the largest fraction that does not saturate the largest |w| and tries up to
    six more bits (saturating a few outliers can pay for a finer step).
    """
    top = w.abs().max().item()
    if top == 0:
        return word - 1
    start = word - 1 - math.floor(math.log2(top)) - 1
    errors = {f: (fixed_point(w, word, f) - w).pow(2).sum().item() for f in range(start, start + 7)}
    return min(errors, key=errors.get)


# ------------------------------------------------------------------ fp16 / bf16

HALF_TYPES = ("float16", "bfloat16")


def round_to(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """``x`` rounded to fp16 / bf16 (torch's cast: round to nearest even) and back to fp32."""
    return x.to(getattr(torch, dtype)).to(x.dtype)


# ------------------------------------------------------------------ bit allocation

KAPPA = 6.02      # dB of SQNR per bit of a uniform quantizer (Lin et al.)


def sqnr_bits(sizes: list[int], budget: float, kappa: float = KAPPA) -> list[float]:
    """Lin et al.'s optimal (real-valued) bit-widths: ``b_i - b_j = 10 log10(n_j/n_i)/kappa``
    with ``sum n_i b_i = budget * sum n_i``."""
    offsets = [-10 * math.log10(n) / kappa for n in sizes]
    total = sum(sizes)
    c = budget - sum(n * o for n, o in zip(sizes, offsets)) / total
    return [c + o for o in offsets]


def sqnr_noise(bits: int, kappa: float = KAPPA) -> float:
    """Lin et al.'s noise model: 1 / SQNR of a ``bits``-bit quantizer, up to a constant."""
    return 10 ** (-kappa * bits / 10)


def allocate_bits(sizes: list[int], noise, budget: float, low: int = 2, high: int = 8
                  ) -> list[int]:
    """Integer bit-widths with ``sum n_i b_i <= budget * sum n_i`` minimizing ``sum_i
    noise(i, b_i)``, exactly.

    Lin et al.'s closed form is the continuous relaxation; rounding it can waste much of the
    budget when one large layer cannot afford its next bit, so the integer problem (a small
    knapsack) is solved by dynamic programming over the layers, keeping only the (size, noise)
    pairs that no other partial allocation beats on both.
    """
    cap = budget * sum(sizes) + 1e-9
    if low * sum(sizes) > cap:
        raise ValueError(f"budget {budget} bits per weight is below the minimum {low}")
    front = [(0, 0.0, ())]                       # (size so far, noise so far, bits so far)
    for i, n in enumerate(sizes):
        rest = low * sum(sizes[i + 1:])           # the layers after still need `low` bits
        options = sorted((c + n * b, e + noise(i, b), bits + (b,)) for c, e, bits in front
                         for b in range(low, high + 1) if c + n * b + rest <= cap)
        front, best = [], math.inf
        for option in options:                    # cheapest first: keep strict improvements
            if option[1] < best:
                front.append(option)
                best = option[1]
    return list(min(front, key=lambda t: (t[1], t[0]))[2])


def quantize_layer(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` in ``bits``-bit fixed point, fraction length chosen for the smallest error."""
    return fixed_point(w, bits, best_frac(w, bits))
