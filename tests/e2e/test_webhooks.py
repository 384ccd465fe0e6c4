"""`POST /stripe/webhook` on a live storefront: signatures, duplicates, order, Redis outages."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
from sqlmodel import col, func, select

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from conveyor.templating import create_environment
from fulfilment import payments
from models.messaging import OutboxMessage, StripeEvent
from models.orders import Order, OrderEvent, OrderStatus
from models.payments import Payment, PaymentStatus
from models.screening import Screening
from tests import shopping
from tests.conftest import WEBHOOK_SECRET
from tests.e2e.conftest import RedisServer
from tests.factories import make_product
from tests.helpers import CARD_3DS, CARD_DECLINED, sign_payload, stripe_event, wait_for

ENV = create_environment()


def _post(base: str, payload: bytes, signature: str) -> httpx.Response:
    return httpx.post(f"{base}/stripe/webhook", content=payload, timeout=10,
                      headers={"stripe-signature": signature,
                               "content-type": "application/json"})


def _intent(settings: Settings, payment: Payment, status: str) -> dict[str, object]:
    """The intent as Stripe describes it in an event, read from localstripe and restated."""
    assert payment.stripe_payment_intent_id is not None
    intent = create_gateway(settings).retrieve_intent(payment.stripe_payment_intent_id)
    return {"id": intent.id, "object": "payment_intent", "status": status,
            "amount": intent.amount, "currency": "eur", "metadata": intent.metadata,
            "last_payment_error": {"code": "card_declined", "message": "Declined."}
            if status == "requires_payment_method" else None}


def _order_waiting_for_3ds(db: Database, settings: Settings, *, decline_first: bool = False):
    variant = make_product(db, variants=[("One", 2000, 3)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 1)])
    order = shopping.place(db, settings, cart_id, view)
    if decline_first:
        shopping.pay(db, settings, order.id, CARD_DECLINED)
    shopping.pay(db, settings, order.id, CARD_3DS)
    with db.read_session() as session:
        attempts = list(session.exec(select(Payment).where(Payment.order_id == order.id)
                                     .order_by(col(Payment.attempt))))
    return order, attempts


def _process_stored(db: Database, settings: Settings) -> list[str]:
    """What the worker's process_stripe_event does, for every stored event, in arrival order."""
    with db.read_session() as session:
        ids = [e.id for e in session.exec(select(StripeEvent).order_by(
            col(StripeEvent.received_at)))]
    outcomes = []
    for event_id in ids:
        with db.unit_of_work() as uow:
            outcomes.append(payments.process_event(uow=uow, event_id=event_id, env=ENV,
                                                   settings=settings))
    return outcomes


def _authorized_transitions(db: Database, order_id: uuid.UUID) -> int:
    with db.read_session() as session:
        return session.exec(select(func.count()).select_from(OrderEvent).where(
            OrderEvent.order_id == order_id, OrderEvent.to_status == OrderStatus.AUTHORIZED)
        ).one()


def test_a_bad_signature_or_an_old_timestamp_is_refused_and_nothing_is_kept(
    db: Database, live_storefront: str
):
    payload = stripe_event("evt_forged", "payment_intent.succeeded",
                           {"id": "pi_x", "object": "payment_intent", "status": "succeeded"})
    assert _post(live_storefront, payload, sign_payload(payload, "whsec_wrong")).status_code == 400
    assert _post(live_storefront, payload, "garbage").status_code == 400
    stale = sign_payload(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 301)
    assert _post(live_storefront, payload, stale).status_code == 400
    tampered = sign_payload(payload, WEBHOOK_SECRET)
    assert _post(live_storefront, payload.replace(b"pi_x", b"pi_y"), tampered).status_code == 400
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(StripeEvent)).one() == 0


def test_the_same_event_delivered_many_times_at_once_moves_the_order_once(
    db: Database, settings: Settings, live_storefront: str
):
    order, [payment] = _order_waiting_for_3ds(db, settings)
    payload = stripe_event("evt_dup_1", "payment_intent.amount_capturable_updated",
                           _intent(settings, payment, "requires_capture"))
    signature = sign_payload(payload, WEBHOOK_SECRET)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: _post(live_storefront, payload, signature),
                                  range(8)))

    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["duplicate"] for r in responses].count(False) == 1
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(StripeEvent)).one() == 1
        assert session.exec(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.actor_name == "process_stripe_event")).one() == 1
    _process_stored(db, settings)
    _process_stored(db, settings)  # a redelivered message changes nothing either
    with db.read_session() as session:
        assert session.get(Order, order.id).status == OrderStatus.AUTHORIZED
    assert _authorized_transitions(db, order.id) == 1


def test_success_arriving_before_the_earlier_events_ends_in_the_right_state(
    db: Database, settings: Settings, live_storefront: str
):
    order, [failed, paying] = _order_waiting_for_3ds(db, settings, decline_first=True)
    events = [  # newest first: the reverse of how they happened
        ("evt_4", "payment_intent.succeeded", _intent(settings, paying, "succeeded")),
        ("evt_3", "payment_intent.requires_action", _intent(settings, paying,
                                                            "requires_action")),
        ("evt_2", "payment_intent.created", _intent(settings, paying,
                                                    "requires_confirmation")),
        ("evt_1", "payment_intent.payment_failed", _intent(settings, failed,
                                                           "requires_payment_method")),
    ]
    for event_id, kind, obj in events:
        payload = stripe_event(event_id, kind, obj)
        assert _post(live_storefront, payload,
                     sign_payload(payload, WEBHOOK_SECRET)).status_code == 200
        _process_stored(db, settings)

    with db.read_session() as session:
        assert session.get(Order, order.id).status == OrderStatus.AUTHORIZED
        assert session.get(Payment, paying.id).status == PaymentStatus.CAPTURED
        assert session.get(Payment, failed.id).status == PaymentStatus.FAILED
    assert _authorized_transitions(db, order.id) == 1


def test_with_redis_stopped_the_webhook_still_answers_and_the_order_goes_on_later(
    db: Database, settings: Settings, live_storefront: str, own_redis: RedisServer,
    start_pipeline,
):
    order, [payment] = _order_waiting_for_3ds(db, settings)
    pipeline_settings = settings.model_copy(update={"redis_url": own_redis.url})
    start_pipeline(pipeline_settings)
    own_redis.stop()

    payload = stripe_event("evt_redis_down", "payment_intent.amount_capturable_updated",
                           _intent(settings, payment, "requires_capture"))
    response = _post(live_storefront, payload, sign_payload(payload, WEBHOOK_SECRET))
    assert response.status_code == 200
    time.sleep(1.0)  # the relay tries, fails, backs off; the event waits in the database
    with db.read_session() as session:
        assert session.get(Order, order.id).status == OrderStatus.PENDING_PAYMENT
        assert session.get(StripeEvent, "evt_redis_down").processed_at is None

    own_redis.start()

    def middle_office_has_it() -> bool:
        with db.read_session() as session:
            return session.exec(select(Screening).where(
                Screening.order_id == order.id)).first() is not None

    wait_for(middle_office_has_it, timeout=40, what="the order to reach the middle office")
    with db.read_session() as session:
        assert session.get(Order, order.id).status != OrderStatus.PENDING_PAYMENT
        assert session.get(StripeEvent, "evt_redis_down").processed_at is not None
