"""Sparse Winograd convolution (Liu et al. 2018): F(2x2, 3x3), pruned in the Winograd domain.
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
