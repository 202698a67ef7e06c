"""Neuron and channel pruning that returns a physically smaller network: APoZ, low-activity
elimination, data-free merging, L1-norm filters, layer removal.
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
