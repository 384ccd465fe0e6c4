"""Dramatiq actors: each opens a unit of work, calls one service, returns.

They take ids, never objects, and are safe to run twice. Retry policy: domain errors are final
(`throws`); anything else (a network error, Redis or the database briefly away) is retried a
few times with backoff, then the message goes to the queue's dead letters.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import dramatiq

from conveyor import runtime
from conveyor.errors import DomainError
from conveyor.mail import deliver_email as deliver
from conveyor.messages import queue_of
from fulfilment import expiry, payments, refunds, screening, stripe_sync


def _policy(actor_name: str, **overrides: Any) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "actor_name": actor_name,
        "queue_name": queue_of(actor_name),
        "max_retries": 5,
        "min_backoff": 1_000,
        "max_backoff": 60_000,
        "throws": (DomainError,),
    }
    return policy | overrides


@dramatiq.actor(**_policy("screen_order"))
def screen_order(order_id: str) -> None:
    rt = runtime.current()
    with rt.db.unit_of_work() as uow:
        screening.screen_order(uow=uow, order_id=UUID(order_id), env=rt.templates,
                               settings=rt.settings)


@dramatiq.actor(**_policy("capture_payment", max_retries=8))
def capture_payment(order_id: str) -> None:
    rt = runtime.current()
    payments.capture_order_payment(db=rt.db, gateway=rt.gateway, env=rt.templates,
                                   settings=rt.settings, order_id=UUID(order_id))



@dramatiq.actor(**_policy("process_stripe_event"))
def process_stripe_event(event_id: str) -> None:
    rt = runtime.current()
    with rt.db.unit_of_work() as uow:
        payments.process_event(uow=uow, event_id=event_id, env=rt.templates,
                               settings=rt.settings)


@dramatiq.actor(**_policy("void_payment", max_retries=8))
def void_payment(payment_id: str) -> None:
    rt = runtime.current()
    payments.void_payment(db=rt.db, gateway=rt.gateway, env=rt.templates, settings=rt.settings,
                          payment_id=UUID(payment_id))


@dramatiq.actor(**_policy("process_refund", max_retries=8))
def process_refund(refund_id: str) -> None:
    rt = runtime.current()
    refunds.process_refund(db=rt.db, gateway=rt.gateway, env=rt.templates, settings=rt.settings,
                           refund_id=UUID(refund_id))


@dramatiq.actor(**_policy("deliver_email", max_retries=10, max_backoff=300_000))
def deliver_email(email_id: str) -> None:
    rt = runtime.current()
    deliver(rt.db, rt.settings, UUID(email_id))


@dramatiq.actor(**_policy("expire_unpaid_orders", max_retries=0))
def expire_unpaid_orders() -> None:
    rt = runtime.current()
    expiry.expire_unpaid_orders(db=rt.db, gateway=rt.gateway, env=rt.templates,
                                settings=rt.settings)


@dramatiq.actor(**_policy("sync_payments", max_retries=0))
def sync_payments() -> None:
    rt = runtime.current()
    payments.sync_payments(db=rt.db, gateway=rt.gateway, env=rt.templates, settings=rt.settings)


@dramatiq.actor(**_policy("sync_stripe", max_retries=0))
def sync_stripe() -> None:
    """Scheduled by the relay. A walk cut short (Dramatiq's time limit, a restart) goes on
    from its cursor at the next tick; `conveyor stripe sync` does a long first backfill."""
    rt = runtime.current()
    stripe_sync.sync_stripe(db=rt.db, gateway=rt.gateway)
