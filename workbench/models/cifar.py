"""CIFAR-10 networks: a small VGG with a width knob, and ResNet-20 (He et al. 2016)."""
import torch.nn.functional as F
from torch import nn

from .groups import ChannelGroup
from .layers import classifier_head, conv_bn


class VGGSmall(nn.Module):
    """Three VGG stages of two 3x3 conv-BN-ReLU each, max pooling between, a linear head.

    Channels are (w, w, 2w, 2w, 4w, 4w) with w = ``width`` (default 32: 307,946 parameters,
    38.7 M MACs per 32x32 image); ``channels`` gives all six explicitly (a pruned network).
    """

    input_shape = (3, 32, 32)

    def __init__(self, width: int = 32, num_classes: int = 10, channels=None):
        super().__init__()
        w = width
        channels = list(channels or (w, w, 2 * w, 2 * w, 4 * w, 4 * w))
        if len(channels) != 6:
            raise ValueError(f"channels={channels}: VGGSmall has 6 conv layers")
        self.config = {"width": width, "num_classes": num_classes, "channels": channels}
        layers, c_in = [], 3
        for i, c_out in enumerate(channels):
            layers += conv_bn(c_in, c_out, 3)
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 4 * 4, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))

    def channel_groups(self) -> list[ChannelGroup]:
        """Every conv's channels with its BatchNorm, read by the next conv, the last by the
        head (4 x 4 = 16 inputs each after the Flatten)."""
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        groups = []
        for k, i in enumerate(convs):
            last = k == len(convs) - 1
            consumer = "classifier.1" if last else f"features.{convs[k + 1]}"
            groups.append(ChannelGroup(f"features.{i}", f"features.{i + 1}", consumer,
                                       16 if last else 1, ("channels", k)))
        return groups


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut; option A (zero-padded) when the shape changes,
    as in He et al.'s CIFAR experiments, so ResNet-20 has 0.27 M parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, inner: int | None = None):
        super().__init__()
        inner = inner or c_out          # channels between the two convs (prunable)
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def shortcut(self, x):
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-10: 3 stages x 3 basic blocks, widths 16-32-64 (He et al. 2016).

    A pruned network is described by ``blocks_per_stage`` as a list (blocks removed) and
    ``inner``, the channel count between the two convs of every block, in order.
    """

    input_shape = (3, 32, 32)

    def __init__(self, blocks_per_stage=3, width: int = 16, num_classes: int = 10, inner=None):
        super().__init__()
        blocks = [blocks_per_stage] * 3 if isinstance(blocks_per_stage, int) \
            else list(blocks_per_stage)
        widths = (width, 2 * width, 4 * width)
        inner = list(inner or [w for w, n in zip(widths, blocks) for _ in range(n)])
        if len(blocks) != 3 or len(inner) != sum(blocks):
            raise ValueError(f"blocks_per_stage={blocks_per_stage}, inner={inner}: need 3 "
                             "stages and one inner width per block")
        self.config = {"blocks_per_stage": blocks, "width": width, "num_classes": num_classes,
                       "inner": inner}
        self.stem = nn.Sequential(*conv_bn(3, width, 3))
        stages, c_in, widths_left = [], width, iter(inner)
        for i, (c_out, n) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(c_in if j == 0 else c_out, c_out, 2 if (i and j == 0) else 1,
                                next(widths_left)) for j in range(n)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))

    def channel_groups(self) -> list[ChannelGroup]:
        """Only the channels inside each block (conv1 -> conv2): those a block adds to its
        shortcut must keep the shortcut's width (Li et al. 2016)."""
        groups, k = [], 0
        for s, stage in enumerate(self.stages):
            for b in range(len(stage)):
                prefix = f"stages.{s}.{b}"
                groups.append(ChannelGroup(f"{prefix}.conv1", f"{prefix}.bn1",
                                           f"{prefix}.conv2", 1, ("inner", k)))
                k += 1
        return groups
