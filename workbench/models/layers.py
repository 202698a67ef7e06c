"""Building blocks shared by the zoo's networks.

These helpers only assemble standard torch modules, in the order the networks always made them:
the modules they return, their state_dict keys and the order in which their weights are
initialized (which, after ``torch.manual_seed``, gives a network its weights) are exactly those
of the code they replaced, so the zoo's checkpoints load unchanged.
"""
from __future__ import annotations

from torch import nn


def classifier_head(c_in: int, classes: int) -> nn.Sequential:
    """Global average pooling, flatten, one linear layer from ``c_in`` features to ``classes``
    scores: the head of every zoo CNN that ends in a fully connected layer."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes))
