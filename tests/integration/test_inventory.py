"""Stock writes on PostgreSQL: reservations, releases, the ledger, and real races."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlmodel import func, select

from conveyor.db import Database
from fulfilment.inventory import (
    InsufficientStock,
    LineRequest,
    release_reservations,
    reserve_lines,
    verify_ledger,
)
from models.base import utcnow
from models.inventory import Reservation, ReservationStatus, StockMovement
from tests.factories import make_pending_order, make_product, stock_of


def _movements(db: Database) -> int:
    with db.read_session() as session:
        return session.exec(select(func.count()).select_from(StockMovement)).one()


def test_a_reservation_holds_units_until_released_and_the_ledger_agrees(db: Database):
    product = make_product(db, variants=[("M", 1000, 8), ("L", 1000, 3)])
    m, large = product.variant_ids
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, until=utcnow() + timedelta(minutes=15),
                      lines=[LineRequest(m, 2), LineRequest(large, 3), LineRequest(m, 1)])
    assert (stock_of(db, m).reserved, stock_of(db, m).available) == (3, 5)
    assert stock_of(db, large).available == 0
    with db.read_session() as session:
        assert verify_ledger(session) == []

    with db.unit_of_work() as uow:
        assert release_reservations(uow=uow, order_id=order_id, reason="test") == 6
    with db.unit_of_work() as uow:
        assert release_reservations(uow=uow, order_id=order_id, reason="again") == 0
    assert stock_of(db, m).reserved == 0 and stock_of(db, large).available == 3
    with db.read_session() as session:
        assert verify_ledger(session) == []


def test_asking_for_more_than_is_free_changes_nothing_and_names_every_short_line(db: Database):
    product = make_product(db, variants=[("A", 500, 2), ("B", 500, 1), ("C", 500, 9)])
    a, b, c = product.variant_ids
    order_id = make_pending_order(db)
    before = _movements(db)
    with pytest.raises(InsufficientStock) as raised, db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, until=utcnow(),
                      lines=[LineRequest(a, 3), LineRequest(b, 1), LineRequest(c, 1),
                             LineRequest(999_999, 1)])
    shortages = {(s.variant_id, s.requested, s.available) for s in raised.value.shortages}
    assert shortages == {(a, 3, 2), (999_999, 1, 0)}
    assert _movements(db) == before
    assert [stock_of(db, v).reserved for v in (a, b, c)] == [0, 0, 0]


def test_reserving_the_same_lines_again_only_moves_the_deadline(db: Database):
    variant = make_product(db, variants=[("One", 700, 5)]).variant_ids[0]
    order_id = make_pending_order(db)
    later = utcnow() + timedelta(minutes=30)
    for until in (utcnow() + timedelta(minutes=15), later):
        with db.unit_of_work() as uow:
            reserve_lines(uow=uow, order_id=order_id, until=until,
                          lines=[LineRequest(variant, 2)])
    with db.read_session() as session:
        live = list(session.exec(select(Reservation).where(
            Reservation.order_id == order_id, Reservation.status == ReservationStatus.LIVE)))
    assert [(r.quantity, r.expires_at) for r in live] == [(2, later)]
    assert stock_of(db, variant).reserved == 2
    assert _movements(db) == 2  # the receipt and one reservation


def test_changed_lines_replace_the_old_reservation_in_one_step(db: Database):
    product = make_product(db, variants=[("X", 100, 4), ("Y", 100, 4)])
    x, y = product.variant_ids
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, until=utcnow(), lines=[LineRequest(x, 4)])
    with db.unit_of_work() as uow:  # all four of x are ours to give back and take again
        reserve_lines(uow=uow, order_id=order_id, until=utcnow(),
                      lines=[LineRequest(x, 3), LineRequest(y, 4)])
    assert (stock_of(db, x).reserved, stock_of(db, y).reserved) == (3, 4)
    with db.read_session() as session:
        assert verify_ledger(session) == []


def test_forty_racing_reservations_for_five_units_leave_exactly_five_held(db: Database):
    variant = make_product(db, variants=[("Last ones", 2500, 5)]).variant_ids[0]
    orders = [make_pending_order(db, email=f"racer{i}@example.com") for i in range(40)]

    def attempt(order_id):
        try:
            with db.unit_of_work() as uow:
                reserve_lines(uow=uow, order_id=order_id, until=utcnow() + timedelta(minutes=5),
                              lines=[LineRequest(variant, 1)])
            return True
        except InsufficientStock:
            return False

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(attempt, orders))
    assert results.count(True) == 5
    item = stock_of(db, variant)
    assert (item.on_hand, item.reserved, item.available) == (5, 5, 0)
    with db.read_session() as session:
        assert verify_ledger(session) == []
