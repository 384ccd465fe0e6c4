"""What a shopper sees of an order: the confirmation and the status page, by unguessable link."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from fulfilment.packing import parcels_of
from models.finance import FinanceDocument
from models.orders import CUSTOMER_LABELS, Order, OrderEvent, OrderLine, OrderStatus
from models.payments import Payment
from storefront.after_sales import page_context
from storefront.web import db_of, render, settings_of


@dataclass(frozen=True)
class ParcelView:
    """A parcel as the customer sees it: what is in it, and where it is (tracking)."""

    carrier: str
    tracking_number: str
    tracking_url: str
    shipped_at: datetime | None
    items: list[tuple[str, int]]  # (product and variant name, quantity)


def order_by_token(session: Session, token: str) -> Order:
    """The order behind a status-page link; 404 for anything else."""
    order = None
    if 20 <= len(token) <= 64:
        order = session.exec(select(Order).where(Order.status_token == token)).first()
    if order is None:
        raise HTTPException(404)
    return order


def order_page(request: Request) -> dict[str, Any]:
    with db_of(request).read_session() as session:
        order = order_by_token(session, request.path_params["token"])
        lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                                  .order_by(col(OrderLine.id))))
        history = list(session.exec(
            select(OrderEvent).where(OrderEvent.order_id == order.id,
                                     col(OrderEvent.public).is_(True))
            .order_by(col(OrderEvent.created_at), col(OrderEvent.id))
        ))
        payment = session.get(Payment, order.payment_id) if order.payment_id else None
        names = {line.variant_id: f"{line.product_name} ({line.variant_name})" for line in lines}
        parcels = [ParcelView(parcel.carrier, parcel.tracking_number, parcel.tracking_url,
                              parcel.shipped_at,
                              [(names.get(i.variant_id, ""), i.quantity) for i in items])
                   for parcel, items in parcels_of(session, order.id)]
        documents = list(session.exec(
            select(FinanceDocument).where(FinanceDocument.order_id == order.id)
            .order_by(col(FinanceDocument.issued_at), col(FinanceDocument.number))))
        after_sales = page_context(session, order, settings_of(request))
    return {"order": order, "lines": lines, "history": history, "payment": payment,
            "parcels": parcels, "documents": documents,
            "status_label": CUSTOMER_LABELS[OrderStatus(order.status)], **after_sales}


def private(response: Response) -> Response:
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["x-robots-tag"] = "noindex, nofollow"
    return response


def confirmation(request: Request) -> Response:
    return private(render(request, "storefront/confirmation.html", order_page(request),
                          private=True))


def status(request: Request) -> Response:
    return private(render(request, "storefront/order.html", order_page(request), private=True))
