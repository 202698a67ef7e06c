"""``test_properties_apply.py``'s property for the architecture methods (``arch.*``): values
inside every field's domain build, train (an epoch on a small CIFAR-10 subset) and store a
network, or are refused with a ValueError of the house shape."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties_apply import chosen
from test_properties_methods import apply_problem, budget, draw_changes


@pytest.mark.parametrize("method_id, cls", chosen(architectures=True))
@budget(ci=1, long=30, seconds=60)
@given(st.data())
def test_good_values_apply_to_architectures(method_id, cls, data):
    changes = draw_changes(cls, data.draw)
    problem = apply_problem(cls, changes)
    assert problem is None, problem
