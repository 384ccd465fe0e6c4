from datetime import UTC, datetime, timedelta

from models.catalog import Variant, effective_price_cents, next_price_change, sale_is_on

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def variant(**sale):
    return Variant(product_id=1, sku="S-1", name="Standard", price_cents=2000, **sale)


def test_a_sale_starts_on_its_minute_and_ends_on_its_minute():
    v = variant(sale_price_cents=1500, sale_starts_at=NOON,
                sale_ends_at=NOON + timedelta(hours=1))
    assert effective_price_cents(v, NOON - timedelta(seconds=1)) == 2000
    assert effective_price_cents(v, NOON) == 1500
    assert effective_price_cents(v, NOON + timedelta(minutes=59, seconds=59)) == 1500
    assert effective_price_cents(v, NOON + timedelta(hours=1)) == 2000


def test_an_open_ended_sale_runs_until_it_is_given_an_end():
    v = variant(sale_price_cents=1500, sale_starts_at=NOON)
    assert sale_is_on(v, NOON + timedelta(days=365))
    assert not sale_is_on(v, NOON - timedelta(minutes=1))


def test_without_a_sale_price_there_is_no_sale_and_no_price_change():
    v = variant()
    assert not sale_is_on(v, NOON)
    assert next_price_change(v, NOON) is None


def test_next_price_change_is_the_next_window_edge():
    v = variant(sale_price_cents=1500, sale_starts_at=NOON,
                sale_ends_at=NOON + timedelta(hours=1))
    assert next_price_change(v, NOON - timedelta(days=1)) == NOON
    assert next_price_change(v, NOON) == NOON + timedelta(hours=1)
    assert next_price_change(v, NOON + timedelta(hours=2)) is None
