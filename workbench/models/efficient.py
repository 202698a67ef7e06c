"""Compound-scaled networks of MBConv blocks, for CIFAR-10: EfficientNet (Tan and Le 2019).

An MBConv block is MobileNet v2's inverted residual (a 1x1 expansion, a k x k depthwise conv, a
linear 1x1 projection, the input added when the shapes allow) with a squeeze-and-excitation
step before the projection: the channels are averaged over the image, passed through two small
1x1 convs, and the sigmoid of the result rescales each channel. Its activation is swish
(``x * sigmoid(x)``, torch's SiLU).

Compound scaling (Section 3.3, equation 3) grows a base network in three dimensions from one
coefficient phi: depth (blocks per stage) by ``alpha ** phi``, width (channels) by
``beta ** phi``, resolution by ``gamma ** phi``, with alpha = 1.2, beta = 1.1, gamma = 1.15
found by a grid search at phi = 1 under ``alpha * beta**2 * gamma**2 ~ 2``. A convolution's
FLOPs grow as depth * width**2 * resolution**2, so each step of phi roughly doubles them.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from .layers import check_count, check_range, classifier_head, conv_bn, divisible


class SqueezeExcite(nn.Module):
    """Average over the image, 1x1 conv to ``squeeze`` channels (swish), 1x1 conv back
    (sigmoid); the result scales the input channel by channel."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x):
        scale = F.adaptive_avg_pool2d(x, 1)
        return x * self.expand(F.silu(self.reduce(scale))).sigmoid()


class MBConv(nn.Module):
    """EfficientNet's block: 1x1 expansion to ``c_in * expansion`` (BN, swish; none when the
    expansion is 1), k x k depthwise conv (BN, swish), squeeze-and-excitation to a quarter of
    ``c_in``, linear 1x1 projection (BN); the input is added when stride is 1 and widths match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int,
                 se_ratio: float = 0.25):
        super().__init__()
        hidden = c_in * expansion
        layers = conv_bn(c_in, hidden, act=nn.SiLU) if expansion != 1 else []
        layers += conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU)
        layers.append(SqueezeExcite(hidden, max(1, int(c_in * se_ratio))))
        layers += conv_bn(hidden, c_out, act=None)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class EfficientNet(nn.Module):
    """EfficientNet-B0's layout for CIFAR-10 (Tan and Le 2019, Table 1): a 3x3 stem, seven
    stages of MBConv blocks, a 1x1 conv to ``last_channels``, global average pooling, one linear
    layer, compound-scaled by ``phi``.

    Knobs: ``phi`` (the compound coefficient, a float >= 0: EfficientNet-B0 is phi = 0); the
    base network's ``width`` and ``depth`` multipliers (1 and 1 for B0), to which compound
    scaling applies ``beta ** phi`` and ``alpha ** phi`` (channels rounded to multiples of 8,
    blocks per stage rounded up, as the reference code does); ``last_channels`` (1280 in B0;
    scaled by ``beta ** phi`` only, not by ``width``). Resolution: the 32 x 32 input is resized to
    ``round(32 * gamma ** phi)`` pixels (bilinear) inside ``forward``, so the same data feeds
    every phi; upsampling adds no detail to a CIFAR image, but it does add the cost that the
    compound rule accounts for.

    Adapted for 32 x 32 inputs: B0 downsamples 32 times (224 -> 7), with stride 2 in the stem
    and in the 24-, 40-, 80- and 192-channel stages; here it downsamples 8 times: the stem
    runs at stride 1 (32 x 32), the 16-channel stage (no expansion, a depthwise conv on few
    channels) takes the first stride 2 (16 x 16) instead of the 24-channel one, whose six-fold
    expansion would be the most expensive layer of the network at 32 x 32, and the 192-channel
    stage runs at stride 1, so the 40- and 80-channel stages give 8 and 4 pixels. No dropout,
    no drop-connect, no AutoAugment (the zoo's one recipe family; only the epochs differ, see
    ``zoo.RECIPES``). Defaults ``width`` 0.25, ``depth`` 0.5 and ``last_channels`` 320, to keep
    one training run at phi = 0 to a few hours on one core.
    """

    input_shape = (3, 32, 32)
    ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
    # (expansion, kernel, channels, blocks, stride) per stage of B0; ImageNet's strides are
    # 1, 2, 2, 2, 1, 2, 1 after a stride-2 stem (see the class docstring for ours)
    STAGES = ((1, 3, 16, 1, 2), (6, 3, 24, 2, 1), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
              (6, 5, 112, 3, 1), (6, 5, 192, 4, 1), (6, 3, 320, 1, 1))
    STEM = 32

    def __init__(self, phi: float = 0.0, width: float = 0.25, depth: float = 0.5,
                 last_channels: int = 320, num_classes: int = 10):
        super().__init__()
        if not isinstance(phi, (int, float)) or not 0 <= phi <= 8:
            raise ValueError(f"EfficientNet.phi={phi!r}: allowed is 0 <= phi <= 8 "
                             f"(B0 is 0, B7 about 7)")
        check_range("EfficientNet.width", width, 0, 4)
        check_range("EfficientNet.depth", depth, 0, 4)
        check_count("EfficientNet.last_channels", last_channels)
        self.config = {"phi": phi, "width": width, "depth": depth,
                       "last_channels": last_channels, "num_classes": num_classes}
        d, w, r = self.multipliers(phi)
        self.size = round(32 * r)
        c_in = divisible(self.STEM * width * w)
        layers = [nn.Sequential(*conv_bn(3, c_in, 3, stride=1, act=nn.SiLU))]  # ImageNet: 2
        for expansion, kernel, channels, blocks, stride in self.STAGES:
            c_out = divisible(channels * width * w)
            for i in range(math.ceil(blocks * depth * d)):
                layers.append(MBConv(c_in, c_out, kernel, stride if i == 0 else 1, expansion))
                c_in = c_out
        last = divisible(last_channels * w)
        layers.append(nn.Sequential(*conv_bn(c_in, last, act=nn.SiLU)))
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(last, num_classes)

    @classmethod
    def multipliers(cls, phi: float) -> tuple[float, float, float]:
        """(depth, width, resolution) multipliers of compound coefficient ``phi``."""
        return cls.ALPHA ** phi, cls.BETA ** phi, cls.GAMMA ** phi

    def forward(self, x):
        if self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return self.head(self.features(x))
