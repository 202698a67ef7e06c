"""Power-of-two weights: logarithmic quantization (Miyashita et al. 2016; Lee et al. 2017) and
Incremental Network Quantization (Zhou et al. 2017).

A weight ``+-2**e`` turns each multiplication ``x * w`` into a shift of ``x`` by ``e`` bits
and a sign: ``shift_matmul`` computes a layer that way on integer inputs, and
``operation_counts`` counts the shifts that replace a layer's multiplications.

``bits`` counts the sign: ``bits - 1`` bits code the magnitude, one code for zero and
``2**(bits-1) - 1`` exponents, the window ``[fsr - 2**(bits-1) + 1, fsr - 1]`` below the
full-scale range ``fsr`` (Miyashita et al.'s ``Clip(Round(log2|x|), FSR - 2**bitwidth, FSR)``,
whose exponents at or below the lower end become zero and at or above FSR saturate to
``FSR - 1``). ``fsr=None`` takes it from each layer's largest weight so that weight is not
clipped.

Rounding (``domain``): ``"log"`` rounds ``log2|w|`` (Miyashita et al.): ``|w|`` goes up to
``2**(e+1)`` from ``sqrt(2) * 2**e`` on, the geometric midpoint, which is what a log-domain
datapath computes (exponent plus one mantissa compare) and keeps the *relative* error below
``sqrt(2)``. ``"linear"`` rounds ``|w|`` to the nearest level, up from ``1.5 * 2**e`` (INQ's
rule, eq. 4): the smallest absolute error. Both are measured in bench / the reply; INQ uses
linear, as its paper states.

INQ (Zhou et al. 2017): per layer, ``n1 = floor(log2(4 s / 3))`` with ``s = max|W|`` and
``n2 = n1 + 1 - 2**(bits-1) / 2`` fix the levels ``{0, +-2**n2 .. +-2**n1}``. Rounds quantize
the largest-magnitude share of the weights (50 %, 75 %, 87.5 %, 100 %), each round followed by
retraining the not-yet-quantized weights. The layer weight is a ``parametrize``
parametrization ``where(frozen, levels, w)``: autograd gives frozen entries zero gradient
(INQ's gradient mask) and their value cannot move, whatever the optimizer's momentum or weight
decay do to the unused float entries underneath.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..method import (Choice, Int, Method, Optional, Real, Seq, Tags, TrainingMethod,
                      derived_seed, knob)
from .core import fold, quantizable_layers, quantize_weights

DOMAINS = ("log", "linear")
_UP_FROM = {"log": math.sqrt(2.0), "linear": 1.5}   # mantissa in [1, 2) at which to round up


def round_exponent(magnitude: torch.Tensor, domain: str = "log") -> torch.Tensor:
    """The exponent ``e`` of the power of two nearest to ``magnitude > 0`` (``log`` or
    ``linear`` domain), computed exactly from the float's own mantissa and exponent."""
    mantissa, exponent = torch.frexp(magnitude)          # magnitude = mantissa * 2**exponent
    floor_e = exponent - 1                                # mantissa in [0.5, 1)
    return floor_e + (2 * mantissa >= _UP_FROM[domain]).to(exponent.dtype)


def exponent_window(fsr: int, bits: int) -> tuple[int, int]:
    """(lowest, highest) exponent of ``bits``-bit signed log quantization below ``fsr``."""
    return fsr - 2 ** (bits - 1) + 1, fsr - 1


def layer_fsr(w: torch.Tensor, domain: str = "log") -> int:
    """The full-scale range that keeps the layer's largest |w| unclipped."""
    top = w.abs().max()
    return int(round_exponent(top.reshape(1), domain)) + 1 if top > 0 else 0


def pow2_round(w: torch.Tensor, low: int, high: int, domain: str = "log") -> torch.Tensor:
    """Each entry of ``w`` to 0 or ``+-2**e`` with ``low <= e <= high``: the exponent rounded
    in ``domain``, saturated at ``high``; zero when it rounds below ``low`` (log domain:
    Miyashita's clip) or when |w| is nearer 0 than ``2**low`` (linear domain: INQ)."""
    if domain not in DOMAINS:
        raise ValueError(f"domain={domain!r}; allowed: {', '.join(DOMAINS)}")
    magnitude = w.abs()
    nonzero = magnitude > 0
    e = round_exponent(torch.where(nonzero, magnitude, torch.ones_like(w)), domain)
    if domain == "log":
        keep = nonzero & (e >= low)
    else:
        keep = nonzero & (magnitude >= 2.0 ** (low - 1))
    e = e.clamp(low, high)
    return torch.where(keep, torch.sign(w) * torch.ldexp(torch.ones_like(w), e),
                       torch.zeros_like(w))


def log_quantize(w: torch.Tensor, bits: int, fsr: int | None = None, domain: str = "log"
                 ) -> torch.Tensor:
    """``w`` with every entry 0 or ``+-2**e``, ``e`` in ``exponent_window(fsr, bits)``."""
    fsr = layer_fsr(w, domain) if fsr is None else fsr
    return pow2_round(w, *exponent_window(fsr, bits), domain)


def inq_levels(w: torch.Tensor, bits: int) -> tuple[int, int]:
    """INQ's (n1, n2): ``n1 = floor(log2(4 s / 3))``, ``n2 = n1 + 1 - 2**(bits-1) / 2``."""
    s = w.abs().max().item()
    n1 = math.floor(math.log2(4 * s / 3))
    return n1, n1 + 1 - 2 ** (bits - 1) // 2


def inq_quantize(w: torch.Tensor, bits: int, levels: tuple[int, int] | None = None
                 ) -> torch.Tensor:
    """INQ eq. 4: nearest of ``{0, +-2**n2, ..., +-2**n1}`` (linear domain)."""
    n1, n2 = inq_levels(w, bits) if levels is None else levels
    return pow2_round(w, n2, n1, domain="linear")


def is_pow2_or_zero(w: torch.Tensor) -> torch.Tensor:
    """Elementwise: is the value 0 or exactly +-2**e?"""
    mantissa, _ = torch.frexp(w)
    return (w == 0) | (mantissa.abs() == 0.5)


def shift_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` for integer ``x`` and power-of-two ``w``, by shifts and adds only.

    ``x * 2**e = (x << (e - e_min)) * 2**e_min``: integer shifts, one sign, integer sums, and
    a single scaling by ``2**e_min`` of each output at the end (itself a shift).
    """
    if not bool(is_pow2_or_zero(w).all()):
        raise ValueError("w must hold only 0 and powers of two")
    _, exponent = torch.frexp(w)
    exponent = exponent - 1                                    # w = +-2**exponent
    nonzero = w != 0
    e_min = int(exponent[nonzero].min()) if nonzero.any() else 0
    shifts = torch.where(nonzero, exponent - e_min, 0).to(torch.int64)
    signs = torch.sign(w).to(torch.int64)
    shifted = torch.bitwise_left_shift(x.to(torch.int64)[:, None, :], shifts[None])  # (n, o, i)
    total = (shifted * signs[None]).sum(dim=2)   # multiply by -1/0/+1: a sign, not a product
    return torch.ldexp(total.to(torch.float64), torch.tensor(e_min))


def operation_counts(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """Per layer and per image: multiplications of the dense layer, and for power-of-two
    weights the shifts that replace them (one per nonzero weight use) and those skipped."""
    from ..measure import layer_table
    rows = []
    weights = dict(quantizable_layers(model))
    for row in layer_table(model, input_shape):
        w = weights[row["layer"]].weight.detach()
        pow2 = bool(is_pow2_or_zero(w).all())
        rows.append({"layer": row["layer"], "macs": row["macs"],
                     "multiplications": 0 if pow2 else row["effective_macs"],
                     "shifts": row["effective_macs"] if pow2 else 0,
                     "skipped_zero": row["macs"] - row["effective_macs"]})
    return rows


@dataclass
class Log(Method):
    """Round every weight to 0 or +-2**e, post-training (Miyashita et al. 2016)."""
    id = "quant.log"
    reference = ("Miyashita, Lee, Murmann 2016, Convolutional Neural Networks using "
                 "Logarithmic Data Representation; Lee, Miyashita, Chai, Murmann, Wong 2017, "
                 "LogNet")
    sliders = {"bits": (2, 8, 1)}
    effects = ("fewer_bytes", "different_outputs")

    bits: int = knob(5, Int(2, 8))      # sign + (bits - 1) bits of exponent code (one code: 0)
    fsr: int | None = knob(None, Optional(Int(-64, 64)))   # None: per layer, from its max |w|
    domain: str = knob("log", Choice(DOMAINS))   # "log": round log2|w| | "linear": round |w|

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=float(self.bits))

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        with torch.no_grad():
            for _, module in quantizable_layers(model):
                module.weight.copy_(log_quantize(module.weight, self.bits, self.fsr, self.domain))
        return model


class PartlyFrozen(nn.Module):
    """INQ's layer weight: ``values`` where ``frozen``, the trainable float weight elsewhere."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("frozen", torch.zeros_like(weight, dtype=torch.bool))
        self.register_buffer("values", torch.zeros_like(weight))

    def forward(self, w):
        return torch.where(self.frozen, self.values, w)


def inq_partition(w: torch.Tensor, frozen: torch.Tensor, share: float) -> torch.Tensor:
    """The mask of the weights to quantize now: the already frozen ones plus the largest
    |w| among the others, so that ``round(share * n)`` are frozen in all."""
    more = round(share * w.numel()) - int(frozen.sum())
    mask = frozen.clone()
    if more > 0:
        free = torch.where(frozen, torch.full_like(w, -1.0), w.abs()).flatten()
        mask.view(-1)[torch.topk(free, more).indices] = True
    return mask


@dataclass
class INQ(TrainingMethod):
    """Incremental Network Quantization (Zhou et al. 2017): partition, quantize, retrain.

    ``shares`` are the accumulated quantized portions, increasing and ending with 1.0;
    ``epochs`` is the retraining after each partial quantization (cosine-annealed SGD).
    """
    id = "quant.inq"
    reference = ("Zhou, Yao, Guo, Xu, Chen 2017, Incremental Network Quantization: Towards "
                 "Lossless CNNs with Low-Precision Weights")
    sliders = {"bits": (3, 8, 1), "epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")

    bits: int = knob(5, Int(3, 8))
    shares: tuple[float, ...] = knob((0.5, 0.75, 0.875, 1.0), Seq(Real(0.0, 1.0), 1, 64))
    epochs: int = 2
    lr: float = 0.01
    weight_decay: float = 5e-4

    def validate(self):
        shares = self.shares
        if any(s <= 0 for s in shares) or any(a > b for a, b in zip(shares, shares[1:])) \
                or shares[-1] != 1.0:
            raise ValueError(f"INQ.shares={self.shares!r}: allowed is an increasing tuple of "
                             "portions in (0, 1] ending with 1.0, e.g. (0.5, 0.75, 0.875, 1.0)")

    def tags(self) -> Tags:
        retrains = self.epochs > 0 and any(s < 1.0 for s in self.shares)
        return replace(super().tags(), needs_data=retrains, bits_per_weight=float(self.bits))

    def rounds(self, model: nn.Module, data):
        """Quantize ``model`` in place round by round; yields (share, model) after each
        round's retraining (the last, 100 %, round has nothing left to retrain)."""
        levels = {name: inq_levels(m.weight.detach(), self.bits)
                  for name, m in quantizable_layers(model)}
        quantize_weights(model, lambda name, m: PartlyFrozen(m.weight))
        for r, share in enumerate(self.shares):
            with torch.no_grad():
                for name, module in quantizable_layers(model):
                    p = module.parametrizations.weight
                    w = p.original
                    new = inq_partition(w, p[0].frozen, share) & ~p[0].frozen
                    p[0].values[new] = inq_quantize(w, self.bits, levels[name])[new]
                    p[0].frozen |= new
            if share < 1.0 and self.epochs:
                self.fit(model, data, schedule="cosine", seed=derived_seed(self.seed, r))
            yield share, model

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        for _ in self.rounds(model, data):
            pass
        return fold(model)


METHODS = (Log, INQ)
