"""Networks of Inception modules, for CIFAR-10: Inception v3 (Szegedy et al. 2016, "Rethinking
the Inception Architecture").

An Inception module runs several small branches side by side on one input (a 1x1 conv, 1x1
convs followed by 3x3 ones, a pooling followed by a 1x1 conv) and concatenates what they make:
the 1x1 convs first cut the channels, so the wider kernels see few inputs. Inception v3
factorizes the wide kernels: a 5x5 conv becomes two 3x3 convs (same receptive field, 18 weights
per channel pair instead of 25), and an n x n conv becomes a 1 x n conv followed by an n x 1
conv (2n weights instead of n*n: 14 instead of 49 for the paper's n = 7).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import check_range, classifier_head, conv_bn, divisible


def chain(c_in: int, layers) -> nn.Sequential:
    """Convs one after another: ``layers`` holds (c_out, kernel) or (c_out, kernel, stride)."""
    modules = []
    for c_out, kernel, *stride in layers:
        modules.append(nn.Sequential(*conv_bn(c_in, c_out, kernel, *stride)))
        c_in = c_out
    return nn.Sequential(*modules)


def pool_branch(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 average pooling (stride 1) and a 1x1 conv: the module's pooling branch."""
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False),
                         nn.Sequential(*conv_bn(c_in, c_out)))


class Concat(nn.Module):
    """Branches run side by side on one input; their outputs concatenated along channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def out_channels(module: nn.Module, c_in: int) -> int:
    """Channels a module built here makes from ``c_in`` (poolings keep their input's)."""
    if isinstance(module, Concat):
        return sum(out_channels(branch, c_in) for branch in module.branches)
    if isinstance(module, nn.Sequential):
        for child in module:
            c_in = out_channels(child, c_in)
        return c_in
    return module.out_channels if isinstance(module, nn.Conv2d) else c_in


def inception_a(c_in: int, w) -> Concat:
    """Fig. 5: 1x1 | 1x1, 3x3 | 1x1, 3x3, 3x3 (a factorized 5x5) | pool, 1x1."""
    return Concat(chain(c_in, [(w(64), 1)]), chain(c_in, [(w(48), 1), (w(64), 3)]),
                  chain(c_in, [(w(64), 1), (w(96), 3), (w(96), 3)]), pool_branch(c_in, w(64)))


def inception_b(c_in: int, w, n: int) -> Concat:
    """Fig. 6: 1x1 | 1x1, 1xn, nx1 | 1x1, nx1, 1xn, nx1, 1xn | pool, 1x1."""
    mid = w(160)
    return Concat(chain(c_in, [(w(192), 1)]),
                  chain(c_in, [(mid, 1), (mid, (1, n)), (w(192), (n, 1))]),
                  chain(c_in, [(mid, 1), (mid, (n, 1)), (mid, (1, n)), (mid, (n, 1)),
                               (w(192), (1, n))]),
                  pool_branch(c_in, w(192)))


def inception_c(c_in: int, w) -> Concat:
    """Fig. 7: 1x1 | 1x1, then 1x3 and 3x1 side by side | 1x1, 3x3, then 1x3 and 3x1 side by
    side | pool, 1x1 (the expanded filter bank of the coarsest grid)."""
    def fork(c):
        return Concat(nn.Sequential(*conv_bn(c, w(384), (1, 3))),
                      nn.Sequential(*conv_bn(c, w(384), (3, 1))))
    return Concat(chain(c_in, [(w(320), 1)]),
                  nn.Sequential(nn.Sequential(*conv_bn(c_in, w(384))), fork(w(384))),
                  nn.Sequential(chain(c_in, [(w(448), 1), (w(384), 3)]), fork(w(384))),
                  pool_branch(c_in, w(192)))


def reduction_a(c_in: int, w) -> Concat:
    """Fig. 10 (grid 35 -> 17 in the paper): 3x3 stride 2 | 1x1, 3x3, 3x3 stride 2 | max pool."""
    return Concat(chain(c_in, [(w(384), 3, 2)]),
                  chain(c_in, [(w(64), 1), (w(96), 3), (w(96), 3, 2)]),
                  nn.MaxPool2d(3, 2, 1))


def reduction_b(c_in: int, w, n: int) -> Concat:
    """Grid 17 -> 8 in the paper: 1x1, 3x3 stride 2 | 1x1, 1xn, nx1, 3x3 stride 2 | max pool."""
    return Concat(chain(c_in, [(w(192), 1), (w(320), 3, 2)]),
                  chain(c_in, [(w(192), 1), (w(192), (1, n)), (w(192), (n, 1)),
                               (w(192), 3, 2)]),
                  nn.MaxPool2d(3, 2, 1))


class Inception(nn.Module):
    """Inception v3 for CIFAR-10: a stem, ``blocks[0]`` Inception-A modules (16 x 16 maps), a
    reduction, ``blocks[1]`` Inception-B modules with n x 1 / 1 x n factorized convs (8 x 8), a
    reduction, ``blocks[2]`` Inception-C modules (4 x 4), global average pooling, one linear
    layer (Szegedy et al. 2016, Table 1 and Figs. 5, 6, 7, 10).

    Knobs: ``width`` multiplies every branch width of the paper (64 ... 448; rounded to
    multiples of 8); ``n`` is the factorized kernel length of the B modules (7 in the paper);
    ``blocks`` the number of A, B and C modules (3, 4, 2 in the paper).

    Adapted for 32 x 32 inputs: the ImageNet stem is seven convs and two poolings that take
    299 x 299 images to 35 x 35 maps of 192 channels; here it keeps the stem's shape (few
    channels at full resolution, 192 after the pooling) in three layers: a 3x3 conv to
    ``64 * width`` channels at stride 1, a 3x3 stride-2 max pooling, a 3x3 conv to
    ``192 * width``, so the A, B and C modules see 16, 8 and 4 pixels (the paper's 35, 17 and
    8). Default ``n`` 3 instead of 7: the B modules see 8 x 8 maps, and n = 7 on a 17 x 17 grid
    spans about what n = 3 spans on 8 x 8. No auxiliary classifier and no label smoothing (the
    zoo's recipe is the same for every network). Defaults ``width`` 0.2 and ``blocks``
    (1, 1, 1), so that one training run fits the zoo's time budget.
    """

    input_shape = (3, 32, 32)

    def __init__(self, width: float = 0.2, n: int = 3, blocks=(1, 1, 1),
                 num_classes: int = 10):
        super().__init__()
        check_range("Inception.width", width, 0, 4)
        if not isinstance(n, int) or n < 1 or n % 2 == 0:
            raise ValueError(f"Inception.n={n!r}: allowed is an odd integer >= 1 (the "
                             f"factorized 1 x n / n x 1 kernels keep the map size)")
        blocks = [int(b) for b in blocks]
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"Inception.blocks={blocks}: allowed is three counts >= 1 (the A, "
                             f"B and C modules)")
        self.config = {"width": width, "n": n, "blocks": blocks, "num_classes": num_classes}

        def w(channels):
            return divisible(channels * width)

        # ImageNet: seven layers and two poolings (299 -> 35); here 32 -> 16
        layers = [nn.Sequential(*conv_bn(3, w(64), 3)), nn.MaxPool2d(3, 2, 1),
                  nn.Sequential(*conv_bn(w(64), w(192), 3))]
        c_in = w(192)
        for stage, count in enumerate(blocks):
            for _ in range(count):
                module = (inception_a(c_in, w), inception_b(c_in, w, n),
                          inception_c(c_in, w))[stage]
                layers.append(module)
                c_in = out_channels(module, c_in)
            if stage < 2:
                reduction = reduction_a(c_in, w) if stage == 0 else reduction_b(c_in, w, n)
                layers.append(reduction)
                c_in = out_channels(reduction, c_in)
        self.features = nn.Sequential(*layers)
        self.head = classifier_head(c_in, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
