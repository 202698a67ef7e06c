"""Quantization and weight sharing (catalogue section B): one module per group of methods,
each ending with the tuple ``METHODS`` of the classes it registers."""
from . import core
from .core import SharedWeights, fold, quantizable_layers, quantize_weights, round_ste

METHODS = ()

__all__ = ["METHODS", "SharedWeights", "fold", "quantizable_layers", "quantize_weights",
           "round_ste"]
