"""The method contract (tests/contract_cases.py) of the binary and ternary methods (binary.*, ternary.*)."""
from __future__ import annotations

import pytest
from contract_cases import check_contract, contract_cases, train_data  # noqa: F401 (fixture)


@pytest.mark.parametrize("method_id, cls, arch", contract_cases("binary"))
def test_method_contract(method_id, cls, arch, train_data):  # noqa: F811 (the fixture)
    check_contract(method_id, cls, arch, train_data)
