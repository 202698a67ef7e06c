"""The four practical guidelines of ShuffleNet v2 (Ma et al. 2018, section 2) as small networks
to time, and the paper's memory access cost formula to set beside the time.

Each guideline is tested in the paper by a stack of identical blocks whose variants do the same
number of multiply-adds (the paper's "FLOPs" are multiply-adds), so that any difference in
speed comes from something FLOPs do not count:

- G1, equal channel widths: ``balance_stack``, blocks of two 1x1 convolutions c1 -> c2 -> c1.
  For a 1x1 convolution on an h x w map, the paper's memory access cost is
  ``hw(c1 + c2) + c1 c2`` (feature maps in and out, then the weights); at fixed c1 c2 it is
  smallest when c1 = c2.
- G2, many groups: ``group_stack``, 1x1 group convolutions c -> c with g groups, c grown with
  g (``group_width``) so that c^2 / g stays fixed; the formula becomes ``hw(c1 + c2) + c1 c2/g``
  and grows with g.
- G3, fragmentation: ``fragment_stack``, blocks of one to four 1x1 convolutions in series or in
  parallel (``Fragmented``).
- G4, element-wise operations: ``bottleneck_stack``, ResNet bottleneck units with and without
  their ReLUs and shortcut: the same convolutions, so the same MACs.

No batch norm anywhere: the paper's blocks have none, and it would add element-wise work to
every variant. The weights are drawn with a fixed seed and a standard deviation of
1/sqrt(fan_in), so that a stack of forty layers neither vanishes into denormal numbers (which
are far slower on a CPU) nor overflows. Every network carries ``input_shape`` (C, H, W), so
``workbench.measure`` counts its MACs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .measure import layer_table

ARRANGEMENTS = ("series", "parallel")


def _positive(owner: str, **values) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}.{name}={value!r}: allowed is a positive integer")


def memory_access(h: int, w: int, c1: int, c2: int, groups: int = 1) -> float:
    """The paper's memory access cost (in values read or written) of one 1x1 convolution from
    ``c1`` to ``c2`` channels on an ``h`` x ``w`` map in ``groups`` groups (its Eq. 2):
    ``hw(c1 + c2) + c1 c2 / g``. It assumes a cache that holds every map and weight."""
    _positive("memory_access", h=h, w=w, c1=c1, c2=c2, groups=groups)
    return h * w * (c1 + c2) + c1 * c2 / groups


def stack_memory_access(model: nn.Module) -> float:
    """The formula summed over every convolution of ``model``, which must all be 1x1, stride 1,
    unpadded (the formula is for those), on the map size of ``model.input_shape``."""
    _, h, w = model.input_shape
    total = 0.0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            if m.kernel_size != (1, 1) or m.stride != (1, 1) or m.padding != (0, 0):
                raise ValueError(f"{name}: kernel {m.kernel_size}, stride {m.stride}, padding "
                                 f"{m.padding}: allowed is a 1x1, stride 1, unpadded conv")
            total += memory_access(h, w, m.in_channels, m.out_channels, m.groups)
    return total


def macs(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass of one image, as ``measure`` counts them."""
    return sum(row["macs"] for row in layer_table(model, tuple(model.input_shape)))


def group_width(base: int, groups: int) -> int:
    """The multiple of ``groups`` whose c^2 / g is nearest ``base``^2: the width at which a
    ``groups``-group 1x1 layer does the multiply-adds of a dense ``base``-channel one."""
    _positive("group_width", base=base, groups=groups)
    ideal = base * math.sqrt(groups)
    candidates = {max(groups, groups * math.floor(ideal / groups)),
                  groups * math.ceil(ideal / groups)}
    return min(sorted(candidates), key=lambda c: abs(c * c / groups - base * base))


def series_width(c: int, fragments: int) -> int:
    """Width of each of ``fragments`` convolutions in series doing the multiply-adds of one
    ``c``-channel 1x1 convolution: c / sqrt(fragments), rounded."""
    _positive("series_width", c=c, fragments=fragments)
    return round(c / math.sqrt(fragments))


def _init(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / fan_in ** 0.5)
    return model.eval()


class Stack(nn.Sequential):
    """A sequence of blocks with the ``input_shape`` (C, H, W) that ``measure`` reads."""

    def __init__(self, blocks: list[nn.Module], channels: int, size: int):
        super().__init__(*blocks)
        self.input_shape = (channels, size, size)


def _conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, groups=groups, bias=False)


def balance_stack(c1: int, c2: int, size: int, blocks: int = 10, seed: int = 0) -> Stack:
    """G1: ``blocks`` blocks of two 1x1 convolutions, ``c1`` -> ``c2`` -> ``c1``."""
    _positive("balance_stack", c1=c1, c2=c2, size=size, blocks=blocks)
    layers = [nn.Sequential(_conv1x1(c1, c2), _conv1x1(c2, c1)) for _ in range(blocks)]
    return _init(Stack(layers, c1, size), seed)


def group_stack(c: int, groups: int, size: int, layers: int = 10, seed: int = 0) -> Stack:
    """G2: ``layers`` 1x1 group convolutions ``c`` -> ``c`` in ``groups`` groups."""
    _positive("group_stack", c=c, groups=groups, size=size, layers=layers)
    if c % groups:
        raise ValueError(f"group_stack.c={c}: allowed is a multiple of groups={groups}")
    return _init(Stack([_conv1x1(c, c, groups) for _ in range(layers)], c, size), seed)


class Fragmented(nn.Module):
    """G3: ``fragments`` 1x1 convolutions in one block. ``series``: one after another, each
    ``width`` -> ``width``. ``parallel``: side by side on the same input, each making
    ``width / fragments`` channels, concatenated, so the block does exactly the multiply-adds
    of one ``width`` -> ``width`` convolution cut into pieces."""

    def __init__(self, width: int, fragments: int, arrangement: str):
        super().__init__()
        _positive("Fragmented", width=width, fragments=fragments)
        if arrangement not in ARRANGEMENTS:
            raise ValueError(f"Fragmented.arrangement={arrangement!r}: allowed is one of "
                             f"{', '.join(ARRANGEMENTS)}")
        if arrangement == "parallel" and width % fragments:
            raise ValueError(f"Fragmented.width={width}: allowed is a multiple of "
                             f"fragments={fragments} (parallel pieces of equal width)")
        self.arrangement = arrangement
        out = width if arrangement == "series" else width // fragments
        self.convs = nn.ModuleList(_conv1x1(width, out) for _ in range(fragments))

    def forward(self, x):
        if self.arrangement == "parallel":
            return torch.cat([conv(x) for conv in self.convs], dim=1)
        for conv in self.convs:
            x = conv(x)
        return x


def fragment_stack(c: int, fragments: int, arrangement: str, size: int, blocks: int = 10,
                   seed: int = 0) -> Stack:
    """G3: ``blocks`` ``Fragmented`` blocks with the multiply-adds of ``blocks`` 1x1
    convolutions of ``c`` channels: series pieces are ``series_width(c, fragments)`` wide,
    parallel pieces split ``c``."""
    _positive("fragment_stack", c=c, fragments=fragments, size=size, blocks=blocks)
    width = series_width(c, fragments) if arrangement == "series" else c
    layers = [Fragmented(width, fragments, arrangement) for _ in range(blocks)]
    return _init(Stack(layers, width, size), seed)


class Bottleneck(nn.Module):
    """G4: ResNet's bottleneck unit without batch norm: 1x1 conv ``c`` -> ``c/4``, 3x3 conv
    ``c/4`` -> ``c/4``, 1x1 conv ``c/4`` -> ``c``, a ReLU after each of the first two and after
    the shortcut's addition (``relu``), the input added back (``shortcut``). In-place ReLU and
    addition, as torchvision's ResNet does them."""

    def __init__(self, c: int, relu: bool = True, shortcut: bool = True):
        super().__init__()
        _positive("Bottleneck", c=c)
        if c % 4:
            raise ValueError(f"Bottleneck.c={c}: allowed is a multiple of 4 (inner width c/4)")
        inner = c // 4
        self.reduce = _conv1x1(c, inner)
        self.conv = nn.Conv2d(inner, inner, 3, padding=1, bias=False)
        self.expand = _conv1x1(inner, c)
        self.relu, self.shortcut = relu, shortcut

    def _act(self, x):
        return torch.relu_(x) if self.relu else x

    def forward(self, x):
        out = self.expand(self._act(self.conv(self._act(self.reduce(x)))))
        if self.shortcut:
            out += x
        return self._act(out)


def bottleneck_stack(c: int, relu: bool, shortcut: bool, size: int, units: int = 10,
                     seed: int = 0) -> Stack:
    """G4: ``units`` ``Bottleneck`` units of ``c`` channels."""
    _positive("bottleneck_stack", c=c, size=size, units=units)
    return _init(Stack([Bottleneck(c, relu, shortcut) for _ in range(units)], c, size), seed)
