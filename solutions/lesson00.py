"""Solutions to lesson 00's exercises (workbench.exercises.lesson00)."""
import torch
from torch import nn

import workbench as wb


def layer_macs(layer, output_shape):
    """MACs of one Conv2d or Linear layer for one image, from its output shape."""
    if isinstance(layer, nn.Linear):
        return layer.in_features * layer.out_features      # each weight used once
    # each weight (out_channels x in_channels/groups x kh x kw) once per output position
    return layer.weight.numel() * output_shape[1] * output_shape[2]


def compression_ratio(base, compressed):
    """How many times smaller the compressed network's file is (real bytes)."""
    return len(wb.codec.encode(base)) / len(wb.codec.encode(compressed))
