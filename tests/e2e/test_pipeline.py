"""From checkout to the middle office through the outbox, the relay, Redis and a real worker."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys

from sqlmodel import select

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
from tests.factories import make_product
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
