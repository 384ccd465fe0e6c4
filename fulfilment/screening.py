"""The middle office's door: every authorised order arrives here.

For now it records the order's arrival; fraud and quality screening come in their own issue.
"""

from __future__ import annotations

import uuid

from sqlmodel import select

from conveyor.db import UnitOfWork
from models.base import utcnow
from models.orders import Order, OrderEvent, note

RECEIVED_NOTE = "received by middle office"
ACTOR = "worker:screening"


def receive_order(*, uow: UnitOfWork, order_id: uuid.UUID) -> bool:
    """Note the order's arrival once (locks the order); False if it was noted already."""
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        return False
    seen = session.exec(
        select(OrderEvent.id).where(OrderEvent.order_id == order_id,
                                    OrderEvent.actor == ACTOR,
                                    OrderEvent.note == RECEIVED_NOTE)
    ).first()
    if seen is not None:
        return False
    session.add(note(order, RECEIVED_NOTE, actor=ACTOR, at=utcnow()))
    return True
