"""Networks made dense with 1x1 convolutions, for CIFAR-10: Network-in-Network (Lin et al. 2013)
and SqueezeNet (Iandola et al. 2016).

A 1x1 convolution is a small fully connected layer applied at every pixel: it mixes channels
for ``c_in * c_out`` MACs per pixel, a ninth of a 3x3 convolution. NiN stacks two of them after
every ordinary convolution (an "mlpconv" layer) and replaces the fully connected head by a
global average of one map per class. SqueezeNet's Fire module first squeezes the channels with
1x1 filters and then expands them with a mix of 1x1 and 3x3 filters, so the expensive 3x3
filters see few input channels.

Both originals have no batch normalization (it did not exist yet, or was left out); here a
BatchNorm follows every convolution but the classifier, so that both train in the zoo's short
20-epoch recipe at learning rate 0.1.
"""
from __future__ import annotations

import torch
from torch import nn

from .groups import ChannelGroup
from .layers import check_range, conv_bn, divisible


class NiN(nn.Module):
    """Network-in-Network for CIFAR-10 (Lin et al. 2013, Section 4.2): three mlpconv layers
    (a 5x5, 5x5 and 3x3 convolution, each followed by two 1x1 convolutions), 3x3 stride-2 max
    and average pooling between them, and a last 1x1 convolution to one map per class, averaged
    over the image (no fully connected layer).

    Knob ``width`` multiplies the paper's channel counts (192, 160, 96, 192, 192, 192, 192,
    192); ``channels`` gives those eight explicitly (a pruned network); ``dropout`` is the
    paper's dropout after the first two mlpconv layers (0.5 there).

    Adapted: the paper's network is already for 32 x 32 CIFAR images, so strides, kernels and
    pooling are the paper's (the pools use Caffe's ceil mode: 32 -> 16 -> 8). Added a
    BatchNorm after every convolution but the last. Widths are rounded to multiples of 8 (the
    paper's are). Default ``width`` 0.25 (48 channels for the paper's 192: 64 k parameters
    instead of 0.97 M, 16.7 M MACs instead of 222 M) and ``dropout`` 0, so that one training
    run fits the zoo's time budget (its 5x5 convolutions on 32 x 32 and 16 x 16 maps make it
    the slowest network here per MAC).
    """

    input_shape = (3, 32, 32)
    PAPER_CHANNELS = (192, 160, 96, 192, 192, 192, 192, 192)
    KERNELS = (5, 1, 1, 5, 1, 1, 3, 1)

    def __init__(self, width: float = 0.25, num_classes: int = 10, channels=None,
                 dropout: float = 0.0):
        super().__init__()
        check_range("NiN.width", width, 0, 4)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout}: allowed is 0 <= dropout < 1")
        channels = list(channels or (divisible(c * width) for c in self.PAPER_CHANNELS))
        if len(channels) != 8:
            raise ValueError(f"channels={channels}: NiN has 8 convolutions before the "
                             f"classifier")
        self.config = {"width": width, "num_classes": num_classes, "channels": channels,
                       "dropout": dropout}
        layers, c_in = [], 3
        for i, (c_out, kernel) in enumerate(zip(channels, self.KERNELS)):
            layers += conv_bn(c_in, c_out, kernel)
            if i in (2, 5):
                pool = nn.MaxPool2d if i == 2 else nn.AvgPool2d
                layers += [pool(3, 2, ceil_mode=True), nn.Dropout(dropout)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, num_classes, 1))        # one map per class
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.features(x))

    def channel_groups(self) -> list[ChannelGroup]:
        """The output channels of each of the 8 convolutions with its BatchNorm, read by the
        next convolution (the last by the classifier convolution)."""
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        return [ChannelGroup(f"features.{i}", f"features.{i + 1}", f"features.{convs[k + 1]}",
                             1, ("channels", k)) for k, i in enumerate(convs[:-1])]


class Fire(nn.Module):
    """SqueezeNet's Fire module: a 1x1 "squeeze" conv to ``squeeze`` channels, then ``e1``
    1x1 and ``e3`` 3x3 "expand" convs side by side, concatenated (each conv with BN, ReLU)."""

    def __init__(self, c_in: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Sequential(*conv_bn(c_in, squeeze))
        self.expand1 = nn.Sequential(*conv_bn(squeeze, e1)) if e1 else None
        self.expand3 = nn.Sequential(*conv_bn(squeeze, e3, 3)) if e3 else None

    def forward(self, x):
        x = self.squeeze(x)
        return torch.cat([b(x) for b in (self.expand1, self.expand3) if b is not None], dim=1)


class SqueezeNet(nn.Module):
    """SqueezeNet for CIFAR-10 (Iandola et al. 2016): a stem conv, Fire modules fire2 ... fire9,
    max pooling, dropout, and a 1x1 conv to one map per class, averaged over the image (no fully
    connected layer).

    Knobs are the paper's metaparameters (Section 5): Fire module ``i`` (0-based) expands to
    ``e_i = base_e + incr_e * (i // freq)`` channels, ``pct_3x3`` of them 3x3, and squeezes to
    ``squeeze_ratio * e_i``; ``pool_after`` says where the three 3x3 stride-2 max poolings sit
    (1 = after the stem conv, n = after fire n): the paper's v1.0 is (1, 4, 8), the "late
    downsampling" that keeps large activation maps for more layers; v1.1 (in the authors'
    repository) pools earlier, (1, 3, 5), for fewer MACs.

    Adapted for 32 x 32 inputs: the ImageNet stem is a 7x7 stride-2 conv with 96 filters
    followed by a pooling (224 -> 55); here it is a 3x3 stride-1 conv with ``stem_channels``
    filters, so the three poolings give 16, 8 and 4 pixels. Defaults: v1.0's squeeze ratio
    0.125, pct_3x3 0.5, freq 2 and pooling positions, with ``base_e`` = ``incr_e`` = 64 and a
    64-channel stem, half the paper's 128 and 96, so that one training run fits the zoo's time
    budget; ``dropout`` 0 (the paper: 0.5 after fire9). A BatchNorm follows every conv but the
    classifier (see the module docstring), and the classifier has no ReLU before the average.
    """

    input_shape = (3, 32, 32)

    def __init__(self, base_e: int = 64, incr_e: int = 64, freq: int = 2,
                 pct_3x3: float = 0.5, squeeze_ratio: float = 0.125, pool_after=(1, 4, 8),
                 stem_channels: int = 64, dropout: float = 0.0, num_classes: int = 10):
        super().__init__()
        pool_after = [int(p) for p in pool_after]
        if base_e < 1 or incr_e < 0 or freq < 1 or stem_channels < 1:
            raise ValueError(f"base_e={base_e}, incr_e={incr_e}, freq={freq}, stem_channels="
                             f"{stem_channels}: need base_e >= 1, incr_e >= 0, freq >= 1, "
                             f"stem_channels >= 1")
        if not 0 <= pct_3x3 <= 1:
            raise ValueError(f"pct_3x3={pct_3x3}: allowed is 0 <= pct_3x3 <= 1")
        check_range("SqueezeNet.squeeze_ratio", squeeze_ratio, 0, 1)
        if not all(1 <= p <= 9 for p in pool_after) or len(set(pool_after)) != len(pool_after):
            raise ValueError(f"pool_after={pool_after}: distinct positions from 1 (after the "
                             f"stem conv) to 9 (after fire9)")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout}: allowed is 0 <= dropout < 1")
        self.config = {"base_e": base_e, "incr_e": incr_e, "freq": freq, "pct_3x3": pct_3x3,
                       "squeeze_ratio": squeeze_ratio, "pool_after": pool_after,
                       "stem_channels": stem_channels, "dropout": dropout,
                       "num_classes": num_classes}
        pool = lambda: nn.MaxPool2d(3, 2, padding=1)                 # 32 -> 16 -> 8 -> 4
        layers = conv_bn(3, stem_channels, 3)                    # ImageNet: 7x7 stride 2
        layers += [pool()] if 1 in pool_after else []
        c_in = stem_channels
        for i in range(8):                                            # fire2 ... fire9
            e = base_e + incr_e * (i // freq)
            e3 = round(e * pct_3x3)
            layers.append(Fire(c_in, max(1, round(e * squeeze_ratio)), e - e3, e3))
            layers += [pool()] if i + 2 in pool_after else []
            c_in = e
        layers += [nn.Dropout(dropout), nn.Conv2d(c_in, num_classes, 1)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.features(x))
