"""Dynamic Network Surgery (Guo et al. 2016): masks updated during training, with splicing.
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
