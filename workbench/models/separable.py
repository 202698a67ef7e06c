"""Networks built from convolutions split along channels or space, for CIFAR-10: Xception
(Chollet 2017), EffNet (Freeman et al. 2018) and SEP-Net (Li et al. 2017).

- Xception: a depthwise separable convolution (a 3x3 conv per channel, then a 1x1 conv across
  channels) in place of every Inception module, with residual shortcuts.
- EffNet: the 3x3 depthwise conv split again, in space: a 1x3 depthwise conv, a max pooling
  along one axis, a 3x1 depthwise conv, then a 2x1 conv that strides along the other axis, so
  the second half of the block already works on half the pixels.
- SEP-Net: a pattern residual block adds what a 1x1 conv makes of the input (a projection) to
  what a group-wise 3x3 conv makes of it (the spatial patterns).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .layers import check_count, check_range, classifier_head, conv_bn, divisible


class SeparableConv(nn.Sequential):
    """Xception's separable convolution: a 3x3 depthwise conv then a 1x1 conv, with no
    activation in between (the paper's Fig. 10 finds none works best), then BatchNorm."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_in, 3, 1, 1, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class XceptionBlock(nn.Module):
    """``convs`` times (ReLU, separable conv) on the residual branch, then a 3x3 stride-2 max
    pooling if ``stride`` is 2; the shortcut is the identity, or a 1x1 conv (with the stride)
    and BatchNorm where the shape changes (Chollet 2017, Fig. 5)."""

    def __init__(self, c_in: int, widths, stride: int, relu_first: bool = True):
        super().__init__()
        layers, c = [], c_in
        for i, c_out in enumerate(widths):
            if i or relu_first:             # a fresh ReLU: the input also feeds the shortcut
                layers.append(nn.ReLU(inplace=i > 0))
            layers.append(SeparableConv(c, c_out))
            c = c_out
        if stride == 2:
            layers.append(nn.MaxPool2d(3, 2, 1))
        self.branch = nn.Sequential(*layers)
        self.shortcut = nn.Sequential() if stride == 1 and c_in == c else \
            nn.Sequential(*conv_bn(c_in, c, 1, stride, act=None))

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception for CIFAR-10 (Chollet 2017, Fig. 5): entry flow (two convs and three blocks of
    128, 256 and 728 channels), middle flow (``middle_blocks`` blocks of three 728-channel
    separable convs with identity shortcuts), exit flow (a 728/1024 block, separable convs of
    1536 and 2048 channels), global average pooling, one linear layer.

    Knobs: ``width`` multiplies every channel count (rounded to multiples of 8);
    ``middle_blocks`` is 8 in the paper.

    Adapted for 32 x 32 inputs: the ImageNet network downsamples 32 times (299 -> 10): a
    stride-2 stem conv, and a stride-2 pooling in each of the four blocks with a 1x1 shortcut.
    Here the stem runs at stride 1 and the last entry block (728) has no pooling, so the stem
    sees 32 x 32 maps, the 128 and 256 blocks give 16 and 8 pixels, the middle flow runs on
    8 x 8 (on 19 x 19 in the paper) and the exit block gives 4. Defaults ``width`` 0.125 and
    ``middle_blocks`` 3, so that one training run fits the zoo's time budget.
    """

    input_shape = (3, 32, 32)

    def __init__(self, width: float = 0.125, middle_blocks: int = 3, num_classes: int = 10):
        super().__init__()
        check_range("Xception.width", width, 0, 4)
        check_count("Xception.middle_blocks", middle_blocks, 0, note="8 in the paper")
        self.config = {"width": width, "middle_blocks": middle_blocks,
                       "num_classes": num_classes}

        def w(channels):
            return divisible(channels * width)

        layers = [*conv_bn(3, w(32), 3, stride=1), *conv_bn(w(32), w(64), 3)]  # ImageNet: s2
        layers.append(XceptionBlock(w(64), (w(128), w(128)), 2, relu_first=False))
        layers.append(XceptionBlock(w(128), (w(256), w(256)), 2))
        layers.append(XceptionBlock(w(256), (w(728), w(728)), 1))                 # was 2
        layers += [XceptionBlock(w(728), (w(728),) * 3, 1) for _ in range(middle_blocks)]
        layers.append(XceptionBlock(w(728), (w(728), w(1024)), 2))
        layers += [SeparableConv(w(1024), w(1536)), nn.ReLU(inplace=True),
                   SeparableConv(w(1536), w(2048)), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(w(2048), num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class EffNetBlock(nn.Module):
    """EffNet's block (Freeman et al. 2018, Fig. 1): a 1x1 conv to ``c_out // 2`` channels, a
    1x3 depthwise conv, then, downsampling (``stride`` 2): a 2x1 max pooling (rows halved), a
    3x1 depthwise conv and a 1x2 conv with stride (1, 2) to ``c_out`` (columns halved); each
    conv with BatchNorm and ReLU. At stride 1 (our addition, to add depth between the paper's
    three blocks) there is no pooling and the last conv is a 1x1 one."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        mid = max(1, c_out // 2)
        layers = [*conv_bn(c_in, mid), *conv_bn(mid, mid, (1, 3), groups=mid)]
        if stride == 2:
            layers.append(nn.MaxPool2d((2, 1), (2, 1)))
        layers += conv_bn(mid, mid, (3, 1), groups=mid)
        if stride == 2:     # an unpadded 1x2 conv that strides along the columns
            layers += [nn.Conv2d(mid, c_out, (1, 2), (1, 2), bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        else:
            layers += conv_bn(mid, c_out)
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return self.block(x)


class EffNet(nn.Module):
    """EffNet for CIFAR-10 (Freeman et al. 2018): three stages, each an EffNet block that
    halves the map and doubles the channels (the paper's CIFAR network: 64, 128, 256) followed
    by ``blocks - 1`` stride-1 blocks, global average pooling, one linear layer.

    Knobs: ``width`` multiplies the channel counts (rounded to multiples of 8); ``blocks`` per
    stage (1 in the paper).

    Adapted: the paper's network is already for 32 x 32 images (three downsampling blocks, 32
    -> 4), so strides are the paper's. Added: a 3x3 stem conv with ``32 * width`` channels
    (the paper's first block starts with a 1x1 conv on the three colour channels), stride-1
    blocks to deepen each stage (three blocks make a shallow network for the issue's 85%),
    and global average pooling instead of a fully connected layer on the 4 x 4 x 256 map.
    Defaults ``width`` 0.75 (48, 96, 192 channels) and ``blocks`` 2, so that one training run
    fits the zoo's time budget.
    """

    input_shape = (3, 32, 32)

    def __init__(self, width: float = 0.75, blocks: int = 2, num_classes: int = 10):
        super().__init__()
        check_range("EffNet.width", width, 0, 4)
        check_count("EffNet.blocks", blocks, note="1 in the paper")
        self.config = {"width": width, "blocks": blocks, "num_classes": num_classes}
        c_in = divisible(32 * width)
        layers = [nn.Sequential(*conv_bn(3, c_in, 3))]
        for channels in (64, 128, 256):
            c_out = divisible(channels * width)
            layers += [EffNetBlock(c_in if b == 0 else c_out, c_out, 2 if b == 0 else 1)
                       for b in range(blocks)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        return self.head(self.features(x))


class PatternResidualBlock(nn.Module):
    """SEP-Net's pattern residual block (Li et al. 2017): the sum of a group-wise 3x3 conv
    (the spatial "patterns", ``groups`` groups) and a 1x1 conv (the "transformed" input), each
    with BatchNorm, then ReLU. Both branches share the stride."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.pattern = nn.Sequential(*conv_bn(c_in, c_out, 3, stride, groups=groups, act=None))
        self.transform = nn.Sequential(*conv_bn(c_in, c_out, 1, stride, act=None))

    def forward(self, x):
        return F.relu(self.pattern(x) + self.transform(x))


class SepNet(nn.Module):
    """A SEP-Net style network for CIFAR-10: a 3x3 stem conv, three stages of ``blocks``
    pattern residual blocks (the first of each with stride 2) of ``width``, ``2 * width`` and
    ``4 * width`` channels, global average pooling, one linear layer.

    Knobs: ``groups`` of the 3x3 group-wise convs (every width must divide by it), ``width``
    (stage-1 channels), ``blocks`` per stage.

    Adapted: only the paper's abstract could be read here, which defines the block (1x1
    transformed maps added to kxk pattern maps) but not its ImageNet network, so the
    arrangement (stem, three stages, widths) is ours, in the shape of the other CIFAR
    networks: a stride-1 stem at 32 x 32, stages at 16, 8 and 4 pixels. The paper's other
    contribution, binarizing the kxk kernels into patterns, is a compression method, not part
    of the architecture, and is left out. Defaults ``groups`` 4, ``width`` 48, ``blocks`` 2,
    so that one training run fits the zoo's time budget.
    """

    input_shape = (3, 32, 32)

    def __init__(self, groups: int = 4, width: int = 48, blocks: int = 2,
                 stem_channels: int = 32, num_classes: int = 10):
        super().__init__()
        for name, value in (("groups", groups), ("width", width), ("blocks", blocks),
                            ("stem_channels", stem_channels)):
            check_count(f"SepNet.{name}", value)
        if width % groups or stem_channels % groups:
            raise ValueError(f"SepNet.groups={groups}: allowed is a divisor of width={width} "
                             f"and stem_channels={stem_channels}")
        self.config = {"groups": groups, "width": width, "blocks": blocks,
                       "stem_channels": stem_channels, "num_classes": num_classes}
        layers, c_in = [nn.Sequential(*conv_bn(3, stem_channels, 3))], stem_channels
        for s in range(3):
            c_out = width * 2 ** s
            layers += [PatternResidualBlock(c_in if b == 0 else c_out, c_out,
                                            2 if b == 0 else 1, groups) for b in range(blocks)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
