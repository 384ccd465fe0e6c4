"""The weighted average unit cost a receipt leaves behind: integer cents, halves rounded up."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fulfilment.receiving import weighted_average_cost


@pytest.mark.parametrize(("on_hand", "old", "received", "cost", "expected"), [
    (0, 0, 10, 500, 500),  # nothing before: the line's cost
    (10, 0, 10, 500, 250),  # stock of unknown (0) cost weighs in
    (20, 250, 5, 333, 267),  # 266.6 -> 267
    (1, 100, 1, 101, 101),  # 100.5: a half goes up
    (3, 100, 1, 101, 100),  # 100.25 -> 100
    (1, 101, 1, 100, 101),  # 100.5 again, from the other side
    (5, 999, 5, 999, 999),  # same cost: unchanged
])
def test_examples(on_hand, old, received, cost, expected):
    assert weighted_average_cost(on_hand, old, received, cost) == expected


@given(st.integers(0, 10**7), st.integers(0, 2**31 - 1), st.integers(1, 10**6),
       st.integers(0, 2**31 - 1))
def test_it_is_the_exact_average_rounded_half_up_and_lies_between_the_two_costs(
    on_hand, old, received, cost
):
    exact = (Decimal(on_hand * old + received * cost) / Decimal(on_hand + received))
    result = weighted_average_cost(on_hand, old, received, cost)
    assert result == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert min(old, cost) <= result <= max(old, cost) or on_hand == 0


def test_no_units_received_is_a_programming_error():
    with pytest.raises(ValueError, match="positive"):
        weighted_average_cost(5, 100, 0, 200)
