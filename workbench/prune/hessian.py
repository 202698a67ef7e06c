"""Second-order pruning: Optimal Brain Damage (LeCun et al. 1990) and Optimal Brain Surgeon
(Hassibi & Stork 1993).
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
