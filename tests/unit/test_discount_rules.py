"""The pure rules of discount codes: validity, limits, what each line gets, totals with a code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.discounts import (
    DiscountCode,
    DiscountKind,
    DiscountLine,
    Refusal,
    describe,
    evaluate,
    normalise_code,
    spread,
)
from models.pricing import order_totals
from models.shipping import DEFAULT_SHIPPING, SHIPPING_METHODS

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SHIRT = DiscountLine(product_id=1, category_id=10, total_cents=4000)
MUG = DiscountLine(product_id=2, category_id=20, total_cents=1000)


def code(**changes: object) -> DiscountCode:
    values: dict[str, object] = {"code": "SAVE10", "kind": DiscountKind.PERCENT, "value": 1000}
    values.update(changes)
    return DiscountCode(**values)


def test_a_percentage_comes_off_every_line_in_proportion():
    verdict = evaluate(code(), [SHIRT, MUG], now=NOW)
    assert verdict.ok and verdict.refusal is None
    assert verdict.line_discounts == (400, 100)
    assert verdict.discount_cents == 500


def test_a_fixed_amount_is_spread_to_the_cent_and_never_exceeds_what_the_items_cost():
    assert evaluate(code(kind=DiscountKind.FIXED, value=999), [SHIRT, MUG],
                    now=NOW).line_discounts == (799, 200)
    whole = evaluate(code(kind=DiscountKind.FIXED, value=10_000), [SHIRT, MUG], now=NOW)
    assert whole.line_discounts == (4000, 1000)


@pytest.mark.parametrize(("changes", "refusal", "words"), [
    ({"paused": True}, Refusal.PAUSED, "cannot be used at the moment"),
    ({"starts_at": NOW + timedelta(minutes=1)}, Refusal.NOT_YET_VALID, "valid from"),
    ({"ends_at": NOW}, Refusal.EXPIRED, "has expired"),
    ({"min_spend_cents": 5001}, Refusal.MIN_SPEND, "at least €50.01"),
    ({"product_ids": [99], "category_ids": [98]}, Refusal.NOT_APPLICABLE, "does not apply"),
])
def test_each_refusal_is_said_in_plain_words(changes, refusal, words):
    verdict = evaluate(code(**changes), [SHIRT, MUG], now=NOW)
    assert verdict.refusal == refusal and not verdict.ok
    assert words in verdict.message and "SAVE10" in verdict.message
    assert verdict.discount_cents == 0


def test_an_unknown_code_is_named_back_to_the_shopper():
    verdict = evaluate(None, [SHIRT], now=NOW, typed="NOPE")
    assert verdict.refusal == Refusal.UNKNOWN
    assert verdict.message == "We do not know the code NOPE. Please check it."


def test_validity_is_to_the_minute_start_included_end_excluded():
    window = code(starts_at=NOW, ends_at=NOW + timedelta(minutes=1))
    assert evaluate(window, [SHIRT], now=NOW - timedelta(seconds=1)).refusal == (
        Refusal.NOT_YET_VALID)
    assert evaluate(window, [SHIRT], now=NOW).ok
    assert evaluate(window, [SHIRT], now=NOW + timedelta(seconds=59)).ok
    assert evaluate(window, [SHIRT], now=NOW + timedelta(minutes=1)).refusal == Refusal.EXPIRED


def test_limits_compare_the_uses_that_still_count():
    limited = code(usage_limit=5, per_customer_limit=1)
    assert evaluate(limited, [SHIRT], now=NOW, uses=4, uses_by_customer=0).ok
    assert evaluate(limited, [SHIRT], now=NOW, uses=5).refusal == Refusal.USED_UP
    mine = evaluate(limited, [SHIRT], now=NOW, uses=1, uses_by_customer=1)
    assert mine.refusal == Refusal.USED_BY_YOU
    assert mine.message == "You have already used the code SAVE10."


def test_restricted_codes_discount_only_listed_products_or_categories():
    by_product = evaluate(code(product_ids=[2]), [SHIRT, MUG], now=NOW)
    assert by_product.line_discounts == (0, 100)
    by_category = evaluate(code(category_ids=[10]), [SHIRT, MUG], now=NOW)
    assert by_category.line_discounts == (400, 0)
    either = evaluate(code(product_ids=[2], category_ids=[10]), [SHIRT, MUG], now=NOW)
    assert either.line_discounts == (400, 100)


def test_the_minimum_spend_counts_only_the_items_the_code_applies_to():
    mugs_only = code(product_ids=[2], min_spend_cents=1500)
    assert evaluate(mugs_only, [SHIRT, MUG], now=NOW).refusal == Refusal.MIN_SPEND
    assert evaluate(mugs_only, [SHIRT, MUG, MUG], now=NOW).ok
    assert evaluate(code(min_spend_cents=5000), [SHIRT, MUG], now=NOW).ok  # exactly reached


def test_codes_are_typed_in_any_case_and_spacing():
    assert normalise_code("  save 10 ") == "SAVE10"
    assert describe(code()) == "10% off"
    assert describe(code(kind=DiscountKind.FIXED, value=500)) == "€5.00 off"


@given(amount=st.integers(0, 1_000_000),
       weights=st.lists(st.integers(0, 100_000), min_size=1, max_size=12))
def test_spreading_sums_exactly_and_no_line_gets_more_than_it_costs(amount, weights):
    amount = min(amount, sum(weights))
    shares = spread(amount, weights)
    assert sum(shares) == (amount if sum(weights) else 0)
    assert all(0 <= share <= weight for share, weight in zip(shares, weights, strict=True))


def test_vat_is_on_the_discounted_goods_plus_shipping():
    totals = order_totals(10_000, SHIPPING_METHODS[1], "DE", 2_000)
    assert (totals.discount_cents, totals.shipping_cents) == (2_000, 1290)
    assert totals.tax_cents == round((8_000 + 1290) * 0.19)
    assert totals.total_cents == 10_000 - 2_000 + 1290 + totals.tax_cents


def test_free_shipping_is_judged_on_the_subtotal_after_the_discount():
    assert DEFAULT_SHIPPING.free_from_cents == 7500
    assert order_totals(8_000, DEFAULT_SHIPPING, "DE").shipping_cents == 0
    assert order_totals(8_000, DEFAULT_SHIPPING, "DE", 800).shipping_cents == 490
    with pytest.raises(ValueError, match="between nothing and the whole subtotal"):
        order_totals(8_000, DEFAULT_SHIPPING, "DE", 8_001)
