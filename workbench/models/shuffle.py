"""Networks built from channel split, concatenation and channel shuffle, for CIFAR-10:
ShuffleNet v2 (Ma et al. 2018).

A channel shuffle lets the channels of one branch (or one convolution group) reach the others
in the next block: with ``g`` groups of ``c/g`` channels, view the channels as a ``g x c/g``
matrix, transpose it, flatten it. It costs no multiply-adds, only memory traffic, which is the
point of ShuffleNet v2's guidelines: what a CPU spends time on is not only MACs.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from .layers import check_range, classifier_head, conv_bn


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups: (a1 a2 b1 b2) -> (a1 b1 a2 b2)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV2Block(nn.Module):
    """ShuffleNet v2's unit (Ma et al. 2018, Fig. 3 c and d).

    Stride 1: split the channels in two halves; one passes through untouched, the other goes
    through 1x1 conv-BN-ReLU, 3x3 depthwise conv-BN, 1x1 conv-BN-ReLU with equal widths
    (guideline 1); concatenate (no element-wise add, guideline 4) and shuffle.
    Stride 2: no split; both branches see the whole input and downsample (the left one with a
    3x3 depthwise conv-BN and a 1x1 conv-BN-ReLU), so the output has twice the channels.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_out % 2 or (stride == 1 and c_in != c_out):
            raise ValueError(f"ShuffleV2Block({c_in}, {c_out}, stride={stride}): need an even "
                             f"c_out, equal to c_in at stride 1")
        self.stride = stride
        branch = c_out // 2
        right_in = c_in // 2 if stride == 1 else c_in
        self.right = nn.Sequential(*conv_bn(right_in, branch),
                                   *conv_bn(branch, branch, 3, stride, groups=branch, act=None),
                                   *conv_bn(branch, branch))
        self.left = nn.Sequential() if stride == 1 else nn.Sequential(
            *conv_bn(c_in, c_in, 3, stride, groups=c_in, act=None), *conv_bn(c_in, branch))

    def forward(self, x):
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)
        else:
            left, right = self.left(x), x
        return channel_shuffle(torch.cat((left, self.right(right)), dim=1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet v2 for CIFAR-10: a 3x3 stem, three stages of (4, 8, 4) units, a 1x1 conv to
    ``last_channels``, global average pooling, one linear layer (Ma et al. 2018, Table 5).

    Knob ``width`` (the paper's 0.5x, 1x, 1.5x, 2x): the stage widths are the paper's
    (48, 96, 192), (116, 232, 464), (176, 352, 704), (244, 488, 976) for those four, and
    ``116 * width`` (and twice, four times that) rounded to an even number otherwise; the stem
    keeps 24 channels. ``last_channels`` is 1024 in the paper (2048 at 2x).

    Adapted for 32 x 32 inputs: the ImageNet stem is a stride-2 conv followed by a stride-2
    max pooling (224 -> 56); here the stem runs at stride 1 and the pooling is removed, so the
    stages' own stride-2 first units give 16, 8 and 4 pixels.
    Default width 0.5 (the paper's smallest) and ``last_channels`` 512 instead of 1024 (for
    10 classes, and so that one training run fits the zoo's time budget).
    """

    input_shape = (3, 32, 32)
    PAPER_WIDTHS: ClassVar[dict] = {0.5: (48, 96, 192), 1.0: (116, 232, 464),
                                    1.5: (176, 352, 704), 2.0: (244, 488, 976)}
    REPEATS = (4, 8, 4)

    def __init__(self, width: float = 0.5, last_channels: int = 512, num_classes: int = 10):
        super().__init__()
        check_range("ShuffleNetV2.width", width, 0, 4)
        if last_channels < 1:
            raise ValueError(f"last_channels={last_channels}: need at least 1")
        self.config = {"width": width, "last_channels": last_channels,
                       "num_classes": num_classes}
        widths = self.PAPER_WIDTHS.get(float(width)) or \
            tuple(max(2, 2 * round(116 * width * k / 2)) for k in (1, 2, 4))
        self.stem = nn.Sequential(*conv_bn(3, 24, 3, stride=1))    # ImageNet: stride 2 + pool
        stages, c_in = [], 24
        for c_out, repeats in zip(widths, self.REPEATS):
            stages.append(nn.Sequential(*(ShuffleV2Block(c_in if i == 0 else c_out, c_out,
                                                         2 if i == 0 else 1)
                                          for i in range(repeats))))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.last = nn.Sequential(*conv_bn(c_in, last_channels))
        self.head = classifier_head(last_channels, num_classes)

    def forward(self, x):
        return self.head(self.last(self.stages(self.stem(x))))
