"""Quantization and weight sharing (catalogue section B): one module per group of methods,
each ending with the tuple ``METHODS`` of the classes it registers."""
from . import core, grad8, int8, kmeans, lowbit, multibit, pow2, product, scalar
from .core import SharedWeights, fold, quantizable_layers, quantize_weights, round_ste

METHODS = (scalar.METHODS + int8.METHODS + kmeans.METHODS + product.METHODS + pow2.METHODS
           + lowbit.METHODS + multibit.METHODS + grad8.METHODS)

__all__ = ["METHODS", "SharedWeights", "fold", "quantizable_layers", "quantize_weights",
           "round_ste"]
