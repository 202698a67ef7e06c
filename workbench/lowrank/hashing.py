"""HashedNets (Chen et al. 2015) and FunHashNN (Shi et al. 2016): a large virtual weight matrix
filled from a few shared values by hash functions.

HashedNets. A Linear layer's virtual weight matrix V (m x n) is never stored. A hash function
h(i, j) puts every entry in one of K buckets, a second one gives it a sign xi(i, j) = +-1, and

    V[i, j] = xi(i, j) * w[h(i, j)]

with w the K real parameters of the layer (K = compression x m x n). The hash functions are
fixed by a seed, so the file holds only w, the bias and the seed (in the module's config): the
bucket and sign maps are recomputed when the layer is built, they are non-persistent buffers.
``V`` is a gather, so autograd sums the gradient of every entry into its bucket:
dL/dw[k] = sum over h(i, j) = k of xi(i, j) dL/dV[i, j], the paper's shared-weight gradient.

The hash is xxHash32 (Collet's XXH32, the family the authors' Torch code uses) of the 8 bytes
(i, j) as little-endian uint32 under a seed, computed in torch int64 with exact 32-bit
arithmetic (products split so that nothing overflows): the same buckets on every platform and
every run. Bucket = hash mod K; sign = lowest bit of the hash under the next seed.

FunHashNN. ``hashes`` hash functions h_1..h_t (and signs) look up t values of the same shared
vector for each entry, and a small reconstruction network g, shared by all entries of the
layer and trained with it, turns them into the weight:

    V[i, j] = g(xi_1 w[h_1(i, j)], ..., xi_t w[h_t(i, j)])

g is a learned linear combination (``hidden=0``) or a one-hidden-layer ReLU perceptron.
With t = 1 and g the identity it is HashedNets. The paper's dual-space hashing and multi-hop
extensions are left out.

What is adapted. Only Linear layers are hashed (the paper's networks are fully connected);
biases stay dense (the authors' code also hashes them; ours are a few hundred values beside
thousands of buckets and are counted in every storage figure). Training: HashedNets trains the
hashed network from scratch; here ``init="scratch"`` draws new random buckets for the hashed
layers only, while the layers left dense (``layers``) keep the weights they came with, and then
the whole network is trained (the paper's setting is ``layers=None`` on a fully connected
network, with no trained layer left to keep); ``init="average"`` instead
starts each bucket at the mean of xi x W over its entries, the least-squares fit of the dense
weights, which needs no training (``epochs=0``) and is what a lesson's slider uses.

Counting. The layer rebuilds V at every call (a gather and m x n sign products for HashedNets,
g on every entry for FunHashNN), then multiplies by it as a dense layer does. ``mac_counts``
reports both, the rebuild shared by the images of the call: macs = m x n per image plus the
rebuild's multiplications / batch. The paper's equation 8 computes the output from w directly,
with as many multiplications as the dense layer; nothing here is faster than the dense layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..method import (LAYER_NAMES, Choice, Int, Real, TrainingMethod, check_layer_names, knob,
                      layers_of)
from ..models import register_module, replace_module
from ..train import seeded

# ------------------------------------------------------------------ the hash (XXH32)

PRIME1, PRIME2, PRIME3, PRIME4, PRIME5 = (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F,
                                          0x165667B1)
MASK32 = 0xFFFFFFFF
GSCALE = 30.0   # FunHashNN: see FunHashLinear (chosen on MNIST, 784-1000-10 at 1/64)


def mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2^32 for x in [0, 2^32) held in int64, without overflow: c is split in two
    16-bit halves, so no product exceeds 2^48."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & MASK32


def rotl32(x: torch.Tensor, r: int) -> torch.Tensor:
    return ((x << r) & MASK32) | (x >> (32 - r))


def xxh32_pair(i: torch.Tensor, j: torch.Tensor, seed: int) -> torch.Tensor:
    """XXH32 of the 8 bytes (uint32 i, uint32 j), little-endian, under ``seed``, element-wise
    (int64 tensors; the result in [0, 2^32)). Equal to ``xxhash.xxh32_intdigest``."""
    h = torch.full_like(i, (seed + PRIME5 + 8) & MASK32)
    for word in (i & MASK32, j & MASK32):
        h = mul32(rotl32((h + mul32(word, PRIME3)) & MASK32, 17), PRIME4)
    h = h ^ (h >> 15)
    h = mul32(h, PRIME2)
    h = h ^ (h >> 13)
    h = mul32(h, PRIME3)
    return h ^ (h >> 16)


def hash_maps(rows: int, cols: int, buckets: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket index h(i, j) = XXH32(i, j; seed) mod buckets (int64, rows x cols) and sign
    xi(i, j) = +-1 from the lowest bit of XXH32(i, j; seed + 1) (float)."""
    i = torch.arange(rows, dtype=torch.int64)[:, None].expand(rows, cols)
    j = torch.arange(cols, dtype=torch.int64)[None, :].expand(rows, cols)
    index = xxh32_pair(i, j, seed) % buckets
    sign = 1.0 - 2.0 * (xxh32_pair(i, j, seed + 1) & 1).float()
    return index, sign


def hashed_matrix(values: torch.Tensor, index: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """V = sign * values[index]: the virtual matrix (autograd sums gradients per bucket)."""
    return sign * values[index]


def bucket_average(weight: torch.Tensor, index: torch.Tensor, sign: torch.Tensor,
                   buckets: int) -> torch.Tensor:
    """The bucket values whose virtual matrix is closest to ``weight`` (least squares): the
    mean of sign * weight over each bucket's entries, 0 for an empty bucket."""
    total = torch.zeros(buckets, dtype=weight.dtype).index_add_(
        0, index.flatten(), (sign * weight).flatten())
    count = torch.bincount(index.flatten(), minlength=buckets).to(weight.dtype)
    return total / count.clamp(min=1)


def bucket_count(compression: float, rows: int, cols: int) -> int:
    """Buckets of a rows x cols layer kept at ``compression`` (at least one)."""
    return max(1, round(compression * rows * cols))


# ------------------------------------------------------------------ modules

def _uses(output: torch.Tensor, out_features: int) -> int:
    return output[0].numel() // out_features


@register_module
class HashedLinear(nn.Module):
    """A Linear layer whose weight is ``V = xi * w[h]`` (HashedNets). The state_dict holds
    ``values`` (the K buckets) and ``bias``; ``seed`` (config) rebuilds the hash maps."""

    def __init__(self, in_features: int, out_features: int, buckets: int, seed: int = 0,
                 bias: bool = True):
        super().__init__()
        self.config = {"in_features": in_features, "out_features": out_features,
                       "buckets": buckets, "seed": seed, "bias": bias}
        self.in_features, self.out_features = in_features, out_features
        self.values = nn.Parameter(torch.zeros(buckets))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        index, sign = hash_maps(out_features, in_features, buckets, seed)
        # recomputed from the seed, never stored: persistent=False keeps them out of the file
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("sign", sign, persistent=False)

    def weight_matrix(self) -> torch.Tensor:
        return hashed_matrix(self.values, self.index, self.sign)

    def forward(self, x):
        return F.linear(x, self.weight_matrix(), self.bias)

    def mac_counts(self, inputs, output) -> dict:
        """Per image: the dense product by V, plus V's m x n sign products shared by the call."""
        uses, batch = _uses(output, self.out_features), output.shape[0]
        dense = self.out_features * self.in_features
        nonzero = int(self.weight_matrix().count_nonzero())
        rebuild = dense // batch
        params = self.values.numel() + (self.bias.numel() if self.bias is not None else 0)
        nonzeros = int(self.values.count_nonzero()) + (
            int(self.bias.count_nonzero()) if self.bias is not None else 0)
        return {"params": params, "nonzeros": nonzeros, "macs": dense * uses + rebuild,
                "effective_macs": nonzero * uses + rebuild}


@register_module
class FunHashLinear(nn.Module):
    """A Linear layer whose weight is ``g(xi_1 w[h_1], ..., xi_t w[h_t])`` (FunHashNN), with g
    a linear combination (``hidden=0``) or a ReLU perceptron with ``hidden`` units, shared by
    the layer. The state_dict holds ``values``, g's parameters and ``bias``."""

    def __init__(self, in_features: int, out_features: int, buckets: int, hashes: int = 3,
                 hidden: int = 4, seed: int = 0, bias: bool = True):
        super().__init__()
        self.config = {"in_features": in_features, "out_features": out_features,
                       "buckets": buckets, "hashes": hashes, "hidden": hidden, "seed": seed,
                       "bias": bias}
        self.in_features, self.out_features = in_features, out_features
        self.values = nn.Parameter(torch.zeros(buckets))
        width = hidden or 1
        self.g_in = nn.Parameter(torch.zeros(width, hashes))     # hidden x t (or 1 x t)
        self.g_in_bias = nn.Parameter(torch.zeros(hidden)) if hidden else None
        self.g_out = nn.Parameter(torch.zeros(hidden)) if hidden else None
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        maps = [hash_maps(out_features, in_features, buckets, seed + 2 * k)
                for k in range(hashes)]
        self.register_buffer("index", torch.stack([m[0] for m in maps]), persistent=False)
        self.register_buffer("sign", torch.stack([m[1] for m in maps]), persistent=False)
        # g is shared by all m x n entries, so its gradient sums m x n terms where a bucket's
        # sums m x n / K: its parameters enter scaled by GSCALE / sqrt(m n), which scales
        # their SGD step (as a change of V) by GSCALE^2 / (m n) (an equalized learning rate).
        self.g_scale = GSCALE / (out_features * in_features) ** 0.5

    def looked_up(self) -> torch.Tensor:
        """(t, m, n): the t signed values each entry fetches."""
        return hashed_matrix(self.values, self.index, self.sign)

    def weight_matrix(self) -> torch.Tensor:
        z, s = self.looked_up(), self.g_scale
        if self.g_out is None:                              # a linear combination
            return torch.einsum("t,tmn->mn", s * self.g_in[0], z)
        h = torch.relu(torch.einsum("ht,tmn->hmn", s * self.g_in, z)
                       + s * self.g_in_bias[:, None, None])
        return torch.einsum("h,hmn->mn", s * self.g_out, h)

    def forward(self, x):
        return F.linear(x, self.weight_matrix(), self.bias)

    def g_params(self) -> int:
        return sum(p.numel() for p in (self.g_in, self.g_in_bias, self.g_out) if p is not None)

    def mac_counts(self, inputs, output) -> dict:
        """Per image: the dense product by V, plus g on every entry shared by the call."""
        uses, batch = _uses(output, self.out_features), output.shape[0]
        dense = self.out_features * self.in_features
        t, hidden = self.g_in.shape[1], self.config["hidden"]
        rebuild = dense * (t + (t * hidden + hidden if hidden else t)) // batch
        tensors = [p for p in (self.values, self.g_in, self.g_in_bias, self.g_out, self.bias)
                   if p is not None]
        nonzero = int(self.weight_matrix().count_nonzero())
        return {"params": sum(p.numel() for p in tensors),
                "nonzeros": sum(int(p.count_nonzero()) for p in tensors),
                "macs": dense * uses + rebuild, "effective_macs": nonzero * uses + rebuild}


# ------------------------------------------------------------------ building the layers

def _fresh_bias(layer: nn.Module, fan_in: int) -> None:
    if layer.bias is not None:
        bound = fan_in ** -0.5
        nn.init.uniform_(layer.bias, -bound, bound)


def hashed_from_linear(linear: nn.Linear, buckets: int, seed: int, init: str) -> HashedLinear:
    """A HashedLinear for ``linear``: buckets fitted to its weights (``"average"``) or drawn
    as nn.Linear draws its weights (``"scratch"``: uniform within 1/sqrt(fan_in))."""
    layer = HashedLinear(linear.in_features, linear.out_features, buckets, seed,
                         linear.bias is not None)
    with torch.no_grad():
        if init == "average":
            layer.values.copy_(bucket_average(linear.weight.detach(), layer.index, layer.sign,
                                              buckets))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.detach())
        else:
            bound = linear.in_features ** -0.5
            nn.init.uniform_(layer.values, -bound, bound)
            _fresh_bias(layer, linear.in_features)
    return layer


def funhash_from_linear(linear: nn.Linear, buckets: int, hashes: int, hidden: int,
                        seed: int) -> FunHashLinear:
    """A freshly initialised FunHashLinear for ``linear``'s shape: g drawn at random, then the
    bucket values scaled so that V has the spread of nn.Linear's initial weights (g is
    positively homogeneous: scaling the values scales V)."""
    layer = FunHashLinear(linear.in_features, linear.out_features, buckets, hashes, hidden,
                          seed, linear.bias is not None)
    with torch.no_grad():
        nn.init.normal_(layer.g_in, 0.0, hashes ** -0.5 / layer.g_scale)
        if hidden:
            nn.init.normal_(layer.g_out, 0.0, hidden ** -0.5 / layer.g_scale)
        nn.init.uniform_(layer.values, -1.0, 1.0)
        target = (3 * linear.in_features) ** -0.5              # std of U(-b, b), b = 1/sqrt(n)
        layer.values.mul_(target / layer.weight_matrix().std().clamp(min=1e-12))
        _fresh_bias(layer, linear.in_features)
    return layer


# ------------------------------------------------------------------ methods



@dataclass
class HashedNets(TrainingMethod):
    """Every chosen Linear layer becomes a HashedLinear keeping ``compression`` of its weights
    as shared buckets (xxHash32 bucket and sign hashes); then the network is trained
    (``epochs``). ``init="scratch"`` (the paper): new random buckets for the hashed layers
    (layers left dense keep their weights), then trained;
    ``"average"``: each bucket the mean of its signed dense weights (least squares), which
    needs no training. Layer k gets hash seed ``seed + 16 k``."""
    id = "hash.hashednets"
    reference = ("Chen, Wilson, Tyree, Weinberger, Chen 2015, Compressing Neural Networks "
                 "with the Hashing Trick")
    requires = "Linear layers"
    sliders = {"compression": (1 / 64, 1 / 2, 1 / 64)}
    smoke = {"compression": 1 / 8, "epochs": 1}
    effects = ("smaller_module", "fewer_bytes", "different_outputs")

    compression: float = knob(1 / 8, Real(1e-6, 1.0))   # buckets / virtual weights, per layer
    init: str = knob("scratch", Choice(("scratch", "average")))
    layers: tuple[str, ...] | None = knob(None, LAYER_NAMES)  # None: every Linear layer
    epochs: int = 5
    lr: float = 0.05
    weight_decay: float = 0.0

    def validate(self):
        if self.init == "scratch" and self.epochs == 0:
            raise ValueError(f"{type(self).__name__}.epochs=0 with init='scratch': random "
                             "buckets need training; use init='average' to skip training")

    def supports(self, model):
        return any(isinstance(m, nn.Linear) for m in model.modules())

    def check_model(self, model):
        check_layer_names(self, "layers", model, kinds=(nn.Linear,))

    def chosen(self, model: nn.Module) -> list[tuple[str, nn.Linear]]:
        linears = layers_of(model, (nn.Linear,))
        return [(n, m) for n, m in linears if self.layers is None or n in self.layers]

    def settings(self) -> dict:
        out = {"compression": self.compression, "init": self.init, "epochs": self.epochs}
        if self.layers is not None:
            out["layers"] = list(self.layers)
        return {**out, **self.teacher_settings()}

    def hashed_layer(self, linear: nn.Linear, seed: int) -> nn.Module:
        buckets = bucket_count(self.compression, linear.out_features, linear.in_features)
        return hashed_from_linear(linear, buckets, seed, self.init)

    def compress(self, model, data=None):
        with seeded(self.seed):
            for k, (name, linear) in enumerate(self.chosen(model)):
                replace_module(model, name, self.hashed_layer(linear, self.seed + 16 * k))
        if self.epochs:
            self.fit(model, data)
        return model


@dataclass
class FunHash(HashedNets):
    """FunHashNN: each chosen Linear layer's weights are ``g`` of ``hashes`` looked-up signed
    bucket values, g a small network shared by the layer (``hidden`` ReLU units, or a linear
    combination with ``hidden=0``), trained from scratch with the network. The buckets and g
    together take ``compression`` of the layer's weights, so a FunHash and a HashedNets layer
    of the same compression store the same number of values."""
    id = "hash.funhash"
    reference = ("Shi, Feng, Zhu 2016, Functional Hashing for Compressing Neural Networks")
    smoke = {"compression": 1 / 8, "epochs": 1}

    hashes: int = knob(3, Int(1, 8))
    hidden: int = knob(4, Int(0, 64))
    init: str = knob("scratch", Choice(("scratch",)))

    def settings(self) -> dict:
        return {**super().settings(), "hashes": self.hashes, "hidden": self.hidden}

    def g_size(self) -> int:
        """Parameters of one layer's reconstruction network g."""
        return self.hashes * (self.hidden or 1) + 2 * self.hidden

    def check_model(self, model):
        super().check_model(model)
        for name, linear in self.chosen(model):
            budget = bucket_count(self.compression, linear.out_features, linear.in_features)
            if budget <= self.g_size():
                raise ValueError(f"{type(self).__name__}.compression={self.compression}: "
                                 f"layer {name} keeps {budget} values, not more than g's "
                                 f"{self.g_size()}; raise compression or shrink g")

    def hashed_layer(self, linear: nn.Linear, seed: int) -> nn.Module:
        budget = bucket_count(self.compression, linear.out_features, linear.in_features)
        return funhash_from_linear(linear, budget - self.g_size(), self.hashes, self.hidden,
                                   seed)


METHODS = (HashedNets, FunHash)
