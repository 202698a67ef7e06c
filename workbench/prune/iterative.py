"""Fine-grained pruning with retraining: iterative prune + retrain (Han et al. 2015) and
sparsity by L1 regularization.
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
