"""Building blocks shared by the zoo's networks: the conv-BN-activation triple, the
pool-flatten-linear classifier head, channel rounding, and the checks of the constructors'
knobs (errors in the shape "Class.knob=value: allowed is ...").

These helpers only assemble standard torch modules, in the order the networks always made them:
the modules they return, their state_dict keys and the order in which their weights are
initialized (which, after ``torch.manual_seed``, gives a network its weights) are exactly those
of the code they replaced, so the zoo's checkpoints load unchanged.
"""
from __future__ import annotations

import numbers

from collections.abc import Callable

from torch import nn


def divisible(channels: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of ``divisor`` (never down by more than 10%), as the
    MobileNet v2 reference code does for every width multiplier."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_bn(c_in: int, c_out: int, kernel=1, stride=1, groups: int = 1,
            act: Callable[..., nn.Module] | None = nn.ReLU) -> list[nn.Module]:
    """Conv (no bias, "same" padding for odd kernels) -> BatchNorm -> activation.

    ``kernel`` is an int or (height, width); ``act`` is an activation class, made with
    ``inplace=True`` (``functools.partial(nn.LeakyReLU, 0.1)`` for DarkNet's leaky ReLU), or
    None for no activation (a linear layer, such as MobileNet v2's bottleneck). A list, so
    that a caller can splice it into a larger ``nn.Sequential`` and keep flat layer indices.
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    layers = [nn.Conv2d(c_in, c_out, (kh, kw), stride, (kh // 2, kw // 2), groups=groups,
                        bias=False),
              nn.BatchNorm2d(c_out)]
    return layers + ([act(inplace=True)] if act is not None else [])


def classifier_head(c_in: int, classes: int) -> nn.Sequential:
    """Global average pooling, flatten, one linear layer from ``c_in`` features to ``classes``
    scores: the head of every zoo CNN that ends in a fully connected layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))


def check_range(name: str, value: float, low: float, high: float) -> None:
    """ValueError unless ``value`` is a number with ``low < value <= high`` (a width or
    resolution multiplier); ``name`` says whose knob it is, e.g. "MobileNet.width"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not low < value <= high:
        raise ValueError(f"{name}={value!r}: allowed is a number with {low} < {name} <= {high}")


def check_count(name: str, value, low: int = 1, note: str = "") -> None:
    """ValueError unless ``value`` is an integer >= ``low`` (a count of blocks, channels,
    groups); ``note``, if any, follows in parentheses (the paper's value, say)."""
    if not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r}: allowed is an integer >= {low}"
                         + (f" ({note})" if note else ""))
