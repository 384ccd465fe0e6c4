"""Which queue each actor listens on: the one table the outbox, the relay and the actors share.

Queues are per stage, so a slow stage (a Stripe call) never holds up another (screening).
"""

from __future__ import annotations

QUEUES = ("screening", "capture", "payments", "mail", "maintenance")
# Queues whose actors call Stripe: `conveyor run` gives them a worker process of their own.
STRIPE_QUEUES = ("capture", "payments")

ACTOR_QUEUES: dict[str, str] = {
    "screen_order": "screening",
    "capture_payment": "capture",  # then allocation, in the transaction recording the capture
    "process_stripe_event": "payments",
    "void_payment": "payments",
    "process_refund": "payments",
    "deliver_email": "mail",
    "expire_unpaid_orders": "maintenance",
    "sync_payments": "maintenance",
    "sync_stripe": "maintenance",  # copies of what Stripe moved, for reconciliation
}


def queue_of(actor_name: str) -> str:
    try:
        return ACTOR_QUEUES[actor_name]
    except KeyError:
        raise ValueError(f"no queue is known for actor {actor_name!r}") from None
