"""The pipeline with real Dramatiq workers on Redis when things go wrong: messages delivered
twice, and a worker killed with SIGKILL in the middle of an actor and started again. Each
order must end with exactly one decision, one capture and one allocation."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

import dramatiq
import pytest
from sqlmodel import func, select

from conveyor.broker import create_broker
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.inventory import verify_ledger
from models.inventory import Allocation
from models.orders import Order, OrderEvent, OrderStatus
from models.payments import Payment, PaymentStatus
from models.screening import Screening
from tests import shopping
from tests.factories import make_product, stock_of
from tests.helpers import conveyor_command, process_env, start_process, stop_process, wait_for

QUICK_RECOVERY = {"worker_heartbeat_timeout_seconds": 2.0,
                  "broker_maintenance_chance": 1_000_000}


@pytest.fixture
def fast_settings(settings: Settings, clean_redis: str) -> Settings:
    return settings.model_copy(update=QUICK_RECOVERY)


def _paid_order(db: Database, settings: Settings, quantity: int = 2) -> tuple[Order, int]:
    variant = make_product(db, variants=[("Std", 3100, 10)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, quantity)])
    order = shopping.place(db, settings, cart_id, view)
    assert shopping.pay(db, settings, order.id).outcome == "authorized"
    return order, variant


def _status(db: Database, order: Order) -> str:
    with db.read_session() as session:
        found = session.get(Order, order.id)
        assert found is not None
        return found.status


def _charges(settings: Settings, intent_id: str) -> list[dict[str, object]]:
    request = urllib.request.Request(
        f"{settings.stripe_api_base}/v1/payment_intents/{intent_id}",
        headers={"Authorization": "Bearer sk_test_conveyor"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read())["charges"]["data"])


def _exactly_once(db: Database, settings: Settings, order: Order, variant: int,
                  quantity: int) -> None:
    with db.read_session() as session:
        assert session.exec(select(func.count()).select_from(Screening).where(
            Screening.order_id == order.id)).one() == 1
        transitions = session.exec(select(OrderEvent.to_status).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status != None)  # noqa: E711
        ).all()
        assert transitions.count(OrderStatus.APPROVED) == 1
        assert transitions.count(OrderStatus.ALLOCATED) == 1
        payment = session.exec(select(Payment).where(Payment.order_id == order.id)).one()
        assert payment.status == PaymentStatus.CAPTURED
        assert payment.captured_cents == order.total_cents
        allocated = session.exec(select(func.sum(Allocation.quantity)).where(
            Allocation.order_id == order.id)).one()
        assert allocated == quantity
        assert verify_ledger(session) == []
    charges = _charges(settings, payment.stripe_payment_intent_id or "")
    assert len(charges) == 1 and charges[0]["captured"] is True
    assert charges[0]["amount"] == order.total_cents
    item = stock_of(db, variant)
    assert (item.allocated, item.reserved) == (quantity, 0)


def test_every_message_delivered_twice_still_gives_one_decision_capture_and_allocation(
    db: Database, fast_settings: Settings, start_pipeline
):
    order, variant = _paid_order(db, fast_settings)
    broker = create_broker(fast_settings, set_global=False)
    start_pipeline(fast_settings)
    wait_for(lambda: _status(db, order) == OrderStatus.ALLOCATED, timeout=60,
             what="the first pass through the pipeline")

    for actor, queue in (("screen_order", "screening"), ("capture_payment", "capture")):
        for _ in range(2):
            broker.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor,
                                            args=(str(order.id),), kwargs={}, options={}))

    def drained() -> bool:
        client = broker.client
        return all(client.llen(f"dramatiq:{q}") == 0 and not client.keys(
            f"dramatiq:__acks__.*.{q}") for q in ("screening", "capture"))

    wait_for(drained, timeout=30, what="the duplicates to be consumed")
    _exactly_once(db, fast_settings, order, variant, 2)


@pytest.mark.parametrize("pause_at", ["capture", "allocation"])
def test_a_worker_killed_mid_actor_and_started_again_finishes_the_order_exactly_once(
    db: Database, fast_settings: Settings, start_pipeline, tmp_path: Path, pause_at: str
):
    order, variant = _paid_order(db, fast_settings)
    marker = tmp_path / "paused"
    env = process_env(fast_settings, CONVEYOR_TEST_PAUSE_AT=pause_at,
                      CONVEYOR_TEST_MARKER=str(marker))
    relay = start_process(conveyor_command("relay"), env, tmp_path / "relay.log")
    doomed = start_process(
        [sys.executable, "-m", "dramatiq", "tests.e2e.pausing_worker", "--processes", "1",
         "--threads", "1"], env, tmp_path / "doomed.log")
    try:
        wait_for(marker.exists, timeout=60, what=f"the worker to stop inside {pause_at}")
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
        if pause_at == "capture":  # money taken at Stripe, but the database never heard
            with db.read_session() as session:
                payment = session.exec(select(Payment).where(
                    Payment.order_id == order.id)).one()
            assert payment.status == PaymentStatus.AUTHORIZED
            assert _charges(fast_settings, payment.stripe_payment_intent_id or ""
                            )[0]["captured"] is True
        else:  # the allocation's transaction died with the worker
            assert _status(db, order) == OrderStatus.APPROVED
            assert stock_of(db, variant).allocated == 0
    finally:
        stop_process(relay)
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)

    start_pipeline(fast_settings)  # a healthy worker (and relay) take over
    wait_for(lambda: _status(db, order) == OrderStatus.ALLOCATED, timeout=60,
             what="the order to finish after the crash")
    _exactly_once(db, fast_settings, order, variant, 2)
