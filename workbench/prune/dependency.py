"""Coupled channels, found by tracing the network (torch.fx), in the spirit of Torch-Pruning.

Removing output channel ``c`` of a convolution is only half of the surgery: every layer that
carries or reads that channel must lose it too. In a plain chain that is the next BatchNorm
and the next convolution; in a residual stage the channels of several convolutions are
*added*, so channel ``c`` of all of them goes together; through a concatenation, a
``chunk`` or a channel shuffle the channel moves to another index. This module finds all of
that from the graph, so no architecture has to declare its groups by hand.

How: the network is traced once with a real input (``trace``: every node's concrete value is
kept, so shape-dependent Python such as ``if x.shape[-1] != 32`` runs as it would), then every
channel of every tensor gets an integer *id* (``analyze``):

- a Conv2d or Linear is a *producer*: its output channels get fresh ids; and a *consumer*: it
  records the ids of the input channels its weight columns read;
- BatchNorm and depthwise convolutions *carry* their input ids (their weights are sliced
  along dim 0 with them); activations, pooling, dropout, interpolation carry them too;
- ``a + b`` (and ``*``, ``-``, ``/``) *unites* the ids of the two operands position by position:
  those channels must go together;
- ``torch.cat`` concatenates the id lists; ``chunk(k, dim=1)`` slices them and unites the
  channels at the same offset of each piece (the pruned network cuts its pieces at equal
  sizes again, so each piece must lose the same offsets); view / reshape / flatten / transpose
  / permute are replayed on the id array itself, which maps ids through a channel shuffle;
  where a view splits the channels into a literal factor (the shuffle's ``groups``) and a
  size computed at run time, the entries along the literal factor are united, for the same
  reason as ``chunk``.

A *coupled group* is then a set of producers whose output channels are united, with every
layer that carries or reads them; a *class* of the group is one set of channels removed
together, and the group's width is its number of classes.

Not prunable, and why (the ids are *fixed*, and so is every class united with them):
the network's input channels and its outputs (the classifier's classes); anything an
operation does that is not in the lists above (a grouped convolution with 1 < groups <
channels, whose groups would need equal losses; ``split``, whose sizes are written in the
code or computed from shapes in ways not followed here (a pruned network would cut at the old
places), and ``chunk`` into unequal pieces; ``F.pad`` along channels, as in
ResNet's option-A shortcut, whose zero channels have a width set in the code; a module with
weights called twice, whose weights serve two places (one activation module used at several
places is fine: it holds nothing to slice); a parameter or constant tensor with a channel dim;
reductions over channels; any module or function not known here). A group with a fixed class
is left whole (``CoupledGroup.reason`` says why). In ShuffleNet v2 the chunk and shuffle of
every unit unite the stage channels into a few classes of many channels each.

``surgery.shrink`` (through ``slim.shrink_traced``) re-traces the network it built and checks that every tensor holds exactly the kept channels of the original, in the
original order, so a case this analysis gets wrong raises instead of giving a wrong network.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx._symbolic_trace import _maybe_revert_all_patches

from .. import models

CARRY_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
                 nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.ELU, nn.Dropout, nn.Dropout2d, nn.Identity,
                 nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                 nn.Upsample)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
CARRY_FUNCTIONS = {F.relu, F.relu6, torch.relu, torch.sigmoid, torch.tanh, F.hardswish,
                   F.hardsigmoid, F.silu, F.gelu, F.elu, F.leaky_relu, F.dropout, F.avg_pool2d,
                   F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate}
CARRY_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd,
               operator.imul, torch.add, torch.sub, torch.mul, torch.div}
ELEMENTWISE_METHODS = {"add", "add_", "sub", "mul", "mul_", "div"}
RESHAPE_METHODS = {"view", "reshape", "flatten", "transpose", "permute"}
RESHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.transpose, torch.permute}
SIZED = {"view", "reshape", torch.reshape}     # reshapes whose sizes come from the code


# ----------------------------------------------------------------- tracing with values

class _Tracer(fx.Tracer):
    """fx tracing that also runs every operation on a real input (``node.meta["value"]``),
    so control flow on shapes resolves to what the network really does (evaluated when
    Python asks for a bool, and for every node once the trace is done)."""

    def __init__(self, example: torch.Tensor):
        super().__init__()
        self.example = example

    def is_leaf_module(self, module, qualname):
        known = isinstance(module, (nn.Conv2d, nn.Linear, nn.Flatten, *NORMS, *CARRY_MODULES))
        registered = type(module).__name__ in models.CUSTOM_MODULES and qualname != ""
        return known or registered or super().is_leaf_module(module, qualname)

    def _evaluate(self, target: fx.Node):
        """Run the graph built so far on the example, up to ``target`` (values cached)."""
        for node in self.graph.nodes:
            if "value" not in node.meta and node.op != "output":
                a, kw = fx.node.map_arg((node.args, node.kwargs), lambda n: n.meta["value"])
                node.meta["value"] = self._run(node.op, node.target, a, kw)
            if node is target:
                return node.meta.get("value")
        return None

    def _run(self, kind, target, a, kw):
        if kind == "placeholder":
            return self.example
        if kind == "get_attr":
            return operator.attrgetter(target)(self.root)
        if kind == "call_module":
            return self.root.get_submodule(target)(*a, **kw)
        if kind == "call_method":
            return getattr(a[0], target)(*a[1:], **kw)
        return target(*a, **kw)

    def concrete(self, proxy):
        # fx patches nn.Module.__call__ and __getattr__ while it traces: run the real modules
        # with them restored (the private helper fx itself uses for that)
        with _maybe_revert_all_patches():
            return self._evaluate(proxy.node)

    def to_bool(self, obj):
        return bool(self.concrete(obj))

    def iter(self, obj):
        return iter([obj[i] for i in range(len(self.concrete(obj)))])


def example_input(model: nn.Module) -> torch.Tensor:
    """Two seeded random images of the model's ``input_shape`` (two, so that an operation
    mixing the batch with the channels shows)."""
    shape = getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"{type(model).__name__} has no input_shape; tracing needs one "
                         f"(a tuple such as (3, 32, 32))")
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))


def trace(model: nn.Module, example: torch.Tensor | None = None) -> fx.Graph:
    """The fx graph of ``model`` with each node's value on ``example`` in ``meta["value"]``.
    The model runs in eval mode without gradients; each module's mode is restored."""
    example = example_input(model) if example is None else example
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            model.eval()
            tracer = _Tracer(example)
            graph = tracer.trace(model)
            tracer._evaluate(None)          # every node's value, outside the tracing
            return graph
    finally:
        for module, training in modes.items():
            module.training = training


# ----------------------------------------------------------------- the analysis

@dataclass(eq=False)
class CoupledGroup:
    """Producers whose output channels go together, and every layer that holds them.

    ``positions[(layer, role)]`` gives, for each channel position of that layer's weight
    (role "out": a producer's rows; "in": a consumer's input columns; "carry": a BatchNorm's
    or depthwise conv's channels), the index of the class it belongs to, or -1 when the
    position belongs to another group. ``reason`` is None for a prunable group."""
    name: str                               # the first producer in forward order
    producers: tuple[str, ...]
    carriers: tuple[str, ...]
    consumers: tuple[str, ...]
    width: int
    positions: dict = field(repr=False)
    reason: str | None = None

    @property
    def prunable(self) -> bool:
        return self.reason is None

    @property
    def consumer(self) -> str:
        """The one consumer, for a group that has exactly one (like a declared
        ``ChannelGroup``)."""
        if len(self.consumers) != 1:
            raise ValueError(f"group {self.name} has {len(self.consumers)} consumers "
                             f"{list(self.consumers)}, not one")
        return self.consumers[0]

    def rows(self, producer: str) -> torch.Tensor:
        """Class index of each output channel of ``producer``."""
        return self.positions[(producer, "out")]


class _Ids:
    """Union-find over channel ids; an id's owner and channel say where it was made."""

    def __init__(self):
        self.parent, self.origin, self.fixed = [], [], {}

    def new(self, count: int, owner: str, reason: str | None = None) -> torch.Tensor:
        start = len(self.parent)
        self.parent += range(start, start + count)
        self.origin += [(owner, c) for c in range(count)]
        ids = torch.arange(start, start + count)
        if reason:
            self.fix(ids, reason)
        return ids

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
            reason = self.fixed.pop(max(ra, rb), None) or self.fixed.get(min(ra, rb))
            if reason:
                self.fixed[min(ra, rb)] = reason

    def fix(self, ids: torch.Tensor, reason: str) -> None:
        for i in ids.flatten().unique().tolist():
            self.fixed.setdefault(self.find(i), reason)

    def roots(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.find(i) for i in ids.flatten().tolist()],
                            dtype=torch.long).view(ids.shape)


@dataclass
class ChannelGraph:
    """What ``analyze`` finds: the groups, and each node's channel ids (for checking)."""
    groups: list[CoupledGroup]
    node_ids: dict          # node name -> ids per channel, or per element, or a tuple
    uf: _Ids
    producers: dict         # producer name -> ids of its output channels
    shapes: dict            # node name -> shape of its value (tensors)

    def group(self, name: str) -> CoupledGroup:
        return {g.name: g for g in self.groups}[name]

    def prunable(self) -> list[CoupledGroup]:
        return [g for g in self.groups if g.prunable]


def analyze(model: nn.Module, example: torch.Tensor | None = None) -> ChannelGraph:
    """Trace ``model`` and find its coupled channel groups (prunable or not), in forward
    order of their first producer."""
    from .propagate import Propagation  # the per-operation rules
    graph = trace(model, example)
    walk = Propagation(model, _Ids())
    for node in graph.nodes:
        walk.visit(node)
    return ChannelGraph(walk.groups(), walk.ids, walk.uf, walk.out, walk.shapes)


def as_channel_group(group: CoupledGroup, model: nn.Module):
    """The group as a ``ChannelGroup`` (one producer, its BatchNorm if any, one consumer,
    each class one channel, read by ``spatial`` consecutive consumer inputs), or None when it
    is more than that. ``slot`` is None: tracing cannot know the config."""
    from ..models.groups import ChannelGroup
    if len(group.producers) != 1 or len(group.consumers) != 1 or len(group.carriers) > 1:
        return None
    norm = group.carriers[0] if group.carriers else None
    if norm is not None and not isinstance(model.get_submodule(norm), NORMS):
        return None
    width, consumer = group.width, group.consumers[0]
    reads = group.positions[(consumer, "in")]
    spatial = len(reads) // width
    if not torch.equal(group.rows(group.name), torch.arange(width)) or len(reads) % width \
            or not torch.equal(reads, torch.arange(width).repeat_interleave(spatial)):
        return None
    return ChannelGroup(group.name, norm, consumer, spatial, None)
