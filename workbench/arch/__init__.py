"""Section F, compact architectures (densifying): each network of ``workbench/models`` as a
method (``networks``), and the regularizers that change what a network's activations cost
(``regularizers``)."""
from . import networks, regularizers
from .networks import CompactNetwork, zoo_defaults
from .regularizers import activation_macs

METHODS = networks.METHODS + regularizers.METHODS

__all__ = ["METHODS", "CompactNetwork", "activation_macs", "networks", "regularizers",
           "zoo_defaults"]
