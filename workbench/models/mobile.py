"""Depthwise separable networks for CIFAR-10: MobileNet v1 (Howard et al. 2017) and MobileNet v2
(Sandler et al. 2018).

A depthwise separable convolution is a k x k convolution with one filter per channel
(``groups=channels``) followed by a 1 x 1 convolution that mixes the channels: for ``c_in`` to
``c_out`` channels on an ``h x w`` map it costs ``h*w*c_in*(k*k + c_out)`` multiply-adds
instead of ``h*w*c_in*c_out*k*k``, about ``1/c_out + 1/k**2`` of a full convolution.

Both papers were designed for 224 x 224 ImageNet images, which they shrink 32 times (to 7 x 7)
before the head. A 32 x 32 CIFAR image shrunk 32 times would be one pixel, so here two of the
five stride-2 layers run at stride 1: the stem (so the first blocks see the whole image, as in
ResNet-20 for CIFAR) and the last stride-2 stage (so the last blocks see 4 x 4 maps rather
than 1 x 1). The networks downsample 8 times: 32 -> 16 -> 8 -> 4.
Both keep the papers' knobs (width multiplier; resolution multiplier for v1; expansion ratio
for v2), with default widths of 0.5 to keep one training run to a few hours on one CPU
thread.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .layers import check_range, classifier_head, conv_bn, divisible


def depthwise_separable(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """MobileNet v1's block: 3x3 depthwise conv-BN-ReLU, then 1x1 pointwise conv-BN-ReLU."""
    return nn.Sequential(*conv_bn(c_in, c_in, 3, stride, groups=c_in),
                         *conv_bn(c_in, c_out))


class MobileNet(nn.Module):
    """MobileNet v1 for CIFAR-10: a 3x3 stem and 13 depthwise separable blocks, global average
    pooling and one linear layer (Howard et al. 2017, Table 1).

    Knobs (Section 3.3 of the paper): ``width`` (alpha) multiplies every channel count;
    ``resolution`` (rho) resizes the 32 x 32 input to ``round(32 * rho)`` pixels inside
    ``forward`` (bilinear), so the same data feeds every resolution and the MACs fall as rho**2.

    Adapted for 32 x 32 inputs: the ImageNet stem (224 -> 112) and block 12 (14 -> 7) have
    stride 2; here both run at stride 1, so the stem and block 1 see 32 x 32 maps and the
    stride-2 blocks 2, 4 and 6 give 16, 8 and 4 pixels; blocks 6-13 run on 4 x 4 maps. Default
    width 0.5 (the paper's "0.5 MobileNet"): 0.82 M parameters, 17 M MACs.
    """

    input_shape = (3, 32, 32)
    # (output channels at width 1, stride) of the 13 blocks; ImageNet's block 12 has
    # stride 2, made 1 here (see the class docstring).
    BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 1), (1024, 1))

    def __init__(self, width: float = 0.5, resolution: float = 1.0, num_classes: int = 10):
        super().__init__()
        check_range("MobileNet.width", width, 0, 4)
        check_range("MobileNet.resolution", resolution, 0, 1)
        self.config = {"width": width, "resolution": resolution, "num_classes": num_classes}
        self.size = round(32 * resolution)
        c_in = divisible(32 * width)
        layers = [nn.Sequential(*conv_bn(3, c_in, 3, stride=1))]      # ImageNet: stride 2
        for c_out, stride in self.BLOCKS:
            c_out = divisible(c_out * width)
            layers.append(depthwise_separable(c_in, c_out, stride))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        if self.size != x.shape[-1]:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    """MobileNet v2's block: a 1x1 conv expands ``c_in`` channels ``expansion`` times (ReLU6),
    a 3x3 depthwise conv filters them (ReLU6), and a 1x1 conv projects them to ``c_out`` with
    no activation (the linear bottleneck); the input is added when the shapes allow."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: float):
        super().__init__()
        hidden = round(c_in * expansion)
        layers = conv_bn(c_in, hidden, act=nn.ReLU6) if expansion != 1 else []
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        layers += conv_bn(hidden, c_out, act=None)                    # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNet v2 for CIFAR-10: inverted residual blocks with linear bottlenecks (Sandler et
    al. 2018, Table 2), a 1x1 conv to ``last_channels``, global average pooling, one linear
    layer.

    Knobs: ``width`` multiplies every channel count (rounded to multiples of 8 as in the
    reference code); ``expansion`` (t) is the expansion ratio of every block but the first
    (t = 1, as in the paper); ``last_channels`` is the width of the final 1x1 conv (1280 in the
    paper, kept there for widths below 1, which for 10 classes is most of the parameters).

    Adapted for 32 x 32 inputs: the ImageNet stem (224 -> 112) and the 160-channel stage
    (14 -> 7) have stride 2; here both run at stride 1, so the stem and the first stage see
    32 x 32 maps and the stride-2 stages of 24, 32 and 64 channels give 16, 8 and 4 pixels.
    Defaults: width 0.5 and ``last_channels`` 320 (a fourth of the paper's 1280, for 10
    classes): 0.53 M parameters, 11.5 M MACs.
    """

    input_shape = (3, 32, 32)
    # (expansion, channels at width 1, blocks, stride of the first block) per stage;
    # ImageNet's 160-channel stage has stride 2, made 1 here (see the class docstring).
    STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 1), (6, 320, 1, 1))

    def __init__(self, width: float = 0.5, expansion: float = 6, last_channels: int = 320,
                 num_classes: int = 10):
        super().__init__()
        check_range("MobileNetV2.width", width, 0, 4)
        check_range("MobileNetV2.expansion", expansion, 0, 16)
        if last_channels < 1:
            raise ValueError(f"last_channels={last_channels}: need at least 1")
        self.config = {"width": width, "expansion": expansion, "last_channels": last_channels,
                       "num_classes": num_classes}
        c_in = divisible(32 * width)
        layers = [nn.Sequential(*conv_bn(3, c_in, 3, stride=1, act=nn.ReLU6))]  # ImageNet: 2
        for t, c, n, s in self.STAGES:
            c_out = divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(c_in, c_out, s if i == 0 else 1,
                                               t if t == 1 else expansion))
                c_in = c_out
        layers.append(nn.Sequential(*conv_bn(c_in, last_channels, act=nn.ReLU6)))
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(last_channels, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
