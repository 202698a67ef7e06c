"""Lesson 00's exercises (the tour).

``check_layer_macs(layer_macs)``: ``layer_macs(layer, output_shape)`` is the number of
multiply-accumulates a Conv2d or Linear layer does for ONE image, given the shape of its output
for that image (``(C, H, W)`` or ``(features,)``). Checked on every such layer of three zoo
networks (LeNet-5, ResNet-20 and, when its checkpoint exists, MobileNet with its depthwise
convolutions) against ``measure.layer_table``, the counter every report uses.

``check_compression_ratio(compression_ratio)``: ``compression_ratio(base, compressed)`` is how
many times smaller the compressed network's FILE is than the base network's. Checked on
LeNet-300-100 and its magnitude-pruned copies against the lengths of ``codec.encode``.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from . import run


@lru_cache(maxsize=None)
def _mac_cases() -> tuple:
    """(label, layer, output shape, library's MACs) for each Conv2d / Linear layer."""
    from .. import zoo
    from ..measure import layer_table
    names = ["lenet5", "resnet20"] + (["mobilenet"] if "mobilenet" in zoo.manifest() else [])
    cases = []
    for name in names:
        model = zoo.pretrained(name).eval()
        shapes, hooks = {}, []
        for path, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                hooks.append(module.register_forward_hook(
                    lambda m, i, out, path=path: shapes.__setitem__(path, tuple(out.shape[1:]))))
        with torch.no_grad():
            model(torch.zeros(1, *model.input_shape))
        for hook in hooks:
            hook.remove()
        macs = {row["layer"]: row["macs"] for row in layer_table(model, model.input_shape)}
        for path, module in model.named_modules():
            if path in shapes:
                cases.append((f"{name} {path}", module, shapes[path], macs[path]))
    return tuple(cases)


def _describe(layer: nn.Module, shape: tuple) -> str:
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}->{layer.out_features}"
    groups = f", groups={layer.groups}" if layer.groups > 1 else ""
    return (f"Conv2d {layer.in_channels}->{layer.out_channels}, "
            f"{'x'.join(map(str, layer.kernel_size))} kernel{groups}, output "
            f"{'x'.join(map(str, shape))}")


def _mac_problem(layer: nn.Module, shape: tuple, expected: int, got) -> str | None:
    try:
        if int(got) == got and int(got) == expected:
            return None
    except (TypeError, ValueError):
        return f"returned {got!r}, expected a whole number of MACs ({expected:,})"
    what = f"({_describe(layer, shape)}) expected {expected:,} MACs, got {got:,}"
    if got == 2 * expected:
        return what + ": that is FLOPs (a multiply and an add each); count one per MAC"
    if isinstance(layer, nn.Conv2d):
        positions = shape[1] * shape[2]
        if got == layer.weight.numel():
            return what + (": you counted each weight once; a convolution uses each weight "
                           f"once per output position ({shape[1]}x{shape[2]} = {positions:,})")
        if layer.groups > 1 and got == expected * layer.groups:
            return what + (f": with groups={layer.groups} each output channel sees only "
                           f"in_channels / groups = {layer.in_channels // layer.groups} "
                           "input channels")
    return what


def check_layer_macs(layer_macs) -> bool | None:
    """Your ``layer_macs(layer, output_shape)`` against ``measure.layer_table`` on every
    Conv2d and Linear layer of the zoo's LeNet-5, ResNet-20 (and MobileNet)."""
    cases = [(label, (layer, shape), {}) for label, layer, shape, _ in _mac_cases()]
    expected = {label: macs for label, _, _, macs in _mac_cases()}
    return run("layer_macs", layer_macs, cases,
               lambda label, got, args, kw: _mac_problem(*args, expected[label], got),
               f"right on all {len(cases)} layers (LeNet-5, ResNet-20"
               + (", MobileNet)" if any(c[0].startswith("mobilenet") for c in cases)
                  else ")"))


@lru_cache(maxsize=None)
def _ratio_cases() -> tuple:
    """(label, base, compressed, true file ratio, nonzeros ratio) on LeNet-300-100."""
    from .. import codec, zoo
    from ..measure import count_params
    from ..prune import Magnitude
    base = zoo.pretrained("lenet300")
    dense = len(codec.encode(base))
    cases = []
    for sparsity in (0.0, 0.5, 0.9, 0.99):
        model = Magnitude(sparsity=sparsity).apply(base) if sparsity else base
        params, nonzeros = count_params(model)
        cases.append((f"lenet300 pruned to {sparsity:.0%} sparsity", base, model,
                      dense / len(codec.encode(model)), params / nonzeros))
    return tuple(cases)


def _ratio_problem(expected: float, by_count: float, got) -> str | None:
    try:
        got = float(got)
    except (TypeError, ValueError):
        return f"returned {got!r}, expected a number ({expected:.3f})"
    if abs(got - expected) <= 1e-6 * expected:
        return None
    if abs(got - 1 / expected) <= 1e-6 / expected and expected != 1:
        return (f"expected {expected:.3f}x, got {got:.3f}: the ratio is upside down "
                "(base bytes over compressed bytes)")
    if abs(got - by_count) <= 1e-3 * by_count:
        return (f"expected {expected:.3f}x, got {got:.3f}: that is parameters over nonzeros; "
                "the file also stores where the nonzeros are, so measure "
                "len(wb.codec.encode(model)) instead")
    return f"expected {expected:.3f}x (the real files' lengths), got {got:.3f}"


def check_compression_ratio(compression_ratio) -> bool | None:
    """Your ``compression_ratio(base, compressed)`` against the lengths of the real files
    (``codec.encode``) of LeNet-300-100 and its pruned copies."""
    cases = [(label, (base, model), {}) for label, base, model, _, _ in _ratio_cases()]
    truth = {label: (ratio, by_count) for label, _, _, ratio, by_count in _ratio_cases()}
    return run("compression_ratio", compression_ratio, cases,
               lambda label, got, args, kw: _ratio_problem(*truth[label], got),
               f"right on all {len(cases)} networks (real file bytes, not a formula)")
