"""Pruning (catalogue section A)."""
from .magnitude import Magnitude, magnitude_mask, prunable_layers

__all__ = ["Magnitude", "magnitude_mask", "prunable_layers"]
