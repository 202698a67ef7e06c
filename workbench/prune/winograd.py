"""Sparse Winograd convolution (Liu et al. 2018): F(2x2, 3x3), pruned in the Winograd domain.

Winograd's minimal filtering (Lavin & Gray 2016) computes a 2x2 block of a 3x3 convolution's
output from a 4x4 input tile ``d`` with 16 multiplications instead of 36::

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* is element-wise)

``U = G g G^T`` (4x4 per kernel) is computed once; over the input channels the element-wise
stage becomes, for each of the 16 positions, a matrix product (out x in) @ (in x tiles). The
input and output transforms only add and subtract (B and A hold 0 and +-1), so the
multiplications are those of the element-wise stage: 16 per tile per (out, in) pair, i.e.
4 per output pixel instead of the 9 of a direct 3x3 convolution.

Pruning the spatial kernel ``g`` does not help: ``G g G^T`` fills the zeros back in (one
nonzero of g spreads to up to 9 of the 16 entries of U). Liu et al. therefore prune ``U``
itself and retrain it there (the gradient flows to ``U`` directly), so every zero of ``U`` is
a multiplication skipped on every tile. A trained or pruned ``U`` is in general no longer
``G g G^T`` of any 3x3 kernel (16 free values against 9), so the layer stays a
``WinogradConv2d``.

Counting: a WinogradConv2d reports to ``measure`` the multiplications of its element-wise
stage, dense (``macs``: out x in x 16 per tile) and skipping zeros of U (``effective_macs``).
``report(pruned).compare(report(base))`` therefore sets them against the base network's direct
convolutions; ``multiplications(model, shape)`` lists per layer the direct, dense Winograd and
sparse Winograd counts side by side.

Left out: Liu et al.'s second idea, the Winograd-ReLU network (ReLU applied to the transformed
activations B^T d B, which makes them sparse too). It changes the network function, so it needs
training from scratch, and it only pays off with a kernel that skips zero activations; the
multiplications counted here are those skipped thanks to weight sparsity alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ..hooks import probe
from ..method import Choice, Real, TrainingMethod, knob
from ..models import register_module, replace_module
from .magnitude import magnitude_mask

# Lavin & Gray 2016, F(2x2, 3x3).
B_T = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
A_T = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)


def _like(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return matrix.to(dtype=x.dtype, device=x.device)


def winograd_weights(w: torch.Tensor) -> torch.Tensor:
    """U = G w G^T for every 3x3 kernel: (out, in, 3, 3) -> (out, in, 4, 4)."""
    g = _like(G, w)
    return torch.einsum("ij,ocjl,ml->ocim", g, w, g)


def transform_input(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """V = B^T d B of every overlapping 4x4 tile (stride 2) of the zero-padded input.

    Returns V as (16, in, N * tiles_h * tiles_w), the 16 Winograd positions first, and the
    tile grid. Odd sizes get an extra row / column of zeros; the output is cropped back.
    """
    n, c, h, w = x.shape
    th, tw = -(-h // 2), -(-w // 2)
    b_t = _like(B_T, x)
    # Channels before images, so V comes out as (16, C, N * tiles) without a copy. Padding 1
    # on the top / left, and on the bottom / right up to the 2 * tiles + 2 the tiles cover.
    p = F.pad(x.transpose(0, 1), (1, 1 + 2 * tw - w, 1, 1 + 2 * th - h))
    # Row j of every tile is every second row of p from row j: strided slices, not unfold
    # (on CPU this is about twice as fast to train through).
    rows = torch.stack([p[:, :, j:j + 2 * th:2] for j in range(4)])        # (4, C, N, th, W')
    rows = (b_t @ rows.flatten(1)).view(rows.shape)                       # B^T d
    cols = torch.stack([rows[..., k:k + 2 * tw:2] for k in range(4)], 1)  # (4, 4, C, N, th, tw)
    v = b_t @ cols.flatten(2)                                             # (B^T d) B
    return v.reshape(16, c, n * th * tw), (th, tw)


def transform_output(m: torch.Tensor, n: int, tiles: tuple[int, int], h: int, w: int
                     ) -> torch.Tensor:
    """Y = A^T M A of every tile, assembled into (N, out, h, w). ``m`` is (16, out, tiles)."""
    th, tw = tiles
    a_t = _like(A_T, m)
    y = torch.kron(a_t, a_t) @ m.flatten(1)          # row 2a + b of Y from entry 4i + j of M
    y = y.view(2, 2, m.shape[1], n, th, tw).permute(3, 2, 4, 0, 5, 1)   # (N, out, th, 2, tw, 2)
    return y.reshape(n, -1, 2 * th, 2 * tw)[:, :, :h, :w]


def elementwise(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """M = sum over input channels of U * V: one (out x in) @ (in x tiles) per position."""
    return torch.bmm(u.permute(2, 3, 0, 1).reshape(16, u.shape[0], u.shape[1]), v)


def sparse_elementwise(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The element-wise stage multiplying only the nonzero entries of U.

    Returns M (as ``elementwise``) and the number of multiplications actually performed:
    each nonzero U[o, c, position] multiplies V[position, c, :] once per tile.
    """
    u16 = u.permute(2, 3, 0, 1).reshape(16, u.shape[0], u.shape[1])
    pos, out, inp = u16.nonzero(as_tuple=True)
    products = u16[pos, out, inp, None] * v[pos, inp, :]        # (nonzeros, tiles)
    m = torch.zeros(16 * u.shape[0], v.shape[2], dtype=v.dtype, device=v.device)
    m.index_add_(0, pos * u.shape[0] + out, products)
    return m.view(16, u.shape[0], v.shape[2]), products.numel()


def winograd_conv2d(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """A 3x3, stride 1, padding 1 convolution of ``x`` computed with F(2x2, 3x3).

    Equal to ``F.conv2d(x, w, bias, padding=1)`` when ``u = winograd_weights(w)``.
    """
    v, tiles = transform_input(x)
    y = transform_output(elementwise(u, v), x.shape[0], tiles, x.shape[2], x.shape[3])
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def tiles_of(h: int, w: int) -> int:
    """Number of 2x2 output tiles of an h x w output."""
    return -(-h // 2) * -(-w // 2)


@register_module
class WinogradConv2d(nn.Module):
    """A 3x3 stride-1 padding-1 convolution stored and run in the Winograd domain.

    ``U`` (out, in, 4, 4) is the weight; prune it with ``torch.nn.utils.prune`` on ``"U"``.
    ``mac_counts`` counts multiplications in the Winograd domain (see ``mac_counts``).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__()
        self.config = {"in_channels": in_channels, "out_channels": out_channels, "bias": bias}
        self.U = nn.Parameter(torch.zeros(out_channels, in_channels, 4, 4))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "WinogradConv2d":
        """The same convolution, U = G w G^T of the conv's (effective, masked) weight."""
        layer = cls(conv.in_channels, conv.out_channels, conv.bias is not None)
        layer.to(conv.weight.dtype)
        with torch.no_grad():
            layer.U.copy_(winograd_weights(conv.weight.detach().double()).float())
            if conv.bias is not None:
                layer.bias.copy_(conv.bias.detach())
        return layer

    def forward(self, x):
        return winograd_conv2d(x, self.U, self.bias)

    def mac_counts(self, inputs, output) -> dict:
        """Multiplications per image of the element-wise stage (the transforms only add).

        ``macs``: dense Winograd, out x in x 16 per tile (4 per output pixel and input
        channel, against 9 for the direct convolution that measure counts for a Conv2d);
        ``effective_macs``: only the nonzero entries of U, nonzero(U) per tile.
        """
        tiles = tiles_of(output.shape[2], output.shape[3])
        nonzeros = int(self.U.count_nonzero())
        return {"params": self.U.numel(), "nonzeros": nonzeros,
                "macs": self.U.numel() * tiles, "effective_macs": nonzeros * tiles}


def winograd_eligible(module: nn.Module) -> bool:
    """A plain 3x3, stride 1, padding 1 convolution (what F(2x2, 3x3) computes)."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3)
            and module.stride == (1, 1) and module.padding == (1, 1)
            and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros")


def eligible_convs(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if winograd_eligible(m)]


def to_winograd(model: nn.Module, names: list[str]) -> None:
    """Replace the convolutions ``names`` of ``model`` by equivalent WinogradConv2d (in place)."""
    for name in names:
        replace_module(model, name, WinogradConv2d.from_conv(model.get_submodule(name)))


@torch.no_grad()
def multiplications(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """Per WinogradConv2d layer, multiplications per image, and their total (last row).

    ``spatial``: a dense direct 3x3 convolution (9 per output pixel per input channel);
    ``winograd``: dense F(2x2, 3x3), 16 per tile (4 per output pixel);
    ``sparse_winograd``: only nonzero U entries. The ``x`` columns are reductions.
    """
    rows = []

    def count(module, inputs, output, name):
        n_out, n_in = module.U.shape[:2]
        counts = module.mac_counts(inputs, output)
        rows.append({"layer": name, "density": counts["nonzeros"] / counts["params"],
                     "spatial": n_out * n_in * 9 * output.shape[2] * output.shape[3],
                     "winograd": counts["macs"], "sparse_winograd": counts["effective_macs"]})

    probe(model, input_shape, {name: count for name, m in model.named_modules()
                               if isinstance(m, WinogradConv2d)})
    if rows:
        rows.append({"layer": "total", "density": None,
                     **{k: sum(r[k] for r in rows) for k in ("spatial", "winograd",
                                                             "sparse_winograd")}})
    for r in rows:
        sparse = r["sparse_winograd"]
        r["vs_spatial_x"] = r["spatial"] / sparse if sparse else None
        r["vs_winograd_x"] = r["winograd"] / sparse if sparse else None
    return rows


@dataclass
class Winograd(TrainingMethod):
    """3x3 convs as Winograd F(2x2, 3x3) layers, pruned in the Winograd domain (Liu et al. 2018).

    Every 3x3 stride-1 padding-1 convolution becomes a WinogradConv2d with U = G w G^T (the
    stride-2 convs of ResNet-20 and the linear head stay as they are, unpruned).
    ``domain="winograd"`` prunes each U by magnitude (``sparsity`` of its entries) and retrains
    U for ``epochs``; ``domain="spatial"`` is the baseline: prune w at the same sparsity,
    retrain w, then transform, which fills most zeros of U back in. Masks are
    torch.nn.utils.prune's (``U_orig`` and ``U_mask``): retraining keeps them at zero without
    a hook, a learner can see them, and the codec folds them into a sparse U. Without
    retraining (``epochs=0``, the default) it needs no data.
    """
    id = "prune.winograd"
    reference = ("Liu, Pool, Han, Dally 2018, Efficient Sparse-Winograd Convolutional Neural "
                 "Networks")
    sliders = {"sparsity": (0.0, 0.95, 0.01)}
    # Pruning only: training through the Winograd transforms on CPU is about 5x slower than
    # through a conv (one epoch of 256 images: 4-8 s), so the retraining is tested on its own.
    smoke = {"epochs": 0}
    # U keeps half of 16 entries per kernel, fewer than the 9 of w: fewer values to store, and
    # each is a multiplication per tile.
    effects = ("fewer_nonzeros", "fewer_macs", "fewer_bytes")
    requires = "a 3x3 stride-1 padding-1 Conv2d (what F(2x2, 3x3) computes)"

    # 0.5: without retraining (the default) higher sparsities cost the network most of its
    # accuracy; it must stay above 7/16 for U to hold fewer entries than w
    sparsity: float = knob(0.5, Real(0.0, 1.0))
    # where the weights are pruned
    domain: str = knob("winograd", Choice(("winograd", "spatial")))
    epochs: int = 0                 # retraining epochs after pruning (0: none, no data needed)
    lr: float = 0.01                # Winograd-domain retraining needs a low rate (Li et al.)
    weight_decay: float = 5e-4

    def supports(self, model):
        return bool(eligible_convs(model))

    def settings(self) -> dict:
        retrain = {"lr": self.lr, "batch_size": self.batch_size,
                   "weight_decay": self.weight_decay, "seed": self.seed,
                   **self.teacher_settings()} if self.epochs else {}
        return {"sparsity": self.sparsity, "domain": self.domain, "epochs": self.epochs,
                **retrain}

    def retrain(self, model: nn.Module, data) -> None:
        if self.epochs:
            # Masks from torch.nn.utils.prune keep the pruned entries at zero: the layer
            # computes U_orig * U_mask, so their gradient is zero and fit needs no hook.
            self.fit(model, data, schedule="cosine", augment=True)

    def compress(self, model, data=None):
        names = eligible_convs(model)
        if self.domain == "spatial":
            for name in names:
                conv = model.get_submodule(name)
                prune.custom_from_mask(conv, "weight", magnitude_mask(conv.weight.detach(),
                                                                      self.sparsity))
            self.retrain(model, data)
        to_winograd(model, names)        # U = G w G^T of the (masked) spatial weights
        if self.domain == "winograd":
            for name in names:
                layer = model.get_submodule(name)
                prune.custom_from_mask(layer, "U", magnitude_mask(layer.U.detach(),
                                                                  self.sparsity))
            self.retrain(model, data)
        return model


METHODS = (Winograd,)
