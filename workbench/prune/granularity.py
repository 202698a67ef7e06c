"""Pruning granularity (Mao et al. 2017; Anwar et al. 2015): the same budget pruned by
weight, vector, kernel, group or filter.
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
