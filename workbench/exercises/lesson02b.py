"""Exercises of lesson 02b (quantization: trained low-bit networks and int8).

``check_round_ste(f)``: ``f(x)`` rounds ``x`` to the nearest integer on the forward pass and lets
the gradient through unchanged on the backward pass (the straight-through estimator); compared
with ``quantize.round_ste`` on a real layer's weights in units of a 2-bit step, forward values
and gradients both.
``check_int8_weights(f)``: ``f(weight)`` returns ``(scale, q)``: one symmetric scale per output
channel and the integer weights in [-64, 64], as ``quant.int8`` stores them (ONNX Runtime's
reduced range); compared with ``quantize.int8.weight_qparams`` and ``quantize_tensor`` on real
layers.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from . import run


@lru_cache(maxsize=1)
def _layers() -> dict[str, torch.Tensor]:
    from .. import zoo
    lenet300, lenet5 = zoo.pretrained("lenet300"), zoo.pretrained("lenet5")
    return {"lenet300 net.1": lenet300.net[1].weight.detach(),
            "lenet5 features.0": lenet5.features[0].weight.detach(),
            "lenet5 classifier.4": lenet5.classifier[4].weight.detach()}


# ------------------------------------------------------------------ the straight-through round

def _ste_cases():
    layers = _layers()
    return [(f"{name} / (max|w| / 2)", (w / (w.abs().max() / 2),), {})
            for name, w in layers.items() if name != "lenet5 classifier.4"]


def _judge_ste(label, got, args, kwargs):
    from ..quantize import round_ste
    x = args[0]                                   # a leaf that requires grad
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return f"expected a tensor of shape {tuple(x.shape)}"
    if not torch.equal(got.detach(), torch.round(x.detach())):
        wrong = int((got.detach() != torch.round(x.detach())).sum())
        return f"the forward values are not round(x) ({wrong:,} of {x.numel():,} differ)"
    if got.grad_fn is None:
        return ("your output is detached from x: no gradient reaches the shadow weights "
                "(keep x in the expression: x + (round(x) - x).detach())")
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((got * upstream).sum(), x, allow_unused=True)
    reference = x.detach().clone().requires_grad_(True)
    (want,) = torch.autograd.grad((round_ste(reference) * upstream).sum(), reference)
    if grad is None or torch.equal(grad, torch.zeros_like(grad)):
        return ("the gradient is 0 everywhere: that is torch.round's own derivative; the STE "
                "passes the incoming gradient through unchanged")
    if not torch.allclose(grad, want):
        return "the gradient is not the incoming one unchanged (d round_ste / dx must be 1)"
    return None


def check_round_ste(function) -> bool | None:
    """Compare ``function(x)`` with the library's straight-through rounding, both passes."""
    cases = [(label, (x.clone().requires_grad_(True),), {}) for label, (x,), _ in _ste_cases()]
    return run("round_ste", function, cases, _judge_ste,
               "round(x) forward, the incoming gradient unchanged backward")


# ------------------------------------------------------------------ int8 weights

def _int8_cases():
    return [(name, (w,), {}) for name, w in _layers().items()]


def _judge_int8(label, got, args, kwargs):
    from ..quantize import int8
    w = args[0]
    if not (isinstance(got, tuple) and len(got) == 2):
        return "expected a pair (scale, q)"
    scale, q = (torch.as_tensor(t) for t in got)
    want_scale, _ = int8.weight_qparams(w)
    want_q = int8.quantize_tensor(w, want_scale, 0, -64, 64, axis=0)
    channels = w.shape[0]
    if scale.numel() == 1 and channels > 1:
        return (f"one scale for the whole tensor; quant.int8 has one per output channel "
                f"({channels} here)")
    if scale.numel() != channels:
        return f"expected {channels} scales (one per output channel), got {scale.numel()}"
    if q.shape != w.shape:
        return f"q must have the weight's shape {tuple(w.shape)}, got {tuple(q.shape)}"
    if not torch.equal(q.double(), q.double().round()):
        return "q holds non-integers: round w / scale"
    if int(q.abs().max()) > 64:
        return (f"your integers reach {int(q.abs().max())}; quant.int8 keeps them in [-64, 64] "
                "(scale = max|w| / 64 per channel, ONNX Runtime's reduce_range)")
    off = (scale.flatten().double() - want_scale.double()).abs() / want_scale.double()
    if off.max() > 1e-5:
        c = int(off.argmax())
        return (f"channel {c}: expected scale {float(want_scale[c]):.6g} (max|w| / 64), got "
                f"{float(scale.flatten()[c]):.6g}")
    diff = (q.to(torch.int64) - want_q.to(torch.int64)).abs()
    if diff.max() > 1 or (diff > 0).float().mean() > 1e-4:
        return (f"{int((diff > 0).sum()):,} of {w.numel():,} integers differ from "
                f"round(w / scale), by up to {int(diff.max())}")
    return None


def check_int8_weights(function) -> bool | None:
    """Compare ``function(weight)`` -> (scale, q) with ``quant.int8``'s weight integers."""
    return run("int8_weights", function, _int8_cases(), _judge_int8,
               "one scale per output channel, integers in [-64, 64]: the library's on every layer")
