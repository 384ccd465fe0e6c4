"""Every stock write goes through this module.

Guarantees, for every function here:
- The `StockItem` rows touched are locked (SELECT ... FOR UPDATE) in variant-id order before
  anything changes, so concurrent writers queue instead of deadlocking or overselling. SQLite
  has no row locks; there every write transaction holds the database's write lock instead.
- Checks happen before changes: a function that raises leaves the session as it found it.
- Every counter change is mirrored by a `StockMovement` row, so each counter equals its ledger
  sum; CHECK constraints on the tables back this up.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, func, select

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError
from models.base import utcnow
from models.inventory import (
    Allocation,
    AllocationStatus,
    BinStock,
    Location,
    MovementKind,
    Reservation,
    ReservationStatus,
    StockItem,
    StockMovement,
)


@dataclass(frozen=True)
class LineRequest:
    variant_id: int
    quantity: int


@dataclass(frozen=True)
class Shortage:
    variant_id: int
    requested: int
    available: int


class InsufficientStock(DomainError):
    code = "insufficient_stock"

    def __init__(self, shortages: list[Shortage]) -> None:
        super().__init__(
            "not enough stock",
            details={"shortages": [s.__dict__ for s in shortages]},
        )
        self.shortages = shortages


def _merge(lines: Iterable[LineRequest]) -> dict[int, int]:
    wanted: dict[int, int] = defaultdict(int)
    for line in lines:
        if line.quantity <= 0:
            raise ValueError("a reserved quantity must be positive")
        wanted[line.variant_id] += line.quantity
    return dict(wanted)


def _lock_items(session: Session, variant_ids: Iterable[int]) -> dict[int, StockItem]:
    """Lock the stock rows of these variants in primary-key order, creating missing ones."""
    ids = sorted(set(variant_ids))
    if not ids:
        return {}
    query = (
        select(StockItem)
        .where(col(StockItem.variant_id).in_(ids))
        .order_by(col(StockItem.variant_id))
        .with_for_update()
    )
    items = {item.variant_id: item for item in session.exec(query)}
    return items


def create_stock_item(session: Session, variant_id: int) -> StockItem:
    """The (empty) stock row a new variant needs before anything can be reserved or received."""
    item = StockItem(variant_id=variant_id)
    session.add(item)
    session.flush()
    return item


def available_quantities(session: Session, variant_ids: Iterable[int]) -> dict[int, int]:
    """What can still be sold now, per variant (0 for variants with no stock row)."""
    ids = list(set(variant_ids))
    result = dict.fromkeys(ids, 0)
    if ids:
        query = select(StockItem).where(col(StockItem.variant_id).in_(ids))
        for item in session.exec(query):
            result[item.variant_id] = max(item.available, 0)
    return result


def _live_reservations(session: Session, order_id: uuid.UUID) -> list[Reservation]:
    query = (
        select(Reservation)
        .where(Reservation.order_id == order_id, Reservation.status == ReservationStatus.LIVE)
        .order_by(col(Reservation.variant_id))
    )
    return list(session.exec(query))


def reserve_lines(
    *, uow: UnitOfWork, order_id: uuid.UUID, lines: list[LineRequest], until: datetime,
    actor: str = "storefront",
) -> None:
    """Hold stock for an unpaid order until `until`, replacing what the order held before.

    Locks the stock rows of the old and new lines together, in primary-key order. Raises
    InsufficientStock (listing every short line) without changing anything. Calling it again
    with the same lines only moves the expiry: no counter changes, no ledger rows.
    """
    session = uow.session
    wanted = _merge(lines)
    held = _live_reservations(session, order_id)
    held_by_variant: dict[int, int] = defaultdict(int)
    for reservation in held:
        held_by_variant[reservation.variant_id] += reservation.quantity
    items = _lock_items(session, [*wanted, *held_by_variant])
    held = _live_reservations(session, order_id)  # re-read under the locks

    if dict(held_by_variant) == wanted:
        for reservation in held:
            reservation.expires_at = until
        return

    shortages = []
    for variant_id, quantity in sorted(wanted.items()):
        item = items.get(variant_id)
        free = (item.available if item else 0) + held_by_variant.get(variant_id, 0)
        if quantity > free:
            shortages.append(Shortage(variant_id, quantity, max(free, 0)))
    if shortages:
        raise InsufficientStock(shortages)

    now = utcnow()
    for reservation in held:
        _release_one(session, items[reservation.variant_id], reservation, now,
                     reason="replaced by a new reservation", actor=actor,
                     document_type="order", document_id=str(order_id))
    for variant_id, quantity in sorted(wanted.items()):
        items[variant_id].reserved += quantity
        session.add(Reservation(order_id=order_id, variant_id=variant_id, quantity=quantity,
                                expires_at=until))
        session.add(StockMovement(variant_id=variant_id, kind=MovementKind.RESERVE,
                                  reserved_delta=quantity, reason="checkout", actor=actor,
                                  document_type="order", document_id=str(order_id)))
    session.flush()


def _release_one(
    session: Session, item: StockItem, reservation: Reservation, now: datetime, *,
    reason: str, actor: str, document_type: str, document_id: str,
) -> None:
    item.reserved -= reservation.quantity
    reservation.status = ReservationStatus.RELEASED
    reservation.released_at = now
    session.add(StockMovement(variant_id=reservation.variant_id, kind=MovementKind.RELEASE,
                              reserved_delta=-reservation.quantity, reason=reason, actor=actor,
                              document_type=document_type, document_id=document_id))


def release_reservations(
    *, uow: UnitOfWork, order_id: uuid.UUID, reason: str, actor: str = "system",
) -> int:
    """Give back everything an order holds; returns the units released. Safe to call twice."""
    session = uow.session
    held = _live_reservations(session, order_id)
    if not held:
        return 0
    items = _lock_items(session, [r.variant_id for r in held])
    held = _live_reservations(session, order_id)
    now = utcnow()
    for reservation in held:
        _release_one(session, items[reservation.variant_id], reservation, now, reason=reason,
                     actor=actor, document_type="order", document_id=str(order_id))
    session.flush()
    return sum(r.quantity for r in held)


def receive_stock(
    *, uow: UnitOfWork, variant_id: int, location_id: int, quantity: int, actor: str,
    reason: str = "", document_type: str = "", document_id: str = "",
) -> None:
    """Put `quantity` new units of a variant into a bin."""
    if quantity <= 0:
        raise ValueError("a received quantity must be positive")
    session = uow.session
    items = _lock_items(session, [variant_id])
    item = items.get(variant_id)
    if item is None:
        item = StockItem(variant_id=variant_id)
        session.add(item)
    bin_query = (
        select(BinStock)
        .where(BinStock.location_id == location_id, BinStock.variant_id == variant_id)
        .with_for_update()
    )
    bin_stock = session.exec(bin_query).first()
    if bin_stock is None:
        bin_stock = BinStock(location_id=location_id, variant_id=variant_id)
        session.add(bin_stock)
    item.on_hand += quantity
    bin_stock.on_hand += quantity
    session.add(StockMovement(variant_id=variant_id, location_id=location_id,
                              kind=MovementKind.RECEIPT, on_hand_delta=quantity, reason=reason,
                              actor=actor, document_type=document_type,
                              document_id=document_id))
    session.flush()


@dataclass(frozen=True)
class LedgerMismatch:
    variant_id: int
    counter: str
    counter_value: int
    ledger_value: int


def verify_ledger(session: Session) -> list[LedgerMismatch]:
    """Compare every stock counter with its ledger sum, and per-variant totals with bins."""
    ledger = {
        row[0]: row[1:]
        for row in session.exec(
            select(
                StockMovement.variant_id,
                func.sum(StockMovement.on_hand_delta),
                func.sum(StockMovement.allocated_delta),
                func.sum(StockMovement.reserved_delta),
            ).group_by(col(StockMovement.variant_id))
        )
    }
    bins = {
        row[0]: row[1:]
        for row in session.exec(
            select(BinStock.variant_id, func.sum(BinStock.on_hand), func.sum(BinStock.allocated))
            .group_by(col(BinStock.variant_id))
        )
    }
    live = {
        row[0]: row[1]
        for row in session.exec(
            select(Reservation.variant_id, func.sum(Reservation.quantity))
            .where(Reservation.status == ReservationStatus.LIVE)
            .group_by(col(Reservation.variant_id))
        )
    }
    set_aside = {
        row[0]: row[1]
        for row in session.exec(
            select(Allocation.variant_id, func.sum(Allocation.quantity))
            .where(Allocation.status == AllocationStatus.ALLOCATED)
            .group_by(col(Allocation.variant_id))
        )
    }
    problems: list[LedgerMismatch] = []
    for item in session.exec(select(StockItem).order_by(col(StockItem.variant_id))):
        on_hand, allocated, reserved = (int(v or 0) for v in ledger.get(item.variant_id, (0, 0, 0)))
        bin_on_hand, bin_allocated = (int(v or 0) for v in bins.get(item.variant_id, (0, 0)))
        checks = [
            ("on_hand", item.on_hand, on_hand),
            ("allocated", item.allocated, allocated),
            ("reserved", item.reserved, reserved),
            ("on_hand in bins", item.on_hand, bin_on_hand),
            ("allocated in bins", item.allocated, bin_allocated),
            ("live reservations", item.reserved, int(live.get(item.variant_id, 0))),
            ("live allocations", item.allocated, int(set_aside.get(item.variant_id, 0))),
        ]
        problems.extend(
            LedgerMismatch(item.variant_id, name, counter, expected)
            for name, counter, expected in checks
            if counter != expected
        )
    return problems


# -- Allocation: reserved units become units set aside in bins --------------------------------


@dataclass(frozen=True)
class BinPick:
    variant_id: int
    location_id: int
    warehouse_id: int
    quantity: int


def plan_allocation(
    wanted: dict[int, int], free: dict[int, list[tuple[int, int, int, int]]],
) -> list[BinPick]:
    """Where to take each line from. Pure; `free` maps a variant to its bins as
    (warehouse id, pick sequence, location id, free units).

    The rule: a warehouse that can ship the whole order is used alone (the one with the
    lowest id if several can); otherwise each line is filled from the warehouses in order of
    how many whole lines they can fill (then by id), so the order splits as little as
    possible. Within a warehouse, bins are taken in pick-sequence order.
    """
    warehouses = sorted({w for bins in free.values() for (w, _, _, _) in bins})

    def units_in(warehouse: int, variant: int) -> int:
        return sum(units for (w, _, _, units) in free.get(variant, []) if w == warehouse)

    covering = [w for w in warehouses
                if all(units_in(w, v) >= q for v, q in wanted.items())]
    if covering:
        order_of_warehouses = [covering[0]]
    else:
        order_of_warehouses = sorted(
            warehouses, key=lambda w: (-sum(units_in(w, v) >= q for v, q in wanted.items()), w))
    picks: list[BinPick] = []
    for variant, quantity in sorted(wanted.items()):
        remaining = quantity
        for warehouse in order_of_warehouses:
            bins = sorted((seq, loc, units) for (w, seq, loc, units) in free.get(variant, [])
                          if w == warehouse)
            for _, location, units in bins:
                take = min(units, remaining)
                if take > 0:
                    picks.append(BinPick(variant, location, warehouse, take))
                    remaining -= take
                if remaining == 0:
                    break
            if remaining == 0:
                break
        if remaining:
            raise InsufficientStock([Shortage(variant, quantity, quantity - remaining)])
    return picks


def allocate_order_stock(*, uow: UnitOfWork, order_id: uuid.UUID,
                         actor: str = "worker:allocation") -> list[BinPick]:
    """Turn the order's live reservations into allocations in bins (see `plan_allocation`).

    Locks the stock rows in primary-key order, then the bins involved. Idempotent: an order
    with no live reservations left allocates nothing.
    """
    session = uow.session
    held = _live_reservations(session, order_id)
    if not held:
        return []
    items = _lock_items(session, [r.variant_id for r in held])
    held = _live_reservations(session, order_id)
    wanted: dict[int, int] = defaultdict(int)
    for reservation in held:
        wanted[reservation.variant_id] += reservation.quantity
    rows = list(session.exec(
        select(BinStock, Location)
        .join(Location, col(Location.id) == BinStock.location_id)
        .where(col(BinStock.variant_id).in_(list(wanted)))
        .order_by(col(BinStock.id))
        .with_for_update(of=BinStock)
    ))
    bins = {(b.variant_id, b.location_id): b for b, _ in rows}
    free: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for bin_stock, location in rows:
        units = bin_stock.on_hand - bin_stock.allocated
        if units > 0 and location.id is not None:
            free[bin_stock.variant_id].append(
                (location.warehouse_id, location.pick_sequence, location.id, units))
    picks = plan_allocation(dict(wanted), dict(free))
    now = utcnow()
    for reservation in held:
        reservation.status = ReservationStatus.CONVERTED
        reservation.released_at = now
    for pick in picks:
        item = items[pick.variant_id]
        item.reserved -= pick.quantity
        item.allocated += pick.quantity
        bins[(pick.variant_id, pick.location_id)].allocated += pick.quantity
        session.add(Allocation(order_id=order_id, variant_id=pick.variant_id,
                               location_id=pick.location_id, quantity=pick.quantity))
        session.add(StockMovement(variant_id=pick.variant_id, location_id=pick.location_id,
                                  kind=MovementKind.ALLOCATE, allocated_delta=pick.quantity,
                                  reserved_delta=-pick.quantity, reason="order approved",
                                  actor=actor, document_type="order",
                                  document_id=str(order_id)))
    session.flush()
    return picks


def release_allocations(*, uow: UnitOfWork, order_id: uuid.UUID, reason: str,
                        actor: str = "system") -> int:
    """Give back what an order had set aside in bins (not yet picked); safe to call twice."""
    session = uow.session
    query = select(Allocation).where(Allocation.order_id == order_id,
                                     Allocation.status == AllocationStatus.ALLOCATED)
    allocations = list(session.exec(query))
    if not allocations:
        return 0
    items = _lock_items(session, [a.variant_id for a in allocations])
    allocations = list(session.exec(query.order_by(col(Allocation.id)).with_for_update()))
    for allocation in allocations:
        bin_stock = session.exec(select(BinStock).where(
            BinStock.location_id == allocation.location_id,
            BinStock.variant_id == allocation.variant_id).with_for_update()).one()
        items[allocation.variant_id].allocated -= allocation.quantity
        bin_stock.allocated -= allocation.quantity
        allocation.status = AllocationStatus.RELEASED
        session.add(StockMovement(variant_id=allocation.variant_id,
                                  location_id=allocation.location_id,
                                  kind=MovementKind.DEALLOCATE,
                                  allocated_delta=-allocation.quantity, reason=reason,
                                  actor=actor, document_type="order",
                                  document_id=str(order_id)))
    session.flush()
    return sum(a.quantity for a in allocations)
