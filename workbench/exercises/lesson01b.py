"""Lesson 01b's exercises: which filters L1-norm filter pruning keeps, and Winograd's U.

``check_filters_to_keep(f)``: ``f(weight, fraction)`` must return the sorted indices of the
filters (output channels) of a conv weight that stay when ``fraction`` of them, those of
smallest L1 norm, are removed, as ``prune.l1_filter`` chooses them (``L1Filter.keep``), on
VGG-small's trained convolutions.
``check_winograd_kernel(f)``: ``f(g)`` must return U = G g G^T (4x4) for one 3x3 kernel, as
``prune.winograd.winograd_weights`` computes it, on VGG-small's kernels.
"""
from __future__ import annotations

import torch

from . import run

FRACTIONS = (0.25, 0.5, 0.75)


def _convs():
    from .. import zoo
    net = zoo.pretrained("vgg_small")
    return [(name, m.weight.detach().clone()) for name, m in net.named_modules()
            if isinstance(m, torch.nn.Conv2d)]


def check_filters_to_keep(function) -> bool | None:
    """Compare ``function(weight, fraction)`` with ``L1Filter(fraction=...).keep`` on every
    convolution of VGG-small at fractions 0.25, 0.5 and 0.75."""
    from .. import METHODS
    cases = [(f"conv {name} ({w.shape[0]} filters) with fraction {f}", (w.clone(), f),
              {"_name": name}) for name, w in _convs() for f in FRACTIONS]

    def judge(label, got, args, kwargs):
        weight, fraction = args
        expected = METHODS["prune.l1_filter"](fraction=fraction).keep(weight, kwargs["_name"])
        try:
            got = torch.as_tensor(got).long().flatten()
        except (TypeError, ValueError, RuntimeError):
            return f"expected indices (a tensor or a list of ints), got {type(got).__name__}"
        if len(got) != len(expected):
            hint = (" (did you return the removed filters instead of the kept ones?)"
                    if len(got) == weight.shape[0] - len(expected) else "")
            return f"you keep {len(got)} filters, the library keeps {len(expected)}{hint}"
        if not torch.equal(got, got.sort().values):
            return "return the kept indices in increasing order"
        if not torch.equal(got, expected):
            norms = weight.abs().flatten(1).sum(1)
            weakest = set(torch.argsort(norms)[:len(expected)].tolist())
            hint = (" (you kept the filters of smallest L1 norm: keep the largest)"
                    if set(got.tolist()) == weakest else
                    " (score each filter by the sum of |w| over its in x 3 x 3 weights)")
            missing = sorted(set(expected.tolist()) - set(got.tolist()))[:5]
            return f"the library keeps filters {missing} that you removed{hint}"
        return None

    def call(weight, fraction, _name):
        return function(weight, fraction)

    return run("filters_to_keep", call, cases, judge,
               "you keep exactly the library's filters in every layer at every fraction")


def check_winograd_kernel(function) -> bool | None:
    """Compare ``function(g)`` with ``winograd_weights`` for kernels of every 3x3
    convolution of VGG-small."""
    from ..prune.winograd import winograd_weights
    cases = []
    for name, w in _convs():
        for out, inp in ((0, 0), (w.shape[0] - 1, w.shape[1] - 1)):
            cases.append((f"kernel [{out}, {inp}] of {name}", (w[out, inp].clone(),), {}))

    def judge(label, got, args, kwargs):
        g = args[0]
        expected = winograd_weights(g[None, None].double())[0, 0]
        try:
            got = torch.as_tensor(got).double()
        except (TypeError, ValueError, RuntimeError):
            return f"expected a 4x4 tensor, got {type(got).__name__}"
        if got.shape != (4, 4):
            return f"U of F(2x2, 3x3) is 4x4, yours is {tuple(got.shape)}"
        if torch.allclose(got, expected, atol=1e-5):
            return None
        if torch.allclose(got, expected.T, atol=1e-5):
            return "you get U transposed: U = G g G^T, with G (4x3) on the left"
        error = float((got - expected).abs().max())
        return f"U differs from G g G^T by up to {error:.3g} (expected row 0: " \
               f"{[round(v, 4) for v in expected[0].tolist()]}, got " \
               f"{[round(v, 4) for v in got[0].tolist()]})"

    return run("winograd_kernel", function, cases, judge,
               "your U equals G g G^T on every kernel tried")
