"""The per-operation rules of ``dependency.analyze``: how each node of a traced network moves,
unites or fixes channel ids (see ``dependency`` for the rules in words).

Each node's channels are a ``Chan``: the ids along dim 1 when the tensor holds one channel id
per dim-1 position (``clean``: constant over the other dims), else the ids of every element
of one sample (in the middle of a channel shuffle, after a view split the channels in two).
"""
from __future__ import annotations

import operator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from .dependency import (
    CARRY_FUNCTIONS,
    CARRY_METHODS,
    CARRY_MODULES,
    ELEMENTWISE,
    ELEMENTWISE_METHODS,
    NORMS,
    RESHAPE_FUNCTIONS,
    RESHAPE_METHODS,
    SIZED,
    CoupledGroup,
)


class Chan(NamedTuple):
    ids: torch.Tensor
    clean: bool


def _value(arg):
    return arg.meta.get("value") if isinstance(arg, fx.Node) else arg


def _dim(node: fx.Node, position: int, default):
    dim = node.args[position] if len(node.args) > position else node.kwargs.get("dim", default)
    return dim


def _holds_tensors(value) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_holds_tensors(v) for v in value)
    return isinstance(value, torch.Tensor)


def compress(per_sample: torch.Tensor) -> Chan:
    """A clean Chan when the ids do not vary beyond the channel dim."""
    if per_sample.dim() == 1:
        return Chan(per_sample, True)
    first = per_sample[(slice(None),) + (0,) * (per_sample.dim() - 1)]
    shape = (-1,) + (1,) * (per_sample.dim() - 1)
    if torch.equal(per_sample, first.view(shape).expand_as(per_sample)):
        return Chan(first, True)
    return Chan(per_sample, False)


def full(chan: Chan, shape) -> torch.Tensor:
    """The ids of every element of one sample of a tensor of ``shape`` (batch first)."""
    if not chan.clean:
        return chan.ids
    return chan.ids.view((-1,) + (1,) * (len(shape) - 2)).expand(tuple(shape[1:]))


def _holds_weights(layer: nn.Module) -> bool:
    """Whether ``layer`` has something that slicing it for one call would change for its other
    calls: weights or buffers, or a size that is its channels (a norm without either). An
    activation or pooling module called at several places is several independent operations."""
    return isinstance(layer, (nn.Conv2d, nn.Linear, *NORMS)) \
        or next(layer.parameters(), None) is not None or next(layer.buffers(), None) is not None


class Propagation:
    """Visits the nodes in order; records producers (``out``), consumers (``inp``) and
    carriers (``carry``) with the ids of their channel positions."""

    def __init__(self, model: nn.Module, uf):
        self.model, self.uf = model, uf
        self.ids: dict = {}
        self.out, self.inp, self.carry = {}, {}, {}
        self.called: set = set()
        self.shapes: dict = {}

    # ------------------------------------------------------------ helpers
    def chan(self, arg):
        return self.ids.get(arg.name) if isinstance(arg, fx.Node) else None

    def fresh(self, value, owner: str, reason: str | None):
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return Chan(self.uf.new(value.shape[1], owner, reason), True)
        if isinstance(value, (tuple, list)) and value and all(
                isinstance(v, torch.Tensor) for v in value):
            return tuple(self.fresh(v, owner, reason) for v in value)
        return None

    def fix(self, chans, reason: str) -> None:
        if isinstance(chans, Chan):
            self.uf.fix(chans.ids, reason)
        elif isinstance(chans, tuple):
            for c in chans:
                self.fix(c, reason)

    def unknown(self, node: fx.Node, what: str):
        reason = f"{what} ({node.name})"
        for arg in node.all_input_nodes:
            self.fix(self.chan(arg), reason)
        return self.fresh(node.meta.get("value"), f"node:{node.name}", reason)

    def carried(self, node: fx.Node, what: str):
        x = self.chan(node.args[0]) if node.args else None
        return x if isinstance(x, Chan) and x.clean else self.unknown(node, what)

    # ------------------------------------------------------------ dispatch
    def visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            result = self.fresh(node.meta["value"], "input", "the network's input channels")
        elif node.op == "output":
            for arg in node.all_input_nodes:
                self.fix(self.chan(arg), "the network's outputs")
            return
        elif node.op == "get_attr":
            result = self.fresh(node.meta["value"], f"node:{node.name}",
                                "a parameter or buffer used in forward")
        elif node.op == "call_module":
            result = self.module(node, self.model.get_submodule(node.target))
        else:
            result = self.function(node, node.target)
        self.ids[node.name] = result
        if isinstance(node.meta.get("value"), torch.Tensor):
            self.shapes[node.name] = tuple(node.meta["value"].shape)

    def module(self, node, layer):
        name = node.target
        if name in self.called and _holds_weights(layer):
            for table in (self.out, self.inp, self.carry):
                if name in table:
                    self.uf.fix(table[name], f"{name} is called twice")
            return self.unknown(node, f"{name} is called twice (shared weights)")
        self.called.add(name)
        x = self.chan(node.args[0]) if node.args else None
        if isinstance(layer, nn.Flatten):
            return self.reshape(node)
        clean = isinstance(x, Chan) and x.clean
        if isinstance(layer, nn.Conv2d) and clean:
            if layer.groups == 1:
                self.inp[name] = x.ids
                return self.produce(name, layer.out_channels)
            if layer.groups == layer.in_channels == layer.out_channels:   # depthwise
                self.carry[name] = x.ids
                return x
            reason = f"grouped convolution {name} (groups={layer.groups})"
            self.fix(x, reason)             # its groups would each need equal losses
            self.out[name] = self.uf.new(layer.out_channels, name, reason)
            return Chan(self.out[name], True)
        if isinstance(layer, nn.Linear) and clean and _value(node.args[0]).dim() == 2:
            self.inp[name] = x.ids
            return self.produce(name, layer.out_features)
        if isinstance(layer, NORMS) and clean:
            self.carry[name] = x.ids
            return x
        if isinstance(layer, CARRY_MODULES) and clean:
            return x
        return self.unknown(node, f"module {name} ({type(layer).__name__})")

    def produce(self, name: str, width: int) -> Chan:
        self.out[name] = self.uf.new(width, name)
        return Chan(self.out[name], True)

    def function(self, node, fn):
        value = node.meta.get("value")
        method = node.op == "call_method"
        if fn is operator.getitem:
            return self.getitem(node)
        if (method and fn in CARRY_METHODS) or (not method and fn in CARRY_FUNCTIONS):
            return self.carried(node, f"{fn}")
        if (method and fn in ELEMENTWISE_METHODS) or (not method and fn in ELEMENTWISE):
            return self.elementwise(node)
        if fn is torch.cat:
            return self.cat(node)
        if fn in ("chunk", torch.chunk):
            return self.chunk(node)
        if (method and fn in RESHAPE_METHODS) or (not method and fn in RESHAPE_FUNCTIONS):
            return self.reshape(node)
        if fn is F.pad:
            pads = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
            along = list(pads)[2 * (_value(node.args[0]).dim() - 2):]   # dims 1 and 0
            return self.carried(node, "F.pad") if not any(along) \
                else self.unknown(node, "F.pad along channels")
        if fn in ("mean", "sum", torch.mean, torch.sum):
            return self.reduce(node)
        if not _holds_tensors(value):
            return None               # shapes, sizes, comparisons: no channels
        return self.unknown(node, f"operation {getattr(fn, '__name__', fn)}")

    # ------------------------------------------------------------ rules
    def getitem(self, node):
        base, index = self.chan(node.args[0]), node.args[1]
        if isinstance(base, tuple) and not isinstance(base, Chan):    # pieces of a chunk
            return base[index]
        if not isinstance(_value(node.args[0]), torch.Tensor):
            return None
        index = index if isinstance(index, tuple) else (index,)
        whole = slice(None, None, None)
        if len(index) >= 2 and index[0] == whole and index[1] == whole \
                and all(i is not Ellipsis for i in index[:2]):
            return self.carried(node, "indexing")
        return self.unknown(node, "indexing along the batch or channel dim")

    def elementwise(self, node):
        out = node.meta["value"]
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            return self.unknown(node, "an element-wise operation without channels")
        joined = []
        for arg in node.args[:2]:
            value, chan = _value(arg), self.chan(arg)
            if not isinstance(value, torch.Tensor):
                continue
            aligned = value.shape[-(out.dim() - 1)] if value.dim() >= out.dim() - 1 else 1
            if aligned == 1 and out.shape[1] != 1:
                self.fix(chan, "broadcast along channels")
            elif isinstance(chan, Chan) and chan.clean and value.dim() == out.dim():
                joined.append(chan)
            else:
                return self.unknown(node, "an element-wise operation with a tensor that "
                                          "has channels but no ids here")
        if not joined:
            return self.unknown(node, "an element-wise operation on constants")
        for other in joined[1:]:
            for a, b in zip(joined[0].ids.tolist(), other.ids.tolist()):
                self.uf.union(a, b)
        return joined[0]

    def cat(self, node):
        parts = [self.chan(a) for a in node.args[0]]
        ndim = _value(node.args[0][0]).dim()
        dim = _dim(node, 1, 0) % ndim
        if not all(isinstance(p, Chan) and p.clean for p in parts):
            return self.unknown(node, "torch.cat of tensors without channel ids")
        if dim == 1:
            return Chan(torch.cat([p.ids for p in parts]), True)
        if dim >= 2 and all(len(p.ids) == len(parts[0].ids) for p in parts):
            for p in parts[1:]:
                for a, b in zip(parts[0].ids.tolist(), p.ids.tolist()):
                    self.uf.union(a, b)
            return parts[0]
        return self.unknown(node, "torch.cat along the batch dim")

    def chunk(self, node):
        x, pieces = self.chan(node.args[0]), node.args[1] if len(node.args) > 1 \
            else node.kwargs["chunks"]
        dim = _dim(node, 2, 0) % _value(node.args[0]).dim()
        if not (isinstance(x, Chan) and x.clean and dim == 1 and isinstance(pieces, int)
                and len(x.ids) % pieces == 0):
            return self.unknown(node, "chunk not along channels into equal pieces")
        size = len(x.ids) // pieces
        table = x.ids.view(pieces, size)
        for j in range(size):          # each piece loses the same offsets
            for i in range(1, pieces):
                self.uf.union(int(table[0, j]), int(table[i, j]))
        return tuple(Chan(row, True) for row in table)

    def reduce(self, node):
        x = self.chan(node.args[0])
        ndim = _value(node.args[0]).dim()
        dims = _dim(node, 1, None)
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        if isinstance(x, Chan) and x.clean and dims and all(d % ndim >= 2 for d in dims):
            return x
        return self.unknown(node, "a reduction over the batch or channels")

    def reshape(self, node):
        x, before = self.chan(node.args[0]), _value(node.args[0])
        after = node.meta["value"]
        if not isinstance(x, Chan) or before.dim() < 2:
            return self.unknown(node, "a reshape of a tensor without channel ids")
        batch = before.shape[0]
        step = len(self.uf.parent) + 1
        offset = torch.arange(batch).view((batch,) + (1,) * (before.dim() - 1)) * step
        labels = (full(x, before.shape).unsqueeze(0) + offset).contiguous()
        rest = fx.node.map_arg((node.args[1:], node.kwargs), _value)
        if node.op == "call_module":
            moved = self.model.get_submodule(node.target)(labels)
        elif node.op == "call_method":
            moved = getattr(labels, node.target)(*rest[0], **rest[1])
        else:
            moved = node.target(labels, *rest[0], **rest[1])
        shifts = torch.arange(batch).view((batch,) + (1,) * (moved.dim() - 1)) * step
        if moved.shape != after.shape or not torch.equal(moved, moved[:1] + shifts):
            return self.unknown(node, "a reshape that mixes the batch with the channels")
        per_sample = moved[0]
        if node.target in SIZED and not self.couple_split(node, per_sample):
            return self.unknown(node, "a view whose channel sizes are written in the code")
        return compress(per_sample)

    def couple_split(self, node, per_sample: torch.Tensor) -> bool:
        """For a view with explicit sizes: the dims that hold channels must have one size
        computed at run time (or -1); the channels along the literal ones are united."""
        sizes = list(node.args[1:] if node.op == "call_method" else node.args[1:2])
        if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
            sizes = list(sizes[0])
        varying = [d for d in range(per_sample.dim()) if per_sample.shape[d] > 1 and not
                   torch.equal(per_sample, per_sample.narrow(d, 0, 1).expand_as(per_sample))]
        flexible = [d for d in varying if isinstance(sizes[d + 1], fx.Node) or sizes[d + 1] == -1]
        if not varying:
            return True
        if len(flexible) != 1:
            return False
        index = tuple(slice(None) if d in varying else 0 for d in range(per_sample.dim()))
        table = per_sample[index]       # the channel dims only, in order
        axis = varying.index(flexible[0])
        table = table.movedim(axis, -1).reshape(-1, table.shape[axis])
        for column in table.T:
            for other in column[1:].tolist():
                self.uf.union(int(column[0]), other)
        return True

    # ------------------------------------------------------------ the groups
    def groups(self) -> list[CoupledGroup]:
        tables = {(layer, role): self.uf.roots(ids).tolist()
                  for role, table in (("out", self.out), ("in", self.inp),
                                      ("carry", self.carry)) for layer, ids in table.items()}
        leader = {p: p for p in self.out}  # producer -> an earlier producer of its cluster
        owner = {}                         # class root -> producer that made it first
        for p in self.out:
            for root in dict.fromkeys(tables[(p, "out")]):
                if root in owner:
                    self._join(leader, owner[root], p)
                else:
                    owner[root] = p
        clusters: dict[str, list[str]] = {}
        for p in self.out:
            clusters.setdefault(self._top(leader, p), []).append(p)
        found = [self._classes(members, tables) for members in clusters.values()]
        cluster_of = {root: k for k, (_, index) in enumerate(found) for root in index}
        positions = [{} for _ in found]
        for key, roots in tables.items():
            for k in {cluster_of[r] for r in roots if r in cluster_of}:
                index = found[k][1]
                positions[k][key] = torch.tensor([index.get(r, -1) for r in roots],
                                                 dtype=torch.long)
        return [self._group(members, index, where)
                for (members, index), where in zip(found, positions)]

    @staticmethod
    def _classes(producers, tables):
        index = {}
        for p in producers:
            for r in tables[(p, "out")]:
                index.setdefault(r, len(index))
        return producers, index

    @staticmethod
    def _top(leader, p):
        while leader[p] != p:
            p = leader[p]
        return p

    def _join(self, leader, a, b):
        ta, tb = self._top(leader, a), self._top(leader, b)
        order = list(leader)
        if ta != tb:
            first, second = sorted((ta, tb), key=order.index)
            leader[second] = first

    def _group(self, producers, index, positions) -> CoupledGroup:
        roles = {"out": [], "in": [], "carry": []}
        for layer, role in positions:
            roles[role].append(layer)
        reason = next((self.uf.fixed[r] for r in index if r in self.uf.fixed), None)
        return CoupledGroup(producers[0], tuple(producers), tuple(roles["carry"]),
                            tuple(roles["in"]), len(index), positions, reason)
