"""A month of activity at localstripe, pulled by the sync and reconciled to zero differences;
then a removed order, an altered amount and a stray charge each show up once, in their class."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds
from fulfilment.payments import capture_order_payment
from fulfilment.reconciliation import differences, reconcile
from fulfilment.screening import screen_order
from fulfilment.stripe_sync import sync_kind, sync_stripe
from models.finance import (
    DifferenceClass,
    Dispute,
    ReconciliationItem,
    Refund,
    RefundStatus,
    StripeBalanceTransaction,
    StripePayout,
    SyncCursor,
)
from models.orders import Order
from models.payments import Payment
from models.screening import DEFAULT_RULES, RuleSet
from tests import shopping
from tests.factories import make_pending_order, make_product
from tests.helpers import card_token

ENV = shopping.ENV
LATER = datetime.now(UTC) + timedelta(days=10)  # past the grace period for "missing in Stripe"


def _activity(db: Database, settings: Settings, orders: int = 6) -> list[Order]:
    with db.unit_of_work() as uow:  # every test order pays with the same test card
        body = DEFAULT_RULES.model_dump(mode="json")
        body["signals"]["card_velocity"]["weight"] = 0
        uow.session.add(RuleSet(version=2, body=body, note="one test card", created_by="t"))
    variant = make_product(db, variants=[("Std", 2500, 100)]).variant_ids[0]
    gateway = create_gateway(settings)
    made = []
    for n in range(orders):
        cart_id, view = shopping.cart(db, [(variant, 1 + n % 3)])
        order = shopping.place(db, settings, cart_id, view,
                               details=shopping.details_for(f"month{n}@example.com"))
        shopping.pay(db, settings, order.id)
        with db.unit_of_work() as uow:
            screen_order(uow=uow, order_id=order.id, env=ENV, settings=settings)
        capture_order_payment(db=db, gateway=gateway, env=ENV, settings=settings,
                              order_id=order.id)
        made.append(order)
    for order in made[::2]:  # partial refunds on every other order
        with db.unit_of_work() as uow:
            refund = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=700,
                                            lines=[], reason="goodwill", requested_by="fin",
                                            settings=settings)
        refunds.process_refund(db=db, gateway=gateway, env=ENV, settings=settings,
                               refund_id=refund.id)
    return made


def _payout_of_everything(db: Database, settings: Settings) -> None:
    gateway = create_gateway(settings)
    sync_stripe(db=db, gateway=gateway)
    with db.read_session() as session:
        balance = sum(t.net_cents for t in session.exec(select(StripeBalanceTransaction)))
    gateway._call(gateway.client.v1.payouts.create,
                  params={"amount": balance, "currency": "eur"})


def _run(db: Database):
    today = datetime.now(UTC).date()
    with db.unit_of_work() as uow:
        run = reconcile(uow=uow, start=today - timedelta(days=30), end=today,
                        created_by="test", now=LATER)
    with db.read_session() as session:
        items = list(session.exec(select(ReconciliationItem).where(
            ReconciliationItem.run_id == run.id)))
    return run, items


def test_a_month_reconciles_to_zero_then_each_tampering_shows_once(db, settings, localstripe):
    # localstripe keeps every object of the session: start from its empty store.
    urllib.request.urlopen(urllib.request.Request(f"{localstripe}/_config/data",
                                                  method="DELETE"), timeout=10)
    orders = _activity(db, settings)
    _payout_of_everything(db, settings)
    sync_stripe(db=db, gateway=create_gateway(settings))

    run, items = _run(db)
    assert differences(run) == 0, [(i.difference, i.detail) for i in items]
    assert run.matched == len(orders) + len(orders[::2])  # charges and refunds
    with db.read_session() as session:
        payout = session.exec(select(StripePayout)).one()
        tied = session.exec(select(StripeBalanceTransaction).where(
            StripeBalanceTransaction.payout_id == payout.id)).all()
    assert sum(t.net_cents for t in tied) == payout.amount_cents

    # 1. An order vanishes from the shop (its money is still at Stripe).
    with db.unit_of_work() as uow:
        gone = uow.session.exec(select(Payment).where(
            Payment.order_id == orders[1].id, Payment.status == "captured")).one()
        gone.stripe_charge_id = "ch_forgotten"
    # 2. An amount is altered here.
    with db.unit_of_work() as uow:
        altered = uow.session.exec(select(Payment).where(
            Payment.order_id == orders[3].id, Payment.status == "captured")).one()
        altered.captured_cents += 1
    # 3. A stray charge at Stripe that no order made.
    gateway = create_gateway(settings)
    token = gateway._call(gateway.client.v1.tokens.retrieve,
                          card_token(settings.stripe_api_base))
    gateway._call(gateway.client.v1.charges.create, params={
        "amount": 999, "currency": "eur", "source": token.to_dict()["card"]["id"]})
    sync_stripe(db=db, gateway=gateway)

    run, items = _run(db)
    found = sorted((i.difference, i.balance_transaction_id or str(i.payment_id)) for i in items)
    by_class = {}
    for difference, _ in found:
        by_class[difference] = by_class.get(difference, 0) + 1
    # The vanished order: its charge has no order (missing in the shop) and the payment that
    # lost its charge id has no charge (missing in Stripe).
    assert by_class == {DifferenceClass.MISSING_IN_SHOP: 2,
                        DifferenceClass.MISSING_IN_STRIPE: 1,
                        DifferenceClass.AMOUNT_MISMATCH: 1}, found
    stray = [i for i in items if i.difference == DifferenceClass.MISSING_IN_SHOP
             and i.actual_cents == 999]
    assert len(stray) == 1
    [mismatch] = [i for i in items if i.difference == DifferenceClass.AMOUNT_MISMATCH]
    assert mismatch.expected_cents == mismatch.actual_cents + 1


def test_an_interrupted_sync_goes_on_where_it_stopped(db, settings):
    _activity(db, settings, orders=4)
    gateway = create_gateway(settings)
    stored = sync_kind(db=db, gateway=gateway, kind="balance_transactions", page_size=2,
                       max_pages=1)  # stopped after one page
    assert stored == 2
    with db.read_session() as session:
        cursor = session.get(SyncCursor, "balance_transactions")
        assert cursor.resume_after_id and not cursor.newest_id
    sync_kind(db=db, gateway=gateway, kind="balance_transactions", page_size=2)  # resumes

    def stored_ids() -> set[str]:
        with db.read_session() as session:
            return set(session.exec(select(StripeBalanceTransaction.id)))

    at_stripe: set[str] = set()
    after = None
    while True:
        page, more = gateway.list_page("balance_transactions", starting_after=after)
        at_stripe |= {item["id"] for item in page}
        if not more or not page:
            break
        after = page[-1]["id"]
    assert stored_ids() == at_stripe  # nothing missed...
    sync_kind(db=db, gateway=gateway, kind="balance_transactions", page_size=2)
    assert stored_ids() == at_stripe  # ...and nothing doubled by running again
    with db.read_session() as session:
        cursor = session.get(SyncCursor, "balance_transactions")
    assert cursor.newest_id and not cursor.resume_after_id


def _paid(db: Database, charge_id: str, cents: int, captured_at: datetime) -> Payment:
    order_id = make_pending_order(db, total_cents=cents)
    with db.unit_of_work() as uow:
        payment = Payment(order_id=order_id, attempt=1, status="captured", amount_cents=cents,
                          captured_cents=cents, stripe_charge_id=charge_id,
                          stripe_payment_intent_id="pi_" + charge_id, captured_at=captured_at)
        uow.session.add(payment)
        uow.flush()
        return payment


def _moved(db: Database, *rows: tuple[str, str, str, int, int, str, datetime, str | None]) -> None:
    with db.unit_of_work() as uow:
        for txn, kind, source, amount, fee, currency, created, payout in rows:
            uow.session.add(StripeBalanceTransaction(
                id=txn, type=kind, source=source, amount_cents=amount, fee_cents=fee,
                net_cents=amount - fee, currency=currency, created=created, payout_id=payout))


def test_duplicates_currencies_payouts_fees_and_the_grace_period(db):
    """The classes localstripe cannot produce (it takes no fees and never double-books), from
    balance transactions as real Stripe would give them."""
    day1 = datetime(2026, 6, 10, 9, 0, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    now = day2 + timedelta(days=1, hours=12)  # past the grace for day 1, not for day 2
    a = _paid(db, "ch_a", 1000, day1)
    b = _paid(db, "ch_b", 2000, day1)
    _paid(db, "ch_gone", 3000, day1 - timedelta(days=3))  # before the period: not ours to judge
    c = _paid(db, "ch_c", 3000, day1)  # Stripe never booked it
    _paid(db, "ch_fresh", 4000, day2)  # no transaction yet, but within the grace period
    with db.unit_of_work() as uow:
        kept = Refund(order_id=a.order_id, payment_id=a.id, amount_cents=400, reason="dent",
                      status=RefundStatus.SUCCEEDED, stripe_refund_id="re_a", requested_by="f",
                      processed_at=day2)
        lost = Refund(order_id=b.order_id, payment_id=b.id, amount_cents=500, reason="late",
                      status=RefundStatus.SUCCEEDED, stripe_refund_id="re_b", requested_by="f",
                      processed_at=day1)
        uow.session.add_all([kept, lost])
        uow.session.add(Dispute(id="dp_1", payment_id=b.id, order_id=b.order_id,
                                charge_id="ch_b", amount_cents=2000, status="needs_response"))
    _moved(db,
           ("txn_a", "charge", "ch_a", 1000, 30, "eur", day1, "po_ok"),
           ("txn_a2", "charge", "ch_a", 1000, 30, "eur", day1, "po_ok"),
           ("txn_b", "charge", "ch_b", 2000, 60, "usd", day1, "po_short"),
           ("txn_ra", "refund", "re_a", -400, 0, "eur", day2, None),
           ("txn_dp", "adjustment", "dp_1", -2000, 1500, "eur", day2, None))
    with db.unit_of_work() as uow:
        uow.session.add(StripePayout(id="po_ok", amount_cents=2 * 970, currency="eur",
                                     status="paid", created=day2))
        uow.session.add(StripePayout(id="po_short", amount_cents=2000, currency="eur",
                                     status="paid", created=day2))

    with db.unit_of_work() as uow:
        run = reconcile(uow=uow, start=day1.date(), end=day2.date(), created_by="test",
                        now=now)
    with db.read_session() as session:
        items = session.exec(select(ReconciliationItem).where(
            ReconciliationItem.run_id == run.id)).all()
        numbers = {p.id: session.get(Order, p.order_id).number for p in (a, b, c)}
    found = sorted((i.difference, i.balance_transaction_id or i.payout_id or str(
        i.refund_id or i.payment_id)) for i in items if i.difference != "fee_recorded")
    assert found == sorted([
        (DifferenceClass.DUPLICATE, "txn_a2"),
        (DifferenceClass.CURRENCY_MISMATCH, "txn_b"),
        (DifferenceClass.MISSING_IN_STRIPE, str(c.id)),
        (DifferenceClass.MISSING_IN_STRIPE, str(lost.id)),
        (DifferenceClass.PAYOUT_MISMATCH, "po_short"),
    ])
    by_difference = {i.difference: i for i in items}
    assert by_difference[DifferenceClass.DUPLICATE].order_number == numbers[a.id]
    assert by_difference[DifferenceClass.PAYOUT_MISMATCH].actual_cents == 1940
    fees = sorted((i.detail, i.currency, i.actual_cents) for i in items
                  if i.difference == "fee_recorded")
    assert fees == [(f"Stripe's fees on 1 transaction on {day1.date()}", "USD", 60),
                    (f"Stripe's fees on 1 transaction on {day2.date()}", "EUR", 1500),
                    (f"Stripe's fees on 2 transactions on {day1.date()}", "EUR", 60)]
    # txn_a, txn_b and txn_ra are matched; txn_a2 is not (the same charge booked twice).
    assert run.matched == 3
    assert differences(run) == 5
