"""Plain stacks of small convolutions, for CIFAR-10: a DarkNet-19 style backbone (Redmon and
Farhadi 2017, "YOLO9000", Table 6).

DarkNet keeps every kernel small: 3x3 convolutions that see the neighbourhood, alternating with
1x1 convolutions that halve the channels in between (a bottleneck, as in Network-in-Network),
channels doubling after every pooling, BatchNorm and leaky ReLU after every convolution, and
global average pooling instead of fully connected layers. There are no shortcuts: its cost is
plain dense convolution, the fastest kind per MAC on a CPU.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from .layers import check_range, conv_bn, divisible

# DarkNet's activation: a leaky ReLU of slope 0.1 (made in place by conv_bn)
leaky = partial(nn.LeakyReLU, 0.1)


class DarkNet(nn.Module):
    """DarkNet-19 for CIFAR-10: 18 convolutions in six groups of 1, 1, 3, 3, 5 and 5 layers
    (3x3 and 1x1 alternating within a group, the 1x1 ones at half the group's width) of 32, 64,
    128, 256, 512 and 1024 channels, a 1x1 convolution to one map per class, global average
    pooling (Redmon and Farhadi 2017, Table 6; the 19th layer is the classifier).

    Knob: ``width`` multiplies every channel count (rounded to multiples of 8).

    Adapted for 32 x 32 inputs: the ImageNet network has a 2x2 max pooling after each of the
    first five groups (224 -> 7); here only three are kept, after the groups of 64, 128 and
    256 channels, so the 32- and 64-channel groups see 32 x 32 maps and the last two groups 4 x
    4 maps (a pooling after the first group would throw away detail a 32-pixel image does not
    have to spare; one after the fifth would leave 2 x 2 maps). Default ``width`` 0.25 (8 to
    256 channels), so that one training run fits the zoo's time budget. The classifier is a
    plain 1x1 convolution with a bias and no activation, as in the authors' darknet19.cfg.
    """

    input_shape = (3, 32, 32)
    # (channels of the 3x3 layers at width 1, layers in the group, 2x2 max pooling after)
    GROUPS = ((32, 1, False), (64, 1, True), (128, 3, True), (256, 3, True), (512, 5, False),
              (1024, 5, False))

    def __init__(self, width: float = 0.25, num_classes: int = 10):
        super().__init__()
        check_range("DarkNet.width", width, 0, 4)
        self.config = {"width": width, "num_classes": num_classes}
        layers, c_in = [], 3
        for channels, count, pool in self.GROUPS:
            wide, narrow = divisible(channels * width), divisible(channels * width / 2)
            for i in range(count):               # 3x3 at even positions, 1x1 at odd ones
                c_out, kernel = (wide, 3) if i % 2 == 0 else (narrow, 1)
                layers += conv_bn(c_in, c_out, kernel, act=leaky)
                c_in = c_out
            if pool:
                layers.append(nn.MaxPool2d(2))
        layers.append(nn.Conv2d(c_in, num_classes, 1))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.features(x))
