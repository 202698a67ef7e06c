"""Data-free merging of near-duplicate fully connected neurons (Srinivas & Babu 2015).

Two neurons with the same incoming weights compute the same thing: one of them can go if its
outgoing weights are added to the other's. For neurons that are only alike, the damage of
merging j into i is ||w_i - w_j||^2 ||a_j||^2 (incoming weights w, outgoing weights a), and the
least damaging merges are made greedily, with no data at all.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..codec import plain_state_dict
from ..method import Choice, Int, Method, Real, clone_model, knob
from .surgery import channel_groups, shrink


def squared_distances(w: torch.Tensor) -> torch.Tensor:
    """||w_i - w_j||^2 for all row pairs, in float64 and without the matmul shortcut, so that
    exact twins are at distance exactly 0."""
    w = w.double()
    return torch.cdist(w, w, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def merge_saliency(w_in: torch.Tensor, w_out: torch.Tensor) -> torch.Tensor:
    """s[i, j] = ||w_i - w_j||^2 * ||a_j||^2: the damage of removing neuron j and adding its
    outgoing weights a_j to neuron i (Srinivas & Babu 2015, eq. 6). Rows of ``w_in`` are the
    incoming weights (bias included), rows of ``w_out`` the outgoing ones. Diagonal: inf."""
    s = squared_distances(w_in) * w_out.double().pow(2).sum(1)[None, :]
    return s.fill_diagonal_(float("inf"))


def merge_neurons(w_in: torch.Tensor, w_out: torch.Tensor,
                  count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge ``count`` neurons greedily, least saliency first. Returns the kept indices and
    the outgoing weights (rows: neurons, all of them) with each twin's share added in."""
    out = w_out.clone()
    dist = squared_distances(w_in)          # fixed: incoming weights never change
    s = merge_saliency(w_in, w_out)
    alive = torch.ones(len(w_in), dtype=torch.bool)
    for _ in range(count):
        i, j = divmod(int(torch.argmin(s)), len(w_in))
        out[i] += out[j]
        alive[j] = False
        # Only a_i changed: refresh the saliencies of merging i away, retire j.
        s[:, i] = dist[:, i] * out[i].double().pow(2).sum()
        s[i, i] = float("inf")
        s[~alive, :] = float("inf")
        s[:, j] = float("inf")
    return torch.nonzero(alive).flatten(), out


def linear_groups(model: nn.Module):
    """The channel groups of hidden fully connected neurons: a Linear feeding a Linear."""
    return [g for g in channel_groups(model)
            if isinstance(model.get_submodule(g.name), nn.Linear)
            and isinstance(model.get_submodule(g.consumer), nn.Linear)]


@dataclass
class Merge(Method):
    """Merge near-duplicate fully connected neurons, without data (Srinivas & Babu 2015)."""
    id = "prune.merge"
    reference = "Srinivas, Babu 2015, Data-free Parameter Pruning for Deep Neural Networks"
    sliders = {"fraction": (0.0, 0.95, 0.05), "count": (0, 250, 1)}
    effects = ("smaller_module", "fewer_macs", "fewer_bytes")
    requires = "a hidden Linear layer feeding a Linear (a channel group of channel_groups())"

    fraction: float = knob(0.5, Real(0.0, 0.99))   # of each hidden FC layer's neurons removed
    count: int = knob(10, Int(0, 10**6))           # or this many per layer
    by: str = knob("fraction", Choice(("fraction", "count")))

    def supports(self, model):
        return bool(linear_groups(model))

    def settings(self):
        return {"by": self.by, self.by: getattr(self, self.by)}

    def removed(self, width: int) -> int:
        n = round(self.fraction * width) if self.by == "fraction" else self.count
        return min(n, width - 1)

    def compress(self, model, data=None):
        return self._merge(model)[0]

    def merge(self, model: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """The merged network and, per layer, the original indices of the surviving neurons
        (``shrink(model, keep)`` gives the same survivors without the merging, to compare).
        ``model`` is untouched."""
        return self._merge(clone_model(model))

    def _merge(self, pruned: nn.Module) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        kept = {}
        # One layer at a time: a layer's consumer is the next layer's producer, whose incoming
        # weights must be read after the previous merge has removed its dead inputs. (Its
        # rows, hence neuron indices, are untouched by the previous shrink.)
        for g in linear_groups(pruned):
            state = plain_state_dict(pruned)
            w_in, bias = state[f"{g.name}.weight"], state.get(f"{g.name}.bias")
            if bias is not None:
                w_in = torch.cat([w_in, bias[:, None]], 1)
            consumer = state[f"{g.consumer}.weight"]
            keep, w_out = merge_neurons(w_in, consumer.T, self.removed(len(w_in)))
            with torch.no_grad():
                pruned.get_submodule(g.consumer).weight.copy_(w_out.T)
            pruned, kept[g.name] = shrink(pruned, {g.name: keep}), keep
        return pruned, kept

