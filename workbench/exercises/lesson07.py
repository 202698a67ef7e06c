"""Checks of lesson 07's exercises (compact architectures).

Each ``check_<name>(function)`` runs the student's function on the real layers of the zoo's
networks (the depthwise separable blocks of MobileNet, the Fire modules of SqueezeNet), compares
the result with what the library counts on those layers (``measure.layer_table``, the numbers
``measure.report`` sums) and prints what is wrong. The counts depend on the layers' shapes only,
so the networks are built (``models.build``, the zoo's knobs), not loaded: the checks need no
checkpoint.
"""
from __future__ import annotations

from functools import lru_cache

from torch import nn

from . import run
from .. import models
from ..lessons import fire_table, output_sizes, separable_blocks
from ..measure import layer_table


def _int(result) -> int | str:
    try:
        value = int(result)
    except Exception:
        return f"expected a whole number, got {type(result).__name__}"
    return value if value == result else f"expected a whole number, got {result!r}"


# ------------------------------------------------------------------ 1. depthwise separable MACs


@lru_cache(maxsize=1)
def _separable_cases() -> tuple:
    """(label, (c_in, c_out, k, h, w), separable MACs, full conv MACs, input side) of MobileNet
    blocks 1, 2, 6 and 13: both as ``measure.layer_table`` counts them, the full k x k conv
    built with the block's stride and counted the same way."""
    net = models.build("mobilenet")
    counted = {r["layer"]: r["macs"] for r in layer_table(net, tuple(net.input_shape))}
    blocks = separable_blocks(net)
    sizes = output_sizes(net, [dw for dw, _ in blocks])
    cases = []
    for index in (0, 1, 5, 12):
        dw, pw = blocks[index]
        conv, point = net.get_submodule(dw), net.get_submodule(pw)
        (h, w), k, stride = sizes[dw], conv.kernel_size[0], conv.stride[0]
        full = nn.Conv2d(conv.in_channels, point.out_channels, k, stride, k // 2, bias=False)
        full_macs = layer_table(full, (conv.in_channels, h * stride, w * stride))[0]["macs"]
        cases.append((f"mobilenet {dw.rsplit('.', 1)[0]} ({conv.in_channels} -> "
                      f"{point.out_channels} channels, stride {stride}, output {h}x{w})",
                      (conv.in_channels, point.out_channels, k, h, w),
                      counted[dw] + counted[pw], full_macs, h * stride))
    return tuple(cases)


def check_separable_macs(function) -> bool | None:
    """``function(c_in, c_out, k, h, w)`` -> ``(separable, full)``: the multiply-adds of a
    depthwise separable convolution (k x k depthwise, then 1 x 1 pointwise) and of one full
    k x k convolution from ``c_in`` to ``c_out`` channels, for an ``h`` x ``w`` output map."""
    cases = {label: (want_sep, want_full, side)
             for label, _, want_sep, want_full, side in _separable_cases()}

    def judge(label, result, args, kwargs):
        c_in, c_out, k, h, w = args
        want_sep, want_full, side = cases[label]
        try:
            sep, full = result
        except Exception:
            return "expected a pair (separable MACs, full conv MACs)"
        sep, full = _int(sep), _int(full)
        for bad in (sep, full):
            if isinstance(bad, str):
                return bad
        problems = []
        if full != want_full:
            hint = ""
            if full == h * w * c_in * c_out * k:
                hint = ": you multiplied by k once; a k x k kernel has k^2 weights per pair"
            elif full == side * side * c_in * c_out * k * k:
                hint = (f": you counted the {side}x{side} input positions; a stride-2 conv "
                        f"computes only the {h}x{w} output positions")
            elif full == want_full // (h * w):
                hint = ": that is the weights; every output position uses them once more"
            problems.append(f"full conv: expected {want_full:,} MACs, got {full:,}{hint}")
        if sep != want_sep:
            depthwise, pointwise = h * w * c_in * k * k, h * w * c_in * c_out
            hint = ""
            if sep == pointwise:
                hint = (f": that is the pointwise 1x1 part only; add the depthwise part, "
                        f"h w c_in k^2 = {depthwise:,}")
            elif sep == depthwise:
                hint = (f": that is the depthwise part only; add the pointwise 1x1 part, "
                        f"h w c_in c_out = {pointwise:,}")
            elif sep == h * w * c_in * c_in * k * k + pointwise:
                hint = (": your depthwise part is a full k x k conv from c_in to c_in "
                        "channels; depthwise means one k x k filter per channel, h w c_in k^2")
            elif sep == h * w * c_in * (k + c_out):
                hint = ": the depthwise filter has k^2 weights, not k"
            elif sep == side * side * c_in * (k * k + c_out):
                hint = (f": you counted the {side}x{side} input positions; count the {h}x{w} "
                        f"output positions")
            problems.append(f"separable: expected {want_sep:,} MACs (the library's count of "
                            f"the block's two layers), got {sep:,}{hint}")
        return "; ".join(problems) or None

    return run("separable_macs", function,
               [(label, args, {}) for label, args, *_ in _separable_cases()], judge,
               "both counts match the library's on four MobileNet blocks, stride 2 included")


# ------------------------------------------------------------------ 2. Fire module weights


@lru_cache(maxsize=1)
def _fire_cases() -> tuple:
    """(label, (c_in, s, e1, e3), conv weights) of SqueezeNet's Fire modules at two squeeze
    ratios, the weights as ``measure.layer_table`` counts them."""
    cases = []
    for ratio in (0.125, 0.5):
        for row in fire_table(models.build("squeezenet", squeeze_ratio=ratio))[::3]:
            cases.append((f"squeezenet (squeeze_ratio {ratio}) {row['module']}",
                          (row["c_in"], row["squeeze s"], row["expand e1 (1x1)"],
                           row["expand e3 (3x3)"]), row["conv weights"]))
    return tuple(cases)


def check_fire_params(function) -> bool | None:
    """``function(c_in, s, e1, e3)`` -> the weights of a Fire module's three convolutions
    (1x1 squeeze to ``s`` channels, then ``e1`` 1x1 and ``e3`` 3x3 expand filters on its
    output), without biases or batch norm."""
    want = {label: weights for label, _, weights in _fire_cases()}

    def judge(label, result, args, kwargs):
        c_in, s, e1, e3 = args
        got = _int(result)
        if isinstance(got, str):
            return got
        expected = want[label]
        if got == expected:
            return None
        hint = ""
        if got == c_in * s + s * e1 + s * e3:
            hint = ": the 3x3 expand filters have 9 weights per input channel"
        elif got == 9 * c_in * s + s * e1 + 9 * s * e3:
            hint = ": the squeeze layer is 1x1, one weight per input channel"
        elif got == expected + 2 * (s + e1 + e3) or got == expected + s + e1 + e3:
            hint = (": only the convolutions' weights (no biases: each conv is followed by "
                    "batch norm, whose scale and shift are not asked)")
        elif got == c_in * s + c_in * e1 + 9 * c_in * e3:
            hint = ": the expand filters read the squeeze layer's s channels, not the c_in inputs"
        return f"expected {expected:,} weights, got {got:,}{hint}"

    return run("fire_params", function, [(label, args, {}) for label, args, _ in _fire_cases()],
               judge, "the weights of every Fire module checked, at squeeze ratios 0.125 and "
               "0.5, match the library's count")
