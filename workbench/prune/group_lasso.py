"""Structured sparsity learning (Wen et al. 2016): group-lasso training, then removal.
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
