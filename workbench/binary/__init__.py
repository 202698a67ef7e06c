"""Section C of the catalogue: binary and ternary networks.

    core.py         sign and its straight-through gradients, least-squares scales, SignActivation
    weights.py      binary weights: post-training sign, BinaryConnect, loss-aware binarization
    bases.py        several binary tensors per weight: ABC-Net bases, network sketching
    ebp.py          expectation backpropagation of a binary-weight MLP
    activations.py  binary weights and activations: BNN, XNOR-Net / BWN, HORQ
    bireal.py       Bi-Real Net shortcuts; pattern binarization (SEP-Net)
    lbc.py          local binary convolution
    ternary.py      TWN and TTQ
    kernels.py      our bit-packed XNOR-popcount kernel (numpy)
    runtime.py      the same layer in OpenVINO's 1-bit BinaryConvolution
"""
from . import activations, bases, bireal, core, ebp, lbc, ternary, weights  # noqa: F401

METHODS = (weights.METHODS + bases.METHODS + ebp.METHODS + activations.METHODS + bireal.METHODS
           + lbc.METHODS + ternary.METHODS)
