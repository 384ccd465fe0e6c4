"""Invoices and credit notes: numbered without gaps per kind and year, with what they say
frozen at issue (the PDF is rendered from that snapshot, so it never changes afterwards).

Guarantees: a number is taken by locking its (kind, year) counter row in the transaction that
issues the document, so concurrent issues queue for the counter, a rolled-back transaction
gives its number back, and numbers never repeat or skip. Issuing is idempotent: an order has
one invoice, a refund one credit note.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from conveyor.db import UnitOfWork
from models.base import utcnow
from models.finance import DocumentCounter, DocumentKind, FinanceDocument, Refund
from models.orders import Order, OrderLine

PREFIX = {DocumentKind.INVOICE: "INV", DocumentKind.CREDIT_NOTE: "CN"}


def next_number(session: Session, kind: DocumentKind, year: int) -> int:
    """The next number of a kind in a year, under the counter row's lock."""
    query = select(DocumentCounter).where(DocumentCounter.kind == kind,
                                          DocumentCounter.year == year).with_for_update()
    counter = session.exec(query).first()
    if counter is None:
        try:
            with session.begin_nested():
                session.add(DocumentCounter(kind=kind, year=year, last_number=0))
        except IntegrityError:
            pass  # another transaction opened this year's counter at the same moment
        counter = session.exec(query).one()
    counter.last_number += 1
    return counter.last_number


def _issue(session: Session, kind: DocumentKind, order: Order, *, amount_cents: int,
           tax_cents: int, content: dict[str, Any],
           refund_id: uuid.UUID | None = None) -> FinanceDocument:
    now = utcnow()
    sequence = next_number(session, kind, now.year)
    document = FinanceDocument(
        kind=kind, year=now.year, sequence=sequence,
        number=f"{PREFIX[kind]}-{now.year}-{sequence:06d}", order_id=order.id,
        refund_id=refund_id, access_token=secrets.token_urlsafe(24),
        amount_cents=amount_cents, tax_cents=tax_cents, currency=order.currency,
        issued_at=now, content=content)
    session.add(document)
    session.flush()
    return document


def _parties(order: Order) -> dict[str, Any]:
    return {"customer": {"name": order.full_name, "email": order.email,
                         "address": order.address, "city": order.city,
                         "postal_code": order.postal_code, "country": order.country},
            "order_number": order.number, "tax_rate_bps": order.tax_rate_bps}


def issue_invoice(*, uow: UnitOfWork, order_id: uuid.UUID) -> FinanceDocument:
    """The order's invoice (issued once, when its payment is captured)."""
    session = uow.session
    existing = session.exec(select(FinanceDocument).where(
        FinanceDocument.order_id == order_id,
        FinanceDocument.kind == DocumentKind.INVOICE)).first()
    if existing is not None:
        return existing
    order = session.get(Order, order_id)
    assert order is not None
    lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order_id)
                              .order_by(col(OrderLine.id))))
    content = _parties(order) | {
        "lines": [{"sku": line.sku, "description": f"{line.product_name} ({line.variant_name})",
                   "quantity": line.quantity, "unit_price_cents": line.unit_price_cents,
                   "total_cents": line.line_total_cents,
                   "discount_cents": line.discount_cents} for line in lines],
        "subtotal_cents": order.subtotal_cents, "discount_cents": order.discount_cents,
        "discount_code": order.discount_code or "", "shipping_cents": order.shipping_cents,
        "shipping": order.shipping_method_name, "tax_cents": order.tax_cents,
        "total_cents": order.total_cents,
    }
    return _issue(session, DocumentKind.INVOICE, order, amount_cents=order.total_cents,
                  tax_cents=order.tax_cents, content=content)


def issue_credit_note(*, uow: UnitOfWork, refund_id: uuid.UUID) -> FinanceDocument:
    """A refund's credit note (issued once, when the refund has gone through)."""
    session = uow.session
    existing = session.exec(select(FinanceDocument).where(
        FinanceDocument.refund_id == refund_id)).first()
    if existing is not None:
        return existing
    refund = session.get(Refund, refund_id)
    assert refund is not None
    order = session.get(Order, refund.order_id)
    assert order is not None
    invoice = session.exec(select(FinanceDocument).where(
        FinanceDocument.order_id == order.id,
        FinanceDocument.kind == DocumentKind.INVOICE)).first()
    # The VAT inside a gross amount, at the order's rate.
    net = round(refund.amount_cents * 10_000 / (10_000 + order.tax_rate_bps))
    tax = refund.amount_cents - net
    content = _parties(order) | {
        "refund_reason": refund.reason, "lines": refund.lines,
        "invoice_number": invoice.number if invoice else "", "net_cents": net,
        "discount_code": order.discount_code or "",
        "tax_cents": tax, "total_cents": refund.amount_cents,
    }
    return _issue(session, DocumentKind.CREDIT_NOTE, order, amount_cents=refund.amount_cents,
                  tax_cents=tax, content=content, refund_id=refund.id)
