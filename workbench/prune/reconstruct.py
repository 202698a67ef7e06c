"""Channel pruning with reconstruction of the next layer: LASSO + least squares (He et al.
2017), ThiNet (Luo et al. 2017), discrimination-aware pruning (Zhuang et al. 2018).
"""
from __future__ import annotations

# The methods this module registers in workbench.METHODS (empty until they are done well).
METHODS = ()
