"""Vector quantization of weights: product and residual quantization (Gong et al. 2014),
Quantized CNN with error correction and table look-up inference (Wu et al. 2016), and PQ
pulled in by a regularizer while training (Soulie et al. 2016).

Layout (our choice, the same for all four): a layer's weight is viewed as a matrix
``W = weight.reshape(out, -1)`` (conv: out x (in*kh*kw), PyTorch's order, which is also the
order of ``F.unfold``'s patches). The INPUT axis is split into ``M = ceil(n / subvector)``
column blocks (the last zero-padded); in block ``m`` the ``out`` rows are the points that
k-means clusters into ``k`` codewords. Splitting the input axis is what makes Wu et al.'s
look-up inference possible: every output row uses the same input sub-vector of block ``m``, so
its inner products with the ``k`` codewords are computed once and looked up ``out`` times.

A quantized layer keeps its compact form through a ``torch.nn.utils.parametrize``
parametrization, ``ProductQuantized(codes, codebooks)``: ``weight = sum over stages of
codebooks[m, codes[:, m]]`` (one stage for PQ, several for RQ). ``apply()`` returns the model
NOT folded, because the codes + codebooks are the storage (``codec_hint`` gives them to the
codec format "pq": packed ceil(log2 k)-bit codes + fp32 codebooks, or fp16 ones when every
codeword is a float16 number (``codebook_dtype="float16"``); ``encode_pq``/``decode_pq``)
and the input of ``lut_forward``. k-means is scikit-learn's ``KMeans`` (k-means++, one init),
as the field uses it; run on one thread, it is fast for the small sub-spaces (300 points).

Every network with Conv2d / Linear layers is supported. The cost is one k-means per sub-space
of every layer: at the smoke settings (sub-vectors of 25) an untrained VGG-small or ResNet-20
takes 2-10 s (measured, one thread, busy machine); at the defaults (sub-vectors of 4) the CIFAR
nets need thousands of k-means runs, minutes per apply, against ~300-450 for the LeNets.

Modules: ``product_tensors`` (PQ / RQ / Q-CNN / regularizer functions on tensors),
``product_layer`` (the ``ProductQuantized`` layer, format "pq", look-up inference) and this one
(the four methods); every name is importable from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..codec import register_format
from ..hooks import hooked
from ..method import Choice, Int, Method, Real, Tags, TrainingMethod, clone_model, knob
from ..train import Hook
from .core import quantizable_layers
from .product_layer import (ProductQuantized, decode_pq, encode_pq,  # noqa: F401
                            is_product_quantized, lut_forward, lut_linear, lut_op_table, lut_ops,
                            pq_bytes, set_product_quantized)
from .product_tensors import (kmeans, lloyd_update, pq_assign, pq_codebooks,  # noqa: F401
                              pq_penalty, pq_reconstruct, pq_weight, qcnn_refine, rq_stages,
                              subspaces)


def _matrix(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().reshape(module.weight.shape[0], -1)


# ------------------------------------------------------------------ methods

@dataclass
class PQ(Method):
    """Product quantization of every Conv2d / Linear weight (Gong et al. 2014): k-means with
    ``k`` codewords in each sub-space of ``subvector`` columns; ``log2(k)/subvector`` bits of
    codes per weight plus the codebooks. Returned NOT folded (the codes are the storage)."""
    id = "quant.pq"
    reference = ("Gong, Liu, Yang, Bourdev 2014, Compressing Deep Convolutional Networks "
                 "using Vector Quantization")
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1)}
    smoke = {"subvector": 25, "k": 4}
    effects = ("fewer_bytes", "different_outputs")

    subvector: int = knob(4, Int(1, 1 << 16))
    k: int = knob(16, Int(1, 1 << 16))
    # "float16": codewords rounded to fp16, stored in 2 bytes
    codebook_dtype: str = knob("float32", Choice(("float32", "float16")))
    seed: int = knob(0, Int(0, 2**31 - 1))

    def tags(self) -> Tags:
        """Code bits per weight (the codebooks come on top; the file says how much)."""
        return replace(super().tags(), bits_per_weight=math.log2(self.k) / self.subvector)

    def rounded(self, codebooks: torch.Tensor) -> torch.Tensor:
        """The codebooks in the storage precision chosen (fp16 values kept as float32)."""
        return codebooks.half().float() if self.codebook_dtype == "float16" else codebooks

    def quantize(self, W: torch.Tensor, seed: int):
        cb, cd = pq_codebooks(W, self.subvector, self.k, seed)
        return cb[None], cd[None]

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        for i, (_, module) in enumerate(quantizable_layers(model)):
            books, codes = self.quantize(_matrix(module), self.seed + 7919 * i)
            set_product_quantized(module, self.rounded(books), codes)
        return model


@dataclass
class RQ(PQ):
    """Residual quantization (Gong et al. 2014): ``stages`` rounds of PQ, each on the residual
    the earlier ones left; the weight is the sum of the stages' codewords. ``subvector`` = the
    whole row (e.g. 10000) gives Gong et al.'s RQ of full vectors; smaller ones combine RQ with
    PQ. Returned NOT folded."""
    id = "quant.rq"
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1), "stages": (1, 4, 1)}
    smoke = {"subvector": 25, "k": 4, "stages": 2}

    stages: int = knob(2, Int(1, 64))

    def tags(self) -> Tags:
        return replace(super().tags(),
                       bits_per_weight=self.stages * math.log2(self.k) / self.subvector)

    def quantize(self, W: torch.Tensor, seed: int):
        return rq_stages(W, self.subvector, self.k, self.stages, seed)


def layer_rows(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows that multiply ``W^T``: the flat input, or conv patches."""
    if isinstance(module, nn.Linear):
        return inputs.reshape(-1, inputs.shape[-1])
    patches = F.unfold(inputs, module.kernel_size, module.dilation, module.padding,
                       module.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


@torch.no_grad()
def captured_rows(model: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """The rows ``layer_rows`` of layer ``name`` when ``model`` runs on ``x`` (eval mode)."""
    seen = []
    with hooked(model, {name: lambda m, args, _: seen.append(args[0])}, pre=True):
        model(x)
    return layer_rows(model.get_submodule(name), seen[0])


@dataclass
class QCNN(PQ):
    """Quantized CNN (Wu et al. 2016): PQ of each layer, then codebooks and codes refined to
    reproduce the layer's OUTPUT on ``samples`` sampled input rows (``qcnn_refine``).

    ``correction="accumulated"`` (Wu et al.'s multi-layer error correction): layers are done in
    order; a layer's inputs come from the network whose earlier layers are already quantized,
    its targets from the original network, so each layer also corrects the error let in
    before it. ``"layer"``: inputs and targets both from the original network. Inference by
    table look-up: ``lut_forward`` / ``lut_op_table``. Returned NOT folded.

    Our choices: start from plain PQ (k-means on the weights), ``sweeps`` passes over the
    sub-spaces, inputs from ``images`` training images (a conv layer's rows are its im2col
    patches, so its sub-vectors run over (in, kh, kw) rather than over input channels at one
    position as in Wu et al.), biases unchanged. Measured on LeNet-300-100, subvector 8, k 16:
    97.29 % (plain PQ) -> 97.96 % ("layer") -> 98.12 % ("accumulated").
    """
    id = "quant.qcnn"
    reference = ("Wu, Leng, Wang, Hu, Cheng 2016, Quantized Convolutional Neural Networks "
                 "for Mobile Devices")
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1), "sweeps": (0, 10, 1)}
    smoke = {"subvector": 25, "k": 4, "sweeps": 1, "images": 64, "samples": 256}

    correction: str = knob("accumulated", Choice(("accumulated", "layer")))
    sweeps: int = knob(3, Int(0, 100))          # passes of block coordinate descent per layer
    images: int = knob(1000, Int(1, 60000))     # training images run through the networks
    samples: int = knob(4000, Int(1, 1 << 16))  # input rows (patches for a conv) per layer
    damping: float = knob(1e-3, Real(0.0, 1e6))

    def tags(self) -> Tags:
        return replace(super().tags(), needs_data=True)   # samples the layers' inputs

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        original, out = clone_model(model).eval(), model.eval()
        x = data.subset(min(self.images, len(data)), seed=self.seed).tensors()[0]
        g = torch.Generator().manual_seed(self.seed)
        for i, (name, module) in enumerate(quantizable_layers(out)):
            W = _matrix(module)
            inputs = captured_rows(original, name, x)
            pick = torch.randperm(len(inputs), generator=g)[:self.samples]
            target = inputs[pick] @ W.t()
            if self.correction == "accumulated":
                inputs = captured_rows(out, name, x)
            books, codes = pq_codebooks(W, self.subvector, self.k, self.seed + 7919 * i)
            books, codes = qcnn_refine(inputs[pick], target, books, codes, self.sweeps,
                                       self.damping)
            set_product_quantized(module, self.rounded(books)[None], codes[None])
        return out


class PQPull(Hook):
    """Soulie et al.'s regularizer: ``strength * sum_layers ||W - Q(W)||^2`` added to the loss;
    after every step each layer's codebooks take one k-means (Lloyd) step on its weights."""

    def __init__(self, codebooks: dict, strength: float):
        self.codebooks, self.strength = codebooks, strength

    def loss(self, model, x, y, logits, loss):
        for name, books in self.codebooks.items():
            W = model.get_submodule(name).weight
            loss = loss + self.strength * pq_penalty(W.reshape(W.shape[0], -1), books)
        return loss

    def after_step(self, model):
        for name, books in self.codebooks.items():
            self.codebooks[name] = lloyd_update(_matrix(model.get_submodule(name)), books)


@dataclass
class PQReg(PQ, TrainingMethod):
    """PQ learned while training (Soulie et al. 2016): k-means codebooks to start, then
    ``epochs`` of training with the pull toward the nearest codeword (``PQPull``; codebooks
    follow the weights by a Lloyd step after every SGD step), then every sub-vector is
    snapped to its nearest codeword. Our choices where the paper is not in our sources: the
    codeword target is held constant in the gradient (``2 strength (W - Q(W))``), the codebooks
    follow by one Lloyd step per SGD step, cosine schedule, ``weight_decay`` 0 by default (no
    L2). Returned NOT folded."""
    id = "quant.pq_reg"
    reference = ("Soulie, Gripon, Robert 2016, Compression of Deep Neural Networks on the Fly")
    sliders = {"subvector": (1, 16, 1), "k": (2, 256, 1), "strength": (0.0, 2.0, 0.01),
               "epochs": (1, 10, 1)}
    smoke = {"subvector": 25, "k": 4, "epochs": 1}

    # On LeNet-300-100 (subvector 8, k 16, 3 epochs), after the snap: 97.25 % at 0 (train,
    # then snap), 97.61 % at 0.01, 98.21 % at 0.1, 98.32 % at 1; the penalty sums all weights.
    strength: float = knob(1.0, Real(0.0, 1e6))
    epochs: int = 3
    lr: float = 0.01

    def compress(self, model: nn.Module, data=None) -> nn.Module:
        books = {name: pq_codebooks(_matrix(m), self.subvector, self.k, self.seed + 7919 * i)[0]
                 for i, (name, m) in enumerate(quantizable_layers(model))}
        pull = PQPull(books, self.strength)
        if self.epochs:
            self.fit(model, data, hooks=[pull], schedule="cosine")
        for name, module in quantizable_layers(model):
            cb = self.rounded(pull.codebooks[name])
            set_product_quantized(module, cb[None], pq_assign(_matrix(module), cb)[None])
        return model


# The file format of a PQ layer, tried for tensors whose parametrization hints "pq".
register_format("pq", encode_pq, decode_pq, hinted=True)

METHODS = (PQ, RQ, QCNN, PQReg)
