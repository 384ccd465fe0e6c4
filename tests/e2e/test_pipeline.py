"""From checkout to the middle office through the outbox, the relay, Redis and a real worker."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys

from sqlmodel import select
from starlette.testclient import TestClient

from admin.app import create_app as create_admin
from conveyor.db import Database
from conveyor.settings import PROJECT_ROOT, Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment.inventory import verify_ledger
from models.inventory import Allocation
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderEvent, OrderStatus
from models.payments import Payment, PaymentStatus
from models.screening import Screening
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff, stock_of
from tests.helpers import CARD_3DS, process_env, wait_for


def test_a_clean_order_goes_through_screening_capture_and_allocation_with_real_workers(
    db: Database, settings: Settings, start_pipeline
):
    variant = make_product(db, variants=[("One", 2500, 4)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    assert shopping.pay(db, settings, order.id).outcome == "authorized"

    start_pipeline(settings)

    def ready_to_pick() -> bool:
        with db.read_session() as session:
            return session.get(Order, order.id).status == OrderStatus.ALLOCATED

    wait_for(ready_to_pick, timeout=60, what="the order to be screened, captured, allocated")
    with db.read_session() as session:
        path = session.exec(select(OrderEvent.to_status).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status != None)  # noqa: E711
            .order_by(OrderEvent.id)).all()
        assert path == ["pending_payment", "authorized", "approved", "allocated"]
        screening = session.exec(select(Screening).where(Screening.order_id == order.id)).one()
        assert screening.decision == "approve"
        payment = session.exec(select(Payment).where(Payment.order_id == order.id)).one()
        assert (payment.status, payment.captured_cents) == ("captured", order.total_cents)
        allocations = session.exec(select(Allocation).where(
            Allocation.order_id == order.id)).all()
        assert sum(a.quantity for a in allocations) == 1
        assert verify_ledger(session) == []
    intent = create_gateway(settings).retrieve_intent(payment.stripe_payment_intent_id)
    assert intent.status == "succeeded"

    def sent() -> Email | None:
        with db.read_session() as session:
            row = session.exec(select(Email).where(Email.order_id == order.id)).one()
            return row if row.sent_at is not None else None

    sent_email = wait_for(sent, timeout=30, what="the confirmation email")
    [eml] = list(settings.mail_dir.glob(f"*{sent_email.id.hex[:12]}.eml"))
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == f"Your order {order.number}"
    body = message.get_body(preferencelist=("plain",)).get_content()
    assert f"/orders/{order.status_token}" in body
    with db.read_session() as session:
        unpublished = session.exec(select(OutboxMessage).where(
            OutboxMessage.published_at == None)).all()  # noqa: E711
    assert unpublished == []


def test_sync_payments_finds_a_payment_whose_events_never_came(db: Database, settings: Settings):
    variant = make_product(db, variants=[("One", 2500, 4)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    outcome = shopping.pay(db, settings, order.id, CARD_3DS)
    with db.read_session() as session:
        payment = session.exec(select(Payment).where(Payment.order_id == order.id)).one()
    shopping.authenticate(settings, payment.stripe_payment_intent_id, outcome.client_secret)

    result = subprocess.run(
        [sys.executable, "-m", "conveyor.cli", "sync-payments"], env=process_env(settings),
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert "checked 1 payment(s): 1 updated" in result.stdout
    with db.read_session() as session:
        assert session.get(Payment, payment.id).status == PaymentStatus.AUTHORIZED
        assert session.exec(select(OrderEvent.to_status).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status == OrderStatus.AUTHORIZED)
        ).all() == [OrderStatus.AUTHORIZED]


def _paid(db: Database, settings: Settings, variant: int, email: str, units: int = 1):
    cart_id, view = shopping.cart(db, [(variant, units)])
    order = shopping.place(db, settings, cart_id, view, details=shopping.details_for(email))
    assert shopping.pay(db, settings, order.id).outcome == "authorized"
    return order


def _status_of(db: Database, order_id) -> str:
    with db.read_session() as session:
        return session.get(Order, order_id).status


def test_a_risky_order_waits_for_a_reviewer_whose_approval_completes_it(
    db: Database, settings: Settings, start_pipeline
):
    variant = make_product(db, variants=[("Std", 2500, 20)]).variant_ids[0]
    risky = _paid(db, settings, variant, "someone@mailinator.com")  # disposable + US card
    start_pipeline(settings)
    wait_for(lambda: _status_of(db, risky.id) == OrderStatus.ON_HOLD, timeout=60,
             what="the risky order to be held")

    reviewer = make_staff(db, "reviewer")
    with TestClient(create_admin(settings, db=db)) as admin:
        token = login(admin, reviewer)
        queue = admin.get("/api/review-queue", headers=bearer(token)).json()
        [item] = queue["items"]
        assert item["number"] == risky.number and item["score"] >= 40
        assert {s["code"] for s in item["signals"]} >= {"disposable_email", "country_mismatch"}
        decided = admin.post(f"/api/orders/{risky.number}/approve", headers=bearer(token),
                             json={"reason": "Called the customer; genuine order."})
        assert decided.status_code == 200

    wait_for(lambda: _status_of(db, risky.id) == OrderStatus.ALLOCATED, timeout=60,
             what="the approved order to be captured and allocated")
    with db.read_session() as session:
        payment = session.exec(select(Payment).where(Payment.order_id == risky.id)).one()
        assert payment.status == PaymentStatus.CAPTURED


def test_a_very_risky_order_is_rejected_voided_and_its_stock_released(
    db: Database, settings: Settings, start_pipeline
):
    variant = make_product(db, variants=[("Std", 1500, 40)]).variant_ids[0]
    email = "burst@mailinator.com"
    for _ in range(3):  # three orders in the last hours from the same address...
        _paid(db, settings, variant, email)
    worst = _paid(db, settings, variant, email, units=6)  # ...and a fourth, of six units
    start_pipeline(settings)
    wait_for(lambda: _status_of(db, worst.id) == OrderStatus.REJECTED, timeout=60,
             what="the order to be rejected")

    def voided() -> bool:
        with db.read_session() as session:
            payment = session.exec(select(Payment).where(Payment.order_id == worst.id)).one()
            return payment.status == PaymentStatus.CANCELED

    wait_for(voided, timeout=60, what="the authorisation to be voided")
    with db.read_session() as session:
        screening = session.exec(select(Screening).where(Screening.order_id == worst.id)).one()
        payment = session.exec(select(Payment).where(Payment.order_id == worst.id)).one()
        assert screening.decision == "reject" and screening.score >= 80
        assert {s["code"] for s in screening.signals} >= {"email_velocity", "sku_quantity",
                                                         "disposable_email"}
        assert session.exec(select(Email).where(Email.order_id == worst.id,
                                                Email.template == "order_cancelled")).one()
        assert verify_ledger(session) == []
    assert create_gateway(settings).retrieve_intent(
        payment.stripe_payment_intent_id).status == "canceled"
    held_by_others = 3  # the first three orders keep (or have allocated) their units
    item = stock_of(db, variant)
    assert item.reserved + item.allocated == held_by_others
