"""Networks built from group convolutions, for CIFAR-10: ShuffleNet v1 (Zhang et al. 2018) and
ResNeXt (Xie et al. 2017).

A group convolution splits its ``c_in`` input and ``c_out`` output channels into ``g`` groups and
convolves each group only with its own inputs: ``g`` times fewer weights and multiply-adds than
a full convolution of the same shape (``c_in/g * c_out * k*k`` weights). ResNeXt uses it to
aggregate ``cardinality`` parallel paths of the same shape in one 3x3 layer; ShuffleNet v1 uses
it on the 1x1 convolutions, which dominate the cost of a depthwise separable network, and
shuffles the channels between two group convolutions so that each group of the second reads
channels from every group of the first.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_count, check_range, classifier_head, conv_bn
from .shuffle import channel_shuffle


class ShuffleUnit(nn.Module):
    """ShuffleNet v1's unit (Zhang et al. 2018, Fig. 2 b and c): a 1x1 group conv to a quarter
    of the output width (BN, ReLU), a channel shuffle, a 3x3 depthwise conv (BN, no ReLU), a 1x1
    group conv (BN). Stride 1: the input is added. Stride 2: the input, 3x3 average pooled, is
    concatenated, so the residual branch makes only ``c_out - c_in`` channels. ReLU after the
    merge. ``first_grouped`` False: the first 1x1 conv is a full one (its input is the stem's
    few channels, too few to split, as in the paper's stage 2)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int,
                 first_grouped: bool = True):
        super().__init__()
        self.stride, self.groups = stride, groups
        branch = c_out - c_in if stride == 2 else c_out
        bottleneck = c_out // 4
        g1 = groups if first_grouped else 1
        self.reduce = nn.Sequential(*conv_bn(c_in, bottleneck, groups=g1))
        self.shuffle_groups = g1
        self.depthwise = nn.Sequential(*conv_bn(bottleneck, bottleneck, 3, stride,
                                                groups=bottleneck, act=None))
        self.expand = nn.Sequential(*conv_bn(bottleneck, branch, groups=groups, act=None))

    def forward(self, x):
        out = channel_shuffle(self.reduce(x), self.shuffle_groups)
        out = self.expand(self.depthwise(out))
        if self.stride == 2:
            return F.relu(torch.cat((F.avg_pool2d(x, 3, 2, 1), out), dim=1))
        return F.relu(x + out)


class ShuffleNet(nn.Module):
    """ShuffleNet v1 for CIFAR-10: a 3x3 stem of 24 channels, three stages of (4, 8, 4) units,
    global average pooling, one linear layer (Zhang et al. 2018, Table 1).

    Knobs: ``groups`` (g = 1, 2, 3, 4 or 8, the paper's Table 1 columns, which fix the stage
    widths: 144, 200, 240, 272 or 384 channels at stage 2, doubling per stage), ``width``
    (the paper's scale factor s, "ShuffleNet s x": every stage width times s, rounded to a
    multiple of 4 * g so that the bottleneck splits into g groups) and ``repeats``, the units
    per stage ((4, 8, 4) in the paper).

    Adapted for 32 x 32 inputs: the ImageNet stem is a stride-2 3x3 conv and a stride-2 max
    pooling (224 -> 56); here the stem runs at stride 1 and the pooling is removed, so the
    stages' stride-2 first units give 16, 8 and 4 pixels (the paper's 28, 14 and 7).
    Defaults: g = 3 (the paper's choice), ``width`` 0.5 ("ShuffleNet 0.5x", a row of the
    paper's Table 2; at 0.25x the zoo's recipe left it underfitting, its training accuracy as
    low as its test accuracy) and half the paper's units, (2, 4, 2), so that one training run
    stays near the zoo's time budget: on a CPU
    a group convolution takes about as long as the full one of the same shape (its time goes
    to moving the tensors, not to the multiply-adds it saves), so this network is far slower
    per MAC than the others here.
    """

    input_shape = (3, 32, 32)
    STAGE2_WIDTHS: ClassVar[dict] = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
    STEM = 24

    def __init__(self, groups: int = 3, width: float = 0.5, repeats=(2, 4, 2),
                 num_classes: int = 10):
        super().__init__()
        repeats = [int(r) for r in repeats]
        if len(repeats) != 3 or min(repeats) < 1:
            raise ValueError(f"ShuffleNet.repeats={repeats}: allowed is three unit counts >= 1 "
                             f"(the paper's (4, 8, 4))")
        if groups not in self.STAGE2_WIDTHS:
            raise ValueError(f"ShuffleNet.groups={groups}: allowed is one of "
                             f"{sorted(self.STAGE2_WIDTHS)} (the paper's Table 1)")
        check_range("ShuffleNet.width", width, 0, 4)
        self.config = {"groups": groups, "width": width, "repeats": repeats,
                       "num_classes": num_classes}
        step = 4 * groups
        base = max(step, round(self.STAGE2_WIDTHS[groups] * width / step) * step)
        self.stem = nn.Sequential(*conv_bn(3, self.STEM, 3, stride=1))   # ImageNet: 2 + pool
        stages, c_in = [], self.STEM
        for s, count in enumerate(repeats):
            c_out = base * 2 ** s
            units = [ShuffleUnit(c_in, c_out, 2, groups, first_grouped=s > 0)]
            units += [ShuffleUnit(c_out, c_out, 1, groups) for _ in range(count - 1)]
            stages.append(nn.Sequential(*units))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


class ResNeXtBlock(nn.Module):
    """ResNeXt's bottleneck (Xie et al. 2017, Fig. 3 c): a 1x1 conv to ``inner`` channels, a
    3x3 group conv with ``cardinality`` groups (``inner / cardinality`` channels each: the
    paper's d), a 1x1 conv to ``c_out``, each with BN; ReLU after the first two and after the
    addition. The shortcut is the identity, or a 1x1 conv with BN where the shape changes
    (the paper's projection shortcut)."""

    def __init__(self, c_in: int, inner: int, c_out: int, stride: int, cardinality: int):
        super().__init__()
        self.branch = nn.Sequential(*conv_bn(c_in, inner),
                                    *conv_bn(inner, inner, 3, stride, groups=cardinality),
                                    *conv_bn(inner, c_out, act=None))
        self.shortcut = nn.Sequential() if stride == 1 and c_in == c_out else \
            nn.Sequential(*conv_bn(c_in, c_out, 1, stride, act=None))

    def forward(self, x):
        return F.relu(self.branch(x) + self.shortcut(x))


class ResNeXt(nn.Module):
    """ResNeXt for CIFAR-10 (Xie et al. 2017, Section 5.3, the CIFAR "ResNeXt-29" template): a
    3x3 stem conv, three stages of ``blocks`` bottleneck blocks, global average pooling, one
    linear layer. The first block of stages 2 and 3 has stride 2 (in its 3x3 conv); widths
    double from stage to stage.

    Knobs: ``cardinality`` (C, the number of groups of the 3x3 conv), ``group_width`` (d, the
    channels per group at stage 1: the 3x3 conv has C*d channels, doubled per stage), ``width``
    (the stage-1 output channels; the paper keeps 256 for every C x d), ``blocks`` per stage
    (3 in ResNeXt-29), ``stem_channels`` (64 in the paper), ``first_stride`` (below).

    Adapted: the paper's CIFAR network is already for 32 x 32 inputs (a stride-1 stem, stages
    at 32, 16 and 8 pixels), but its smallest, 8x64d, has 34 M parameters and needs GPUs. Here
    ``first_stride`` 2 (default) makes the first block of stage 1 downsample too, so the stages
    see 16, 8 and 4 pixels: on one CPU thread a bottleneck stage at 32 x 32 costs more time than
    the whole rest of the network, its tensors being the largest (``first_stride=1`` gives the
    paper's layout). Defaults C = 8, d = 4, a 48-channel stage 1 (48, 96, 192), 2 blocks per
    stage and a 16-channel stem, so that one training run fits the zoo's time budget.
    """

    input_shape = (3, 32, 32)

    def __init__(self, cardinality: int = 8, group_width: int = 4, width: int = 48,
                 blocks: int = 2, stem_channels: int = 16, first_stride: int = 2,
                 num_classes: int = 10):
        super().__init__()
        for name, value in (("cardinality", cardinality), ("group_width", group_width),
                            ("width", width), ("blocks", blocks),
                            ("stem_channels", stem_channels)):
            check_count(f"ResNeXt.{name}", value)
        if first_stride not in (1, 2):
            raise ValueError(f"ResNeXt.first_stride={first_stride!r}: allowed is 1 (the "
                             f"paper's CIFAR network) or 2")
        self.config = {"cardinality": cardinality, "group_width": group_width, "width": width,
                       "blocks": blocks, "stem_channels": stem_channels,
                       "first_stride": first_stride, "num_classes": num_classes}
        self.stem = nn.Sequential(*conv_bn(3, stem_channels, 3))
        stages, c_in = [], stem_channels
        for s in range(3):
            inner, c_out = cardinality * group_width * 2 ** s, width * 2 ** s
            stages.append(nn.Sequential(*(
                ResNeXtBlock(c_in if b == 0 else c_out, inner, c_out,
                             2 if b == 0 and (s > 0 or first_stride == 2) else 1,
                             cardinality)
                for b in range(blocks))))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))
