"""Bi-Real Net (a real-valued shortcut around every binary convolution) and pattern
binarization (SEP-Net: binary kxk filters, float 1x1 convolutions).

Bi-Real Net (Liu et al. 2018) turns each basic block of a ResNet (two 3x3 convolutions, one
shortcut) into two "1-layer-per-block" units::

    out = BN(binary_conv(sign(x))) + x

so the real-valued activation before every sign reaches the next unit through a
parameter-free shortcut. Three training details of the paper are here:

- the sign of the activations has the ApproxSign gradient, 2 - 2|x| inside [-1, 1], 0 outside
  (``core.SignActivation("approx")``);
- binary weights are ``mean|W| * sign(W)`` per output channel with the *magnitude-aware*
  gradient: dL/dW = mean|W| * dL/dWb * 1{|W| <= 1}. The paper writes it with "~": the scale's
  own derivative is dropped (the authors' PyTorch code even drops the factor mean|W|; we keep
  the paper's form). See ``magnitude_aware_sign``;
- the first convolution and the last linear layer stay float, as in the paper.

The paper's third detail, pre-training the float network with clip(-1, 1) instead of ReLU,
is not redone: we start from the zoo's ReLU checkpoint. The stem's ReLU is removed (the
paper's stem has none): sign(ReLU(x)) would be +1 everywhere, since sign(0) = +1 here.

Where a unit changes shape (stride 2, more channels) its shortcut is parameter-free: 2x2
average pooling (Bi-Real's downsampling pools too) then zero channels, as ResNet-20's own
option-A shortcut; Bi-Real-18 adds a real 1x1 convolution there, ResNet-20 has none and we
keep its parameter count. In a channel-pruned ResNet (``inner`` channels between the two
convolutions, fewer than the block's input or output) a unit may also lose channels: its
shortcut then keeps the middle ``inner`` channels (truncation, the inverse of the centred zero
padding), so every binary convolution still has a real-valued shortcut. ``shortcuts=False``
gives the same binary network with ResNet's shortcut every two convolutions only: the 1-bit
ResNet the paper compares against.

Pattern binarization (SEP-Net, Li et al. 2017) binarizes only the kxk (k > 1) convolution
filters ("patterns") and keeps the 1x1 convolutions (projections) and the linear layers in
float; then fine-tunes. The binary filters are ``mean|W| * sign(W)`` per output channel with
the hard-tanh straight-through gradient (our choice: the paper does not spell out its
binarizer's gradient). The first convolution stays float by default (``keep_first``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..method import Flag, Tags, TrainingMethod, knob
from ..models import register_module, replace_module
from ..models.cifar import BasicBlock
from ..quantize.core import fold, quantizable_layers, quantize_weights
from ..train import seeded
from .core import BinaryWeight, PassThrough, SignActivation, binary_weight

# ------------------------------------------------------------------ functions on tensors

def magnitude_aware_sign(weight: torch.Tensor) -> torch.Tensor:
    """``mean|W| * sign(W)`` per output channel (forward); backward, Bi-Real's magnitude-aware
    gradient ``mean|W| * g * 1{|W| <= 1}`` (the scale held constant, as the paper's
    approximation does): ``core.binary_weight``'s "magnitude" gradient."""
    return binary_weight(weight, "magnitude")


def scaled_sign_ste(weight: torch.Tensor) -> torch.Tensor:
    """``mean|W| * sign(W)`` per output channel; backward, the hard-tanh straight-through
    gradient ``g * 1{|W| <= 1}`` (BinaryConnect / BNN style, independent of the scale)."""
    return binary_weight(weight, "htanh")


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """``x`` with ``channels`` channels, without parameters: zero channels added evenly on both
    sides when more (ResNet's option A), the middle ``channels`` kept when fewer (the inverse:
    a pruned block's two shortcuts then carry the same middle channels through)."""
    c = x.shape[1]
    if channels > c:
        pad = channels - c
        return F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))
    if channels < c:
        start = (c - channels) // 2
        return x[:, start:start + channels]
    return x


def parameter_free_shortcut(x: torch.Tensor, c_out: int, stride: int) -> torch.Tensor:
    """``x`` shaped like a unit's output: 2x2 average pooling when ``stride`` is 2, then
    ``match_channels`` to ``c_out`` (zero channels appended, or the middle ones kept)."""
    if stride > 1:
        x = F.avg_pool2d(x, stride, stride, ceil_mode=True)
    return match_channels(x, c_out)


# ------------------------------------------------------------------ modules

@register_module
class BiRealBlock(nn.Module):
    """A ResNet basic block with binary activations (ApproxSign) in front of both 3x3
    convolutions and no ReLU. ``shortcuts=True``: a real-valued shortcut around each
    convolution (Bi-Real); False: one shortcut around the pair (a 1-bit ResNet). The
    parameters have the names of ``models.cifar.BasicBlock`` so its weights load as they are.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, inner: int | None = None,
                 shortcuts: bool = True):
        super().__init__()
        inner = inner or c_out
        self.config = {"c_in": c_in, "c_out": c_out, "stride": stride, "inner": inner,
                       "shortcuts": shortcuts}
        self.stride, self.inner, self.c_out, self.shortcuts = stride, inner, c_out, shortcuts
        self.sign1 = SignActivation("approx")
        self.conv1 = nn.Conv2d(c_in, inner, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.sign2 = SignActivation("approx")
        self.conv2 = nn.Conv2d(inner, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def binary_branch(self, x: torch.Tensor, unit: int) -> torch.Tensor:
        """BN(conv(sign(x))) of unit 1 or 2: what the unit adds to its shortcut."""
        sign, conv, bn = (self.sign1, self.conv1, self.bn1) if unit == 1 else \
            (self.sign2, self.conv2, self.bn2)
        return bn(conv(sign(x)))

    def forward(self, x):
        h = self.binary_branch(x, 1)
        if self.shortcuts:
            # every unit has its shortcut, also where a pruned block changes the channel count
            h = h + parameter_free_shortcut(x, self.inner, self.stride)
            return self.binary_branch(h, 2) + match_channels(h, self.c_out)
        return self.binary_branch(h, 2) + parameter_free_shortcut(x, self.c_out, self.stride)


def bireal_blocks(model: nn.Module, shortcuts: bool = True) -> list[str]:
    """Replace every ``BasicBlock`` of ``model`` by a ``BiRealBlock`` carrying its weights,
    and the ReLU modules outside the blocks (the stem's) by ``core.PassThrough``; in place. Names of
    the blocks."""
    names = [n for n, m in model.named_modules() if isinstance(m, BasicBlock)]
    for name in names:
        old = model.get_submodule(name)
        new = BiRealBlock(old.conv1.in_channels, old.conv2.out_channels, old.stride,
                          old.conv1.out_channels, shortcuts)
        new.load_state_dict(old.state_dict())
        replace_module(model, name, new.train(old.training))
    for name in [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]:
        replace_module(model, name, PassThrough())
    return names


# ------------------------------------------------------------------ methods

@dataclass
class BiReal(TrainingMethod):
    """Bi-Real Net on a ResNet: binary weights (magnitude-aware) and binary activations
    (ApproxSign) in every basic block, a real-valued shortcut around each binary convolution
    (``shortcuts=False``: only ResNet's shortcut around each pair, the paper's baseline).
    Float: the first convolution (stem), the BatchNorms and the last linear layer, as in the
    paper. Fine-tuned with SGD, then folded: each binary weight is {-a, +a} per channel."""
    id = "binary.bireal"
    reference = ("Liu, Wu, Luo, Yang, Liu, Cheng 2018, Bi-Real Net: Enhancing the Performance "
                 "of 1-bit CNNs With Improved Representational Capability and Advanced "
                 "Training Algorithm")
    requires = "ResNet basic blocks (two 3x3 convolutions around a shortcut)"
    sliders = {"epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")

    shortcuts: bool = knob(True, Flag())
    # one epoch of the whole training set: more images than bench binary_structure's
    # comparison with and without shortcuts trains on, in a survey cell of minutes
    epochs: int = 1
    lr: float = 0.01
    weight_decay: float = 0.0    # the paper trains binary nets without weight decay

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=1.0)

    def supports(self, model):
        return any(isinstance(m, BasicBlock) for m in model.modules())

    def compress(self, model, data=None):
        with seeded(self.seed):     # new blocks draw their (overwritten) initial weights
            blocks = bireal_blocks(model, self.shortcuts)
        binary = {n for n, _ in quantizable_layers(model) if n.rpartition(".")[0] in blocks}
        quantize_weights(model, lambda name, m: BinaryWeight("magnitude") if name in binary
                         else None)
        if self.epochs:
            self.fit(model, data)
        return fold(model.eval())


@dataclass
class Pattern(TrainingMethod):
    """Pattern binarization (SEP-Net): every kxk convolution with k > 1 gets binary weights
    {-a, +a} per output channel; 1x1 convolutions and linear layers stay float (and are
    fine-tuned with the rest). ``keep_first`` keeps the first convolution float too."""
    id = "binary.pattern"
    reference = ("Li, Wang, Lv, Yang 2017, SEP-Nets: Small and Effective Pattern Networks")
    requires = "a kxk convolution (k > 1) it may binarize"
    sliders = {"epochs": (0, 10, 1)}
    smoke = {"epochs": 1}
    effects = ("fewer_bytes", "different_outputs")

    keep_first: bool = knob(True, Flag())
    epochs: int = 3
    lr: float = 0.01
    weight_decay: float = 0.0

    def tags(self) -> Tags:
        return replace(super().tags(), bits_per_weight=1.0)

    def pattern_layers(self, model: nn.Module) -> list[str]:
        """Names of the convolutions it binarizes: kernel larger than 1x1."""
        layers = quantizable_layers(model)
        first = layers[0][0] if layers and self.keep_first else None
        return [n for n, m in layers if isinstance(m, nn.Conv2d) and n != first
                and max(m.kernel_size) > 1]

    def supports(self, model):
        return bool(self.pattern_layers(model))

    def compress(self, model, data=None):
        chosen = set(self.pattern_layers(model))
        quantize_weights(model, lambda name, m: BinaryWeight("htanh") if name in chosen
                         else None)
        if self.epochs:
            self.fit(model, data)
        return fold(model.eval())


METHODS = (BiReal, Pattern)
