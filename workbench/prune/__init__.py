"""Pruning (catalogue section A): one module per group of methods, each ending with the tuple
``METHODS`` of the classes it registers."""
from . import (channels, dns, granularity, group_lasso, hessian, iterative, magnitude,
               reconstruct, winograd)
from .magnitude import Magnitude, layer_sensitivity, magnitude_mask, prunable_layers

METHODS = (magnitude.METHODS + iterative.METHODS + dns.METHODS + hessian.METHODS
           + granularity.METHODS + channels.METHODS + group_lasso.METHODS + reconstruct.METHODS
           + winograd.METHODS)

__all__ = ["METHODS", "Magnitude", "layer_sensitivity", "magnitude_mask", "prunable_layers"]
