"""Property-based test (Hypothesis) that values inside every field's domain work: for each
method of ``workbench.METHODS``, a few fields changed at once to generated values (on top of
the smoke settings; fields that cost time no higher than their smoke value) apply on the
smallest zoo network it supports, with small data. The outcome is either a ValueError of the
house shape (a rule between fields, or settings that do not fit this network) or a network with
finite outputs whose file decodes to the same outputs. The strategies and the check are in
``test_properties_methods.py``; a method applies at about smoke cost, so CI draws one example
per method and ``WORKBENCH_PROPERTIES=long`` thirty. The architecture methods (``arch.*``,
each a CIFAR-10 network trained for an epoch) are in ``test_properties_apply_arch.py``, so that
each file stays within CI's time per file.
"""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties_methods import (
    METHOD_ITEMS,
    apply_problem,
    budget,
    draw_changes,
)


def chosen(architectures: bool) -> list:
    return [pytest.param(mid, cls, id=mid) for mid, cls in METHOD_ITEMS
            if mid.startswith("arch.") == architectures]


@pytest.mark.parametrize("method_id, cls", chosen(architectures=False))
@budget(ci=1, long=30, seconds=60)
@given(st.data())
def test_good_values_apply(method_id, cls, data):
    changes = draw_changes(cls, data.draw)
    problem = apply_problem(cls, changes)
    assert problem is None, problem
