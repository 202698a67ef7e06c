"""workbench: every method of a survey of neural-network compression, on MNIST and CIFAR-10.

``METHODS`` maps each implemented catalogue id to its method class (a compressor: a network
in, a network out); ``ACCOUNTS`` maps the ids that measure a network without changing it
(``cost.energy``); ``IMPLEMENTED`` is both. ``catalogue.CATALOGUE`` lists every id of the
survey, so what is still missing can be shown.
"""
from . import (arch, binary, codec, cost, data, distill, encode, lowrank, measure, models,
               pipeline, prune, quantize, search, train, zoo)
from .measure import Report, report
from .method import Method
from .prune import Magnitude

__version__ = "0.1.0"

METHODS: dict[str, type[Method]] = {
    cls.id: cls for cls in prune.METHODS + quantize.METHODS + binary.METHODS + lowrank.METHODS
    + distill.METHODS + arch.METHODS + encode.METHODS + pipeline.METHODS + search.METHODS}
ACCOUNTS: dict[str, type] = {cls.id: cls for cls in cost.ACCOUNTS}
IMPLEMENTED: dict[str, type] = {**METHODS, **ACCOUNTS}

__all__ = ["ACCOUNTS", "IMPLEMENTED", "METHODS", "Magnitude", "Method", "Report", "arch", "binary", "codec", "cost", "data", "distill",
           "encode", "lowrank", "measure", "models", "pipeline", "prune", "quantize", "report",
           "search", "train", "zoo"]
