"""The middle office against PostgreSQL and localstripe: screening real authorised orders,
then capturing their payment and allocating their stock, and the pure allocation plan."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import col, select, update

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from conveyor.templating import create_environment
from fulfilment import allocation
from fulfilment.cancellation import CaptureInProgress, cancel_order
from fulfilment.inventory import (
    BinPick,
    InsufficientStock,
    plan_allocation,
    receive_stock,
    verify_ledger,
)
from fulfilment.payments import capture_order_payment, void_payment
from fulfilment.screening import backtest, gather_facts, screen_order
from models.base import utcnow
from models.catalog import Variant
from models.inventory import (
    Allocation,
    AllocationStatus,
    BinStock,
    Location,
    Reservation,
    ReservationStatus,
    Warehouse,
)
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderEvent, OrderStatus
from models.payments import Payment, PaymentStatus
from models.screening import DEFAULT_RULES, Screening
from storefront import checkout
from tests import shopping
from tests.factories import make_pending_order, make_product, stock_of
from tests.helpers import CARD_OK, wait_for

ENV = create_environment()
# Distinct test cards (distinct fingerprints at localstripe), so card velocity fires only
# where a test means it to.
CARDS = ("4242424242424242", "5555555555554444", "4012888888881881", "5105105105105100",
         "4111111111111111", "4000056655665556", "5200828282828210", "6011111111111117")


# -- helpers ----------------------------------------------------------------------------------


def buy(db: Database, settings: Settings, lines: list[tuple[int, int]], *,
        email: str = "ada@example.com", device: str = "", ip: str = "192.0.2.10",
        card: str = CARD_OK) -> Order:
    """An order placed through checkout and authorised at localstripe."""
    cart_id, view = shopping.cart(db, lines)
    with db.unit_of_work() as uow:
        placed = checkout.place_order(
            uow=uow, cart=view, cart_id=cart_id, details=replace(shopping.DETAILS, email=email),
            pending_order_id=None, client_ip=ip, settings=settings, now=utcnow(),
            device_id=device)
    assert shopping.pay(db, settings, placed.id, card).outcome == checkout.Outcome.AUTHORIZED
    return reload(db, placed.id)


def reload(db: Database, order_id: uuid.UUID) -> Order:
    with db.read_session() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order


def screen(db: Database, settings: Settings, order_id: uuid.UUID) -> Screening | None:
    with db.unit_of_work() as uow:
        return screen_order(uow=uow, order_id=order_id, env=ENV, settings=settings)


def screenings(db: Database, order_id: uuid.UUID) -> list[Screening]:
    with db.read_session() as session:
        return list(session.exec(select(Screening).where(Screening.order_id == order_id)))


def outbox(db: Database, actor: str) -> list[list[Any]]:
    with db.read_session() as session:
        return [m.args for m in session.exec(
            select(OutboxMessage).where(OutboxMessage.actor_name == actor)
            .order_by(col(OutboxMessage.id)))]


def transitions(db: Database, order_id: uuid.UUID) -> list[tuple[str | None, str | None]]:
    with db.read_session() as session:
        return [(e.from_status, e.to_status) for e in session.exec(
            select(OrderEvent).where(OrderEvent.order_id == order_id,
                                     col(OrderEvent.to_status).is_not(None))
            .order_by(col(OrderEvent.id)))]


def set_order(db: Database, order_id: uuid.UUID, **values: Any) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(update(Order).where(col(Order.id) == order_id).values(**values))


def codes(items: list[dict[str, Any]]) -> list[str]:
    return [item["code"] for item in items]


def one_variant(db: Database, stock: int = 20, price: int = 2500) -> int:
    return make_product(db, variants=[("One", price, stock)]).variant_ids[0]


# -- screening --------------------------------------------------------------------------------


def test_a_clean_order_is_approved_explained_and_queued_for_capture(db, settings):
    variant = one_variant(db)
    order = buy(db, settings, [(variant, 1)])

    screening = screen(db, settings, order.id)

    assert screening is not None
    [stored] = screenings(db, order.id)
    assert stored.id == screening.id
    assert (stored.decision, stored.score, stored.rule_set_version) == ("approve", 15, 1)
    assert stored.quality_issues == []
    signals = {s["code"]: s for s in stored.signals}
    assert set(signals) == {"country_mismatch", "new_email_domain"}  # US test card, DE parcel
    for signal in stored.signals:
        assert set(signal) == {"code", "weight", "reason", "facts"}
        assert signal["reason"]
    assert signals["country_mismatch"]["weight"] == 10
    assert signals["country_mismatch"]["facts"] == {"card_country": "US",
                                                    "shipping_country": "DE"}
    assert signals["new_email_domain"]["weight"] == 5
    assert signals["new_email_domain"]["facts"] == {"domain": "example.com"}
    assert reload(db, order.id).status == OrderStatus.APPROVED
    assert outbox(db, "capture_payment") == [[str(order.id)]]
    with db.read_session() as session:
        event = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status == OrderStatus.APPROVED)).one()
    assert (event.actor, event.public) == ("worker:screening", False)
    assert "score 15" in event.note and "country_mismatch (+10)" in event.note
    assert stock_of(db, variant).reserved == 1  # still held until allocation


def test_screening_an_order_again_changes_nothing(db, settings):
    order = buy(db, settings, [(one_variant(db), 1)])
    first = screen(db, settings, order.id)

    again = screen(db, settings, order.id)

    assert first is not None and again is not None and again.id == first.id
    assert len(screenings(db, order.id)) == 1
    assert outbox(db, "capture_payment") == [[str(order.id)]]
    assert transitions(db, order.id) == [
        (None, "pending_payment"), ("pending_payment", "authorized"), ("authorized", "approved")]


def test_screening_an_unknown_or_unpaid_order_does_nothing(db, settings):
    assert screen(db, settings, uuid.uuid4()) is None
    pending = make_pending_order(db)
    assert screen(db, settings, pending) is None
    assert screenings(db, pending) == []
    assert reload(db, pending).status == OrderStatus.PENDING_PAYMENT


def test_two_workers_screening_the_same_order_at_once_screen_it_once(db, settings):
    order = buy(db, settings, [(one_variant(db), 1)])
    results: list[Screening | None] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(screen(db, settings, order.id))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def waiting_for_the_order_lock() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar_one())

    with db.engine.connect() as holder, holder.begin():
        # Both workers queue up behind this lock on the order's row, then go one by one.
        holder.execute(text("SELECT id FROM orders WHERE id = :id FOR UPDATE"),
                       {"id": order.id})
        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: waiting_for_the_order_lock() == 2, timeout=20,
                 what="both workers to wait for the order's lock")
        holder.commit()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert len(results) == 2 and all(r is not None for r in results)
    assert len({r.id for r in results if r is not None}) == 1
    assert len(screenings(db, order.id)) == 1
    assert outbox(db, "capture_payment") == [[str(order.id)]]
    assert transitions(db, order.id)[-1] == ("authorized", "approved")
    assert len(transitions(db, order.id)) == 3


def test_a_disposable_address_ordering_again_and_again_goes_to_review(db, settings):
    variant = one_variant(db)
    email = "burner@mailinator.com"
    for n in range(3):  # earlier orders of the same address, each from its own device and card
        buy(db, settings, [(variant, 1)], email=email, device=f"dev-{n}", card=CARDS[n + 1])
    order = buy(db, settings, [(variant, 1)], email=email, device="dev-x", card=CARDS[5])

    screening = screen(db, settings, order.id)

    assert screening is not None
    assert (screening.decision, screening.score) == ("review", 35 + 25 + 10)
    signals = {s["code"]: s for s in screening.signals}
    assert set(signals) == {"disposable_email", "email_velocity", "country_mismatch"}
    assert signals["disposable_email"]["facts"] == {"domain": "mailinator.com"}
    assert signals["email_velocity"]["facts"] == {"email": email, "orders": 3,
                                                  "window_hours": 24}
    assert "3 other orders" in signals["email_velocity"]["reason"]
    assert reload(db, order.id).status == OrderStatus.ON_HOLD
    assert outbox(db, "capture_payment") == []
    assert outbox(db, "void_payment") == []
    assert stock_of(db, variant).reserved == 4  # an order on hold keeps its stock


def test_a_device_used_for_many_orders_counts_against_the_next(db, settings):
    variant = one_variant(db)
    for n in range(4):
        buy(db, settings, [(variant, 1)], email=f"someone{n}@example.com", device="dev-shared",
            card=CARDS[n + 1])
    order = buy(db, settings, [(variant, 1)], email="fresh@example.com", device="dev-shared",
                card=CARDS[6])

    screening = screen(db, settings, order.id)

    assert screening is not None
    assert {s["code"]: s["weight"] for s in screening.signals} == {
        "device_velocity": 20, "country_mismatch": 10}  # example.com is known by now
    assert (screening.decision, screening.score) == ("approve", 30)


def test_a_high_score_rejects_voids_releases_stock_and_tells_the_customer(db, settings):
    variant = one_variant(db)
    email = "burner@mailinator.com"
    for _ in range(3):  # same address and same card, again and again
        buy(db, settings, [(variant, 1)], email=email)
    order = buy(db, settings, [(variant, 2)], email=email)
    assert stock_of(db, variant).reserved == 5

    screening = screen(db, settings, order.id)

    assert screening is not None
    assert screening.decision == "reject" and screening.score >= 80
    assert {s["code"] for s in screening.signals} == {
        "disposable_email", "email_velocity", "card_velocity", "country_mismatch"}
    assert screening.score == min(100, 35 + 25 + 30 + 10)
    rejected = reload(db, order.id)
    assert rejected.status == OrderStatus.REJECTED
    assert outbox(db, "void_payment") == [[str(rejected.payment_id)]]
    assert outbox(db, "capture_payment") == []
    assert stock_of(db, variant).reserved == 3  # only the earlier orders' units
    with db.read_session() as session:
        held = session.exec(select(Reservation).where(Reservation.order_id == order.id)).all()
        assert {r.status for r in held} == {ReservationStatus.RELEASED}
        [mail] = session.exec(select(Email).where(Email.template == "order_cancelled")).all()
        assert (mail.order_id, mail.to_address) == (order.id, email)
        assert verify_ledger(session) == []
    assert transitions(db, order.id)[-1] == ("authorized", "rejected")


def test_totals_that_do_not_add_up_send_the_order_to_review(db, settings):
    order = buy(db, settings, [(one_variant(db), 2)])
    set_order(db, order.id, total_cents=order.total_cents + 100,
              tax_cents=order.tax_cents + 100)  # the CHECK still holds; the lines do not

    screening = screen(db, settings, order.id)

    assert screening is not None
    assert screening.decision == "review" and screening.score == 15  # below the threshold
    issues = {i["code"]: i for i in screening.quality_issues}
    assert issues["totals_mismatch"]["facts"] == {
        "stored_total_cents": order.total_cents + 100,
        "computed_total_cents": order.total_cents}
    assert issues["totals_mismatch"]["reason"]
    assert issues["amount_mismatch"]["facts"] == {"authorised_cents": order.total_cents,
                                                  "total_cents": order.total_cents + 100}
    assert reload(db, order.id).status == OrderStatus.ON_HOLD


def test_an_item_no_longer_sold_sends_the_order_to_review(db, settings):
    product = make_product(db, variants=[("Kept", 1000, 5), ("Dropped", 1500, 5)])
    kept, dropped = product.variant_ids
    order = buy(db, settings, [(kept, 1), (dropped, 1)])
    with db.unit_of_work() as uow:
        uow.session.execute(update(Variant).where(col(Variant.id) == dropped)
                            .values(active=False))

    screening = screen(db, settings, order.id)

    assert screening is not None
    assert screening.decision == "review"
    assert screening.quality_issues == [{
        "code": "not_sellable", "reason": f"{product.skus[1]} is no longer sold.",
        "facts": {"sku": product.skus[1]}}]


def test_the_same_items_ordered_twice_within_minutes_flag_the_second_as_a_duplicate(
    db, settings
):
    variant = one_variant(db)
    first = buy(db, settings, [(variant, 2)])
    second = buy(db, settings, [(variant, 2)], card=CARDS[1])
    different = buy(db, settings, [(variant, 1)], card=CARDS[2])

    one, two, three = (screen(db, settings, o.id) for o in (first, second, different))

    assert one is not None and two is not None and three is not None
    assert one.quality_issues == [] and one.decision == "approve"
    assert two.quality_issues == [{
        "code": "duplicate_order",
        "reason": f"The same items were ordered by the same customer minutes before "
                  f"({first.number}).",
        "facts": {"other_order": first.number}}]
    assert two.decision == "review"
    assert three.quality_issues == [] and three.decision == "approve"


def test_velocity_counts_only_paid_orders_before_the_authorisation_within_the_window(
    db, settings
):
    variant = one_variant(db)
    email = "velo@example.com"
    old = buy(db, settings, [(variant, 1)], email=email, card=CARDS[1])
    set_order(db, old.id, authorized_at=utcnow() - timedelta(hours=25))  # outside 24 hours
    for n in range(2):
        buy(db, settings, [(variant, 1)], email=email, card=CARDS[2 + n])
    for status in (OrderStatus.PENDING_PAYMENT, OrderStatus.EXPIRED,
                   OrderStatus.PAYMENT_FAILED):  # never paid, even if they had a time on them
        unpaid = make_pending_order(db, email=email)
        set_order(db, unpaid, status=status, authorized_at=utcnow() - timedelta(minutes=5))
    order = buy(db, settings, [(variant, 1)], email=email, card=CARDS[4])
    for n in range(2):  # later orders are not counted against an earlier one
        buy(db, settings, [(variant, 1)], email=email, card=CARDS[5 + n])

    with db.read_session() as session:
        target = session.get(Order, order.id)
        assert target is not None and target.authorized_at is not None
        payment = session.get(Payment, target.payment_id)
        facts = gather_facts(session, target, payment, DEFAULT_RULES, target.authorized_at)
    assert facts.email_orders == 2
    assert facts.customer_orders == 3  # the history has no window, but is still before
    screening = screen(db, settings, order.id)
    assert screening is not None
    assert "email_velocity" not in codes(screening.signals)

    # One more paid order of the same address before it, and the signal fires.
    set_order(db, old.id, authorized_at=utcnow() - timedelta(hours=23))
    with db.read_session() as session:
        target = session.get(Order, order.id)
        assert target is not None and target.authorized_at is not None
        facts = gather_facts(session, target, session.get(Payment, target.payment_id),
                             DEFAULT_RULES, target.authorized_at)
    assert facts.email_orders == 3


def test_earlier_orders_on_the_same_card_count_even_after_their_authorisation_was_voided(
    db, settings
):
    variant = one_variant(db)
    for n in range(3):  # each cancelled, and its authorisation voided at Stripe
        earlier = buy(db, settings, [(variant, 1)], email=f"e{n}@example.com")
        with db.unit_of_work() as uow:
            cancel_order(uow=uow, order_id=earlier.id, reason="Customer asked", actor="test",
                         env=ENV, settings=settings)
        assert earlier.payment_id is not None
        assert void_payment(db=db, gateway=create_gateway(settings), env=ENV,
                            settings=settings, payment_id=earlier.payment_id)
    order = buy(db, settings, [(variant, 1)], email="e9@example.com")

    screening = screen(db, settings, order.id)

    assert screening is not None
    signals = {s["code"]: s for s in screening.signals}
    assert signals["card_velocity"]["facts"]["orders"] == 3
    assert signals["card_velocity"]["weight"] == 30


def test_replaying_the_rules_in_force_changes_no_decision_whatever_happened_since(
    db, settings
):
    product = make_product(db, variants=[("Seasonal", 2500, 20), ("Kept", 1500, 20)])
    seasonal, kept = product.variant_ids
    approved = buy(db, settings, [(seasonal, 1)])
    email = "burner@mailinator.com"
    for _ in range(3):
        buy(db, settings, [(kept, 1)], email=email)
    rejected = buy(db, settings, [(kept, 1)], email=email)
    later = buy(db, settings, [(kept, 1)], email=email)
    for order in (approved, rejected, later):
        screen(db, settings, order.id)
    assert [s.decision for o in (approved, rejected, later) for s in screenings(db, o.id)] == [
        "approve", "reject", "reject"]
    # Since then: the rejected order's authorisation was voided, and a product withdrawn.
    assert rejected.payment_id is not None
    assert void_payment(db=db, gateway=create_gateway(settings), env=ENV, settings=settings,
                        payment_id=rejected.payment_id)
    with db.unit_of_work() as uow:
        uow.session.execute(update(Variant).where(col(Variant.id) == seasonal)
                            .values(active=False))

    with db.read_session() as session:
        report = backtest(session, DEFAULT_RULES)

    assert report.orders == 3
    assert report.changed == []
    assert report.counts == {("approve", "approve"): 1, ("reject", "reject"): 2}


# -- capture and allocation -------------------------------------------------------------------


def approved_order(db: Database, settings: Settings, lines: list[tuple[int, int]]) -> Order:
    order = buy(db, settings, lines)
    screening = screen(db, settings, order.id)
    assert screening is not None and screening.decision == "approve"
    return reload(db, order.id)


def capture(db: Database, settings: Settings, order_id: uuid.UUID) -> str:
    return capture_order_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                 settings=settings, order_id=order_id)


def test_capture_takes_the_payment_once_and_allocates_the_stock(db, settings):
    order = approved_order(db, settings, [(one_variant(db), 2)])

    assert capture(db, settings, order.id) == "captured"

    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        assert payment is not None and payment.stripe_payment_intent_id
    assert (payment.status, payment.captured_cents) == (PaymentStatus.CAPTURED,
                                                        order.total_cents)
    intent = create_gateway(settings).retrieve_intent(payment.stripe_payment_intent_id)
    assert (intent.status, intent.amount) == ("succeeded", order.total_cents)
    assert reload(db, order.id).status == OrderStatus.ALLOCATED  # in the same transaction

    assert capture(db, settings, order.id) == "order is allocated"  # a repeated message

    with db.read_session() as session:
        again = session.get(Payment, order.payment_id)
        assert again is not None
    assert (again.status, again.captured_cents, again.updated_at) == (
        payment.status, payment.captured_cents, payment.updated_at)
    assert transitions(db, order.id)[-2:] == [("authorized", "approved"),
                                              ("approved", "allocated")]


def test_staff_cannot_cancel_while_the_payment_is_being_captured(db, settings):
    order = approved_order(db, settings, [(one_variant(db), 1)])
    with db.unit_of_work() as uow:  # a capture worker took the order and called Stripe...
        payment = uow.session.get(Payment, order.payment_id)
        assert payment is not None
        payment.capture_started_at = utcnow()
    with pytest.raises(CaptureInProgress), db.unit_of_work() as uow:
        cancel_order(uow=uow, order_id=order.id, reason="customer asked", actor="staff",
                     env=ENV, settings=settings)
    assert reload(db, order.id).status == OrderStatus.APPROVED

    assert capture(db, settings, order.id) == "captured"  # ...and finishes
    with db.unit_of_work() as uow:
        cancelled = cancel_order(uow=uow, order_id=order.id, reason="customer asked",
                                 actor="staff", env=ENV, settings=settings)
    assert cancelled.refund_required and cancelled.voids_queued == 0


def test_a_capture_that_died_long_ago_does_not_block_cancelling(db, settings):
    order = approved_order(db, settings, [(one_variant(db), 1)])
    with db.unit_of_work() as uow:
        payment = uow.session.get(Payment, order.payment_id)
        assert payment is not None
        payment.capture_started_at = utcnow() - timedelta(minutes=11)
    with db.unit_of_work() as uow:
        cancelled = cancel_order(uow=uow, order_id=order.id, reason="customer asked",
                                 actor="staff", env=ENV, settings=settings)
    assert cancelled.voids_queued == 1 and not cancelled.refund_required


def test_an_order_that_is_not_approved_is_not_captured(db, settings):
    order = buy(db, settings, [(one_variant(db), 1)], email="hold@mailinator.com")
    assert screen(db, settings, order.id).decision == "review"  # type: ignore[union-attr]

    assert capture(db, settings, order.id) == "order is on_hold"

    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        assert payment is not None and payment.status == PaymentStatus.AUTHORIZED
    assert reload(db, order.id).status == OrderStatus.ON_HOLD


def test_allocation_turns_the_reservation_into_units_set_aside_in_the_bin(db, settings):
    variant = one_variant(db, stock=6)
    order = approved_order(db, settings, [(variant, 2)])
    assert capture(db, settings, order.id) == "captured"  # which allocates as it records

    with db.read_session() as session:
        [allocated] = session.exec(select(Allocation).where(Allocation.order_id == order.id))
        location = session.get(Location, allocated.location_id)
        warehouse = session.get(Warehouse, location.warehouse_id) if location else None
        bin_stock = session.exec(select(BinStock).where(
            BinStock.variant_id == variant,
            BinStock.location_id == allocated.location_id)).one()
        reservations = session.exec(select(Reservation).where(
            Reservation.order_id == order.id)).all()
        assert verify_ledger(session) == []
    assert (allocated.variant_id, allocated.quantity, allocated.status) == (
        variant, 2, AllocationStatus.ALLOCATED)
    assert location is not None and warehouse is not None
    assert (warehouse.code, location.code) == ("TST", "A-01-1")  # the bin the stock is in
    assert (bin_stock.on_hand, bin_stock.allocated) == (6, 2)
    assert {r.status for r in reservations} == {ReservationStatus.CONVERTED}
    item = stock_of(db, variant)
    assert (item.on_hand, item.reserved, item.allocated, item.available) == (6, 0, 2, 4)
    assert reload(db, order.id).status == OrderStatus.ALLOCATED
    assert transitions(db, order.id)[-1] == ("approved", "allocated")

    with db.unit_of_work() as uow:
        assert allocation.allocate_order(uow=uow, order_id=order.id) is None

    with db.read_session() as session:
        assert len(session.exec(select(Allocation)).all()) == 1
        assert verify_ledger(session) == []
    assert stock_of(db, variant).allocated == 2
    assert len(transitions(db, order.id)) == 4


def _bins(db: Database, code: str, *sequences_and_units: tuple[int, int],
          variant: int) -> list[int]:
    """A warehouse with bins (pick sequence, units of `variant`); returns the bins' ids."""
    with db.unit_of_work() as uow:
        warehouse = Warehouse(code=code, name=f"{code} warehouse")
        uow.session.add(warehouse)
        uow.flush()
        assert warehouse.id is not None
        ids = []
        for n, (sequence, units) in enumerate(sequences_and_units):
            location = Location(warehouse_id=warehouse.id, code=f"B-{n}",
                                pick_sequence=sequence)
            uow.session.add(location)
            uow.flush()
            assert location.id is not None
            receive_stock(uow=uow, variant_id=variant, location_id=location.id,
                          quantity=units, actor="test")
            ids.append(location.id)
        return ids


def test_allocation_walks_the_bins_in_pick_sequence_order(db, settings):
    variant = one_variant(db, stock=0)
    late, early = _bins(db, "W1", (20, 5), (10, 2), variant=variant)
    order = approved_order(db, settings, [(variant, 4)])
    assert capture(db, settings, order.id) == "captured"

    with db.unit_of_work() as uow:
        allocation.allocate_order(uow=uow, order_id=order.id)

    with db.read_session() as session:
        rows = session.exec(select(Allocation).where(Allocation.order_id == order.id)
                            .order_by(col(Allocation.id))).all()
        assert verify_ledger(session) == []
    assert [(a.location_id, a.quantity) for a in rows] == [(early, 2), (late, 2)]


def test_cancelling_an_allocated_order_gives_the_units_back(db, settings):
    variant = one_variant(db, stock=5)
    order = approved_order(db, settings, [(variant, 3)])
    assert capture(db, settings, order.id) == "captured"
    with db.unit_of_work() as uow:
        allocation.allocate_order(uow=uow, order_id=order.id)
    assert stock_of(db, variant).allocated == 3

    with db.unit_of_work() as uow:
        cancelled = cancel_order(uow=uow, order_id=order.id, reason="Customer asked",
                                 actor="admin@conveyor.test", env=ENV, settings=settings)

    assert (cancelled.previous_status, cancelled.units_released) == ("allocated", 3)
    assert (cancelled.voids_queued, cancelled.refund_required) == (0, True)  # captured money
    item = stock_of(db, variant)
    assert (item.on_hand, item.allocated, item.reserved) == (5, 0, 0)
    with db.read_session() as session:
        rows = session.exec(select(Allocation).where(Allocation.order_id == order.id)).all()
        assert {a.status for a in rows} == {AllocationStatus.RELEASED}
        assert session.exec(select(BinStock).where(BinStock.variant_id == variant)
                            ).one().allocated == 0
        assert verify_ledger(session) == []
    assert reload(db, order.id).status == OrderStatus.CANCELLED


# -- the allocation plan (pure) ---------------------------------------------------------------

A, B, C = 1, 2, 3  # warehouse ids
X, Y, Z = 101, 102, 103  # variant ids


def test_a_warehouse_that_can_ship_everything_ships_alone():
    free = {X: [(A, 1, 11, 5), (B, 1, 21, 5)], Y: [(A, 1, 12, 1), (B, 1, 22, 3)]}
    assert plan_allocation({X: 2, Y: 2}, free) == [BinPick(X, 21, B, 2), BinPick(Y, 22, B, 2)]


def test_of_several_warehouses_that_can_ship_everything_the_lowest_id_wins():
    free = {X: [(B, 1, 21, 5), (A, 1, 11, 5)], Y: [(B, 1, 22, 5), (A, 1, 12, 5)]}
    assert plan_allocation({X: 1, Y: 1}, free) == [BinPick(X, 11, A, 1), BinPick(Y, 12, A, 1)]


def test_a_line_the_first_warehouse_cannot_fill_is_topped_up_from_the_next():
    free = {X: [(A, 1, 11, 9)], Y: [(A, 1, 12, 1), (B, 1, 22, 9)]}
    # Neither warehouse has everything; each fills one whole line, so A goes first by id.
    assert plan_allocation({X: 2, Y: 2}, free) == [
        BinPick(X, 11, A, 2), BinPick(Y, 12, A, 1), BinPick(Y, 22, B, 1)]


def test_without_one_warehouse_for_everything_those_filling_most_lines_go_first():
    free = {
        X: [(A, 1, 11, 5), (C, 1, 31, 5)],
        Y: [(A, 1, 12, 1), (C, 1, 32, 5)],
        Z: [(A, 1, 13, 5), (B, 1, 23, 5)],
    }
    # A fills X and Z whole, C fills X and Y, B only Z: the order is A, C (two lines each,
    # then by id), B; B is never needed.
    assert plan_allocation({X: 2, Y: 2, Z: 2}, free) == [
        BinPick(X, 11, A, 2), BinPick(Y, 12, A, 1), BinPick(Y, 32, C, 1), BinPick(Z, 13, A, 2)]


def test_the_warehouse_filling_more_whole_lines_beats_a_lower_id():
    free = {
        X: [(A, 1, 11, 5), (B, 1, 21, 5)],
        Y: [(A, 1, 12, 1), (B, 1, 22, 5)],
        Z: [(A, 1, 13, 1), (B, 1, 23, 1), (C, 1, 33, 5)],
    }
    # B fills X and Y whole, A only X, C only Z: B first, then A and C by id.
    assert plan_allocation({X: 2, Y: 2, Z: 2}, free) == [
        BinPick(X, 21, B, 2), BinPick(Y, 22, B, 2), BinPick(Z, 23, B, 1), BinPick(Z, 13, A, 1)]


def test_within_a_warehouse_bins_are_taken_in_pick_sequence_order():
    free = {X: [(A, 30, 11, 4), (A, 10, 12, 1), (A, 20, 13, 2)]}
    assert plan_allocation({X: 5}, free) == [
        BinPick(X, 12, A, 1), BinPick(X, 13, A, 2), BinPick(X, 11, A, 2)]


def test_a_line_that_no_warehouse_together_can_fill_is_a_shortage():
    free = {X: [(A, 1, 11, 2), (B, 1, 21, 1)]}
    with pytest.raises(InsufficientStock) as raised:
        plan_allocation({X: 4}, free)
    [shortage] = raised.value.shortages
    assert (shortage.variant_id, shortage.requested, shortage.available) == (X, 4, 3)
    with pytest.raises(InsufficientStock):
        plan_allocation({Y: 1}, free)  # no bin at all
