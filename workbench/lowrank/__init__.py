"""Section D of the catalogue: fewer numbers for the same layer.

- ``matrix``: truncated SVD of dense layers, separable filters, channel decomposition
  (``lowrank.svd``, ``lowrank.separable``, ``lowrank.channel``);
- ``tensor``: Tucker-2, CP and block-term decompositions of convolution kernels
  (``lowrank.tucker``, ``lowrank.cp``, ``lowrank.block_term``);
- ``sparse``: a basis change plus sparse kernels (``lowrank.sparse_decomp``);
- ``approx``: loop perforation and CNNPack's frequency domain (``approx.perforation``,
  ``approx.frequency``);
- ``hashing``: HashedNets and FunHashNN (``hash.hashednets``, ``hash.funhash``);
- ``circulant``: circulant projections with the FFT (``approx.circulant``).

Every factorized or replaced layer is a registered module with its constructor arguments in
``config``, so the codec stores the factors and ``measure`` counts what really runs.
"""
from . import approx, circulant, hashing, matrix, sparse, tensor

METHODS = (matrix.METHODS + tensor.METHODS + sparse.METHODS + approx.METHODS + hashing.METHODS
           + circulant.METHODS)

__all__ = ["METHODS", "approx", "circulant", "hashing", "matrix", "sparse", "tensor"]
