"""The order desk's reads: filtered, sorted, keyset-paginated lists, one order in full, CSV.

Pages are cut with keyset pagination on (sort key, id), so page N costs the same as page 1 and
an order arriving meanwhile neither repeats nor skips rows. The cursor is opaque to clients
(base64 of the last row's key).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import tuple_
from sqlmodel import Session, col, func, select
from sqlmodel.sql.expression import SelectOfScalar

from admin import cursors
from admin.csv_export import stream_csv
from conveyor.db import Database
from conveyor.errors import NotFound
from models.inventory import Allocation, Location, Reservation, StockItem, Warehouse
from models.orders import Order, OrderEvent, OrderLine
from models.payments import Payment
from models.screening import Screening

SORT_COLUMNS = {"created_at": Order.created_at, "total_cents": Order.total_cents,
                "number": Order.number}
CSV_COLUMNS = ("number", "status", "created_at", "authorized_at", "email", "full_name",
               "phone", "address", "city", "postal_code", "country", "shipping_method",
               "subtotal_cents", "discount_code", "discount_cents", "shipping_cents",
               "tax_cents", "total_cents", "currency")


@dataclass(frozen=True)
class OrderFilter:
    statuses: list[str] | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    email: str | None = None
    number: str | None = None
    total_min_cents: int | None = None
    total_max_cents: int | None = None
    sort: str = "-created_at"


def _filtered(query: SelectOfScalar[Order], f: OrderFilter) -> SelectOfScalar[Order]:
    if f.statuses:
        query = query.where(col(Order.status).in_(f.statuses))
    if f.created_from is not None:
        query = query.where(col(Order.created_at) >= f.created_from)
    if f.created_to is not None:
        query = query.where(col(Order.created_at) < f.created_to)
    if f.email:
        query = query.where(func.lower(col(Order.email)) == f.email.strip().lower())
    if f.number:
        query = query.where(col(Order.number) == f.number.strip().upper())
    if f.total_min_cents is not None:
        query = query.where(col(Order.total_cents) >= f.total_min_cents)
    if f.total_max_cents is not None:
        query = query.where(col(Order.total_cents) <= f.total_max_cents)
    return query


def encode_cursor(sort: str, order: Order) -> str:
    value = getattr(order, sort.lstrip("-"))
    return cursors.pack({"s": sort, "v": value.isoformat() if isinstance(value, datetime)
                         else value, "i": str(order.id)})


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, uuid.UUID]:
    raw = cursors.unpack(cursor)
    try:
        if raw["s"] != sort:
            raise ValueError("sorted differently")
        key = sort.lstrip("-")
        value: Any = raw["v"]
        if key == "created_at":
            value = cursors.utc_time(value)
        elif key == "total_cents":
            value = int(value)
        else:
            value = str(value)
        return value, uuid.UUID(str(raw["i"]))
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise cursors.invalid(exc) from None


def _page_query(f: OrderFilter, cursor: str | None) -> SelectOfScalar[Order]:
    key = f.sort.lstrip("-")
    column = col(SORT_COLUMNS[key])
    descending = f.sort.startswith("-")
    query = _filtered(select(Order), f)
    if cursor:
        value, last_id = _decode_cursor(cursor, f.sort)
        row, last = tuple_(column, col(Order.id)), tuple_(value, last_id)
        query = query.where(row < last if descending else row > last)
    if descending:
        return query.order_by(column.desc(), col(Order.id).desc())
    return query.order_by(column.asc(), col(Order.id).asc())


def list_orders(session: Session, f: OrderFilter, *, limit: int,
                cursor: str | None) -> tuple[list[Order], str | None]:
    rows = list(session.exec(_page_query(f, cursor).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(f.sort, rows[-1]) if more and rows else None


def export_csv(db: Database, f: OrderFilter, *, batch: int = 500) -> Iterator[str]:
    """Every matching order as CSV, fetched a batch at a time: memory stays flat."""

    def read_page(cursor: str | None) -> tuple[list[list[Any]], str | None]:
        with db.read_session() as session:
            orders, cursor = list_orders(session, f, limit=batch, cursor=cursor)
        return [[getattr(order, name) for name in CSV_COLUMNS] for order in orders], cursor

    return stream_csv(CSV_COLUMNS, read_page)


@dataclass(frozen=True)
class OrderFile:
    order: Order
    lines: list[OrderLine]
    payments: list[Payment]
    reservations: list[Reservation]
    stock: dict[int, StockItem]
    history: list[OrderEvent]
    screening: Screening | None
    allocations: list[tuple[Allocation, Location, Warehouse]]


def order_by_number(session: Session, number: str) -> Order:
    order = session.exec(select(Order).where(Order.number == number.strip().upper())).first()
    if order is None:
        raise NotFound(f"No order {number}.")
    return order


def order_file(session: Session, number: str) -> OrderFile:
    """One order with everything around it, in eight queries."""
    order = order_by_number(session, number)
    lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order.id)
                              .order_by(col(OrderLine.id))))
    payments = list(session.exec(select(Payment).where(Payment.order_id == order.id)
                                 .order_by(col(Payment.attempt))))
    reservations = list(session.exec(select(Reservation).where(
        Reservation.order_id == order.id).order_by(col(Reservation.id))))
    variant_ids = {line.variant_id for line in lines}
    stock = {item.variant_id: item for item in session.exec(
        select(StockItem).where(col(StockItem.variant_id).in_(variant_ids)))}
    history = list(session.exec(select(OrderEvent).where(OrderEvent.order_id == order.id)
                                .order_by(col(OrderEvent.created_at), col(OrderEvent.id))))
    screening = session.exec(select(Screening).where(Screening.order_id == order.id)).first()
    allocations = [(a, loc, w) for a, loc, w in session.exec(
        select(Allocation, Location, Warehouse)
        .join(Location, col(Location.id) == Allocation.location_id)
        .join(Warehouse, col(Warehouse.id) == Location.warehouse_id)
        .where(Allocation.order_id == order.id).order_by(col(Allocation.id)))]
    return OrderFile(order, lines, payments, reservations, stock, history, screening,
                     allocations)
