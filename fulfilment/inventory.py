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

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, func, select

from conveyor.db import UnitOfWork
from conveyor.errors import DomainError
from models.base import utcnow
from models.inventory import (
    Allocation,
    AllocationStatus,
    BinStock,
    Location,
    LocationKind,
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
    set_aside = {  # in bins or at packing, not yet shipped
        row[0]: row[1]
        for row in session.exec(
            select(Allocation.variant_id, func.sum(Allocation.quantity))
            .where(col(Allocation.status).in_((AllocationStatus.ALLOCATED,
                                               AllocationStatus.PICKED)))
            .group_by(col(Allocation.variant_id))
        )
    }
    problems: list[LedgerMismatch] = []
    per_bin = {
        (row[0], row[1]): (int(row[2] or 0), int(row[3] or 0))
        for row in session.exec(
            select(StockMovement.variant_id, StockMovement.location_id,
                   func.sum(StockMovement.on_hand_delta), func.sum(StockMovement.allocated_delta))
            .where(col(StockMovement.location_id).is_not(None))
            .group_by(col(StockMovement.variant_id), col(StockMovement.location_id)))
    }
    for bin_stock in session.exec(select(BinStock).order_by(col(BinStock.id))):
        on_hand, allocated = per_bin.pop((bin_stock.variant_id, bin_stock.location_id), (0, 0))
        if (bin_stock.on_hand, bin_stock.allocated) != (on_hand, allocated):
            problems.append(LedgerMismatch(
                bin_stock.variant_id, f"bin {bin_stock.location_id} on_hand/allocated",
                bin_stock.on_hand * 1_000_000 + bin_stock.allocated,
                on_hand * 1_000_000 + allocated))
    problems.extend(LedgerMismatch(variant_id, f"bin {location_id} has ledger rows but no row",
                                   0, on_hand) for (variant_id, location_id), (on_hand, _) in
                    per_bin.items() if on_hand)
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
    """Give back what an order has set aside and not shipped: in bins, or already picked and
    waiting at packing (those units stay there, free, for stock staff to put away).
    Safe to call twice."""
    session = uow.session
    query = select(Allocation).where(
        Allocation.order_id == order_id,
        col(Allocation.status).in_((AllocationStatus.ALLOCATED, AllocationStatus.PICKED)))
    allocations = list(session.exec(query))
    if not allocations:
        return 0
    items = _lock_items(session, [a.variant_id for a in allocations])
    allocations = list(session.exec(query.order_by(col(Allocation.id)).with_for_update()))
    for allocation in allocations:
        _deallocate(session, items[allocation.variant_id], allocation, allocation.quantity,
                    reason=reason, actor=actor)
        allocation.status = AllocationStatus.RELEASED
    session.flush()
    return sum(a.quantity for a in allocations)


# -- The warehouse floor: picking, shipping, adjusting, moving ---------------------------------


class StockConflict(DomainError):
    """A stock change the counters cannot take, with the reason in words."""

    code = "stock_conflict"


def _bin(session: Session, location_id: int, variant_id: int, *,
         create: bool = False) -> BinStock | None:
    """The (locked) stock row of a variant in a bin; created empty if asked to."""
    row = session.exec(select(BinStock).where(BinStock.location_id == location_id,
                                              BinStock.variant_id == variant_id)
                       .with_for_update()).first()
    if row is None and create:
        row = BinStock(location_id=location_id, variant_id=variant_id)
        session.add(row)
        session.flush()
    return row


def _record(session: Session, *, variant_id: int, location_id: int | None, kind: MovementKind,
            on_hand: int = 0, allocated: int = 0, reserved: int = 0, reason: str = "",
            actor: str, document_type: str = "", document_id: str = "") -> None:
    session.add(StockMovement(variant_id=variant_id, location_id=location_id, kind=kind,
                              on_hand_delta=on_hand, allocated_delta=allocated,
                              reserved_delta=reserved, reason=reason[:200], actor=actor,
                              document_type=document_type, document_id=document_id))


def _deallocate(session: Session, item: StockItem, allocation: Allocation, quantity: int, *,
                reason: str, actor: str) -> None:
    bin_stock = _bin(session, allocation.location_id, allocation.variant_id)
    assert bin_stock is not None
    item.allocated -= quantity
    bin_stock.allocated -= quantity
    _record(session, variant_id=allocation.variant_id, location_id=allocation.location_id,
            kind=MovementKind.DEALLOCATE, allocated=-quantity, reason=reason, actor=actor,
            document_type="order", document_id=str(allocation.order_id))


def packing_location(session: Session, warehouse_id: int) -> Location:
    """The warehouse's packing location, where picked units wait (made on first use)."""
    query = select(Location).where(Location.warehouse_id == warehouse_id,
                                   Location.kind == LocationKind.PACKING)
    found = session.exec(query).first()
    if found is not None:
        return found
    try:
        with session.begin_nested():
            session.add(Location(warehouse_id=warehouse_id, code="PACK", zone="PACK",
                                 kind=LocationKind.PACKING, pick_sequence=0))
    except IntegrityError:
        pass  # another transaction made it at the same moment
    return session.exec(query).one()


def _split(session: Session, allocation: Allocation, quantity: int) -> Allocation:
    """Cut `quantity` units off an allocation into a new one (same order, bin, status)."""
    allocation.quantity -= quantity
    part = Allocation(order_id=allocation.order_id, variant_id=allocation.variant_id,
                      location_id=allocation.location_id, quantity=quantity,
                      status=allocation.status, pick_list_id=allocation.pick_list_id)
    session.add(part)
    session.flush()
    return part


def _mark_picked(session: Session, chosen: list[Allocation], quantity: int,
                 pack_id: int) -> list[Allocation]:
    picked: list[Allocation] = []
    remaining = quantity
    for allocation in chosen:
        if remaining == 0:
            break
        if allocation.quantity > remaining:
            allocation = _split(session, allocation, remaining)
        allocation.location_id = pack_id
        allocation.status = AllocationStatus.PICKED
        remaining -= allocation.quantity
        picked.append(allocation)
    session.flush()
    return picked


def pick_allocations(*, uow: UnitOfWork, allocation_ids: list[int], quantity: int,
                     actor: str, document_type: str = "", document_id: str = "",
                     ) -> list[Allocation]:
    """Take `quantity` units of these allocations (all of one variant in one bin, consumed in
    the order given) from the bin to the warehouse's packing location. The last allocation
    touched is split if only part of it is taken. Returns the picked allocations."""
    session = uow.session
    if quantity <= 0 or not allocation_ids:
        return []
    first = session.get(Allocation, allocation_ids[0])
    assert first is not None
    item = _lock_items(session, [first.variant_id])[first.variant_id]
    allocations = {a.id: a for a in session.exec(
        select(Allocation).where(col(Allocation.id).in_(allocation_ids)).with_for_update())}
    chosen = [allocations[i] for i in allocation_ids if i in allocations]
    if {(a.variant_id, a.location_id, a.status) for a in chosen} != {
            (first.variant_id, first.location_id, AllocationStatus.ALLOCATED)}:
        raise StockConflict("These units are not all set aside in the same bin any more.")
    if quantity > sum(a.quantity for a in chosen):
        raise StockConflict("That is more than was set aside in this bin.")
    source_id, variant_id = first.location_id, first.variant_id  # before allocations move
    location = session.get(Location, source_id)
    assert location is not None
    pack = packing_location(session, location.warehouse_id)
    assert pack.id is not None
    if first.location_id == pack.id:  # units left at packing by a cancelled order: no walk
        return _mark_picked(session, chosen, quantity, pack.id)
    source = _bin(session, source_id, variant_id)
    target = _bin(session, pack.id, variant_id, create=True)
    assert source is not None and target is not None
    picked = _mark_picked(session, chosen, quantity, pack.id)
    source.on_hand -= quantity
    source.allocated -= quantity
    target.on_hand += quantity
    target.allocated += quantity
    for location_id, sign in ((source_id, -1), (pack.id, 1)):
        _record(session, variant_id=variant_id, location_id=location_id,
                kind=MovementKind.PICK, on_hand=sign * quantity, allocated=sign * quantity,
                actor=actor, document_type=document_type, document_id=document_id)
    del item  # locked only, so writers of this variant queue behind the pick
    session.flush()
    return picked


def ship_picked(*, uow: UnitOfWork, order_id: uuid.UUID, variant_id: int, quantity: int,
                actor: str, document_type: str = "", document_id: str = "") -> None:
    """Units of an order waiting at packing leave the warehouse."""
    session = uow.session
    item = _lock_items(session, [variant_id]).get(variant_id)
    picked = list(session.exec(
        select(Allocation).where(Allocation.order_id == order_id,
                                 Allocation.variant_id == variant_id,
                                 Allocation.status == AllocationStatus.PICKED)
        .order_by(col(Allocation.id)).with_for_update()))
    if item is None or quantity <= 0 or quantity > sum(a.quantity for a in picked):
        raise StockConflict("That is more than was picked for this order.")
    remaining = quantity
    for allocation in picked:
        if remaining == 0:
            break
        if allocation.quantity > remaining:
            allocation = _split(session, allocation, remaining)
        bin_stock = _bin(session, allocation.location_id, variant_id)
        assert bin_stock is not None
        bin_stock.on_hand -= allocation.quantity
        bin_stock.allocated -= allocation.quantity
        item.on_hand -= allocation.quantity
        item.allocated -= allocation.quantity
        _record(session, variant_id=variant_id, location_id=allocation.location_id,
                kind=MovementKind.SHIP, on_hand=-allocation.quantity,
                allocated=-allocation.quantity, actor=actor, document_type=document_type,
                document_id=document_id)
        allocation.status = AllocationStatus.SHIPPED
        remaining -= allocation.quantity
    session.flush()


def deallocate_units(*, uow: UnitOfWork, allocation_id: int, quantity: int, reason: str,
                     actor: str) -> None:
    """Take units off one allocation (not yet picked): they are free again in their bin."""
    session = uow.session
    allocation = session.get(Allocation, allocation_id)
    assert allocation is not None
    item = _lock_items(session, [allocation.variant_id])[allocation.variant_id]
    allocation = session.get(Allocation, allocation_id, with_for_update=True)
    assert allocation is not None
    if allocation.status != AllocationStatus.ALLOCATED or not 0 < quantity <= allocation.quantity:
        raise StockConflict("Only units set aside in a bin, and not more, can be given back.")
    if quantity < allocation.quantity:
        allocation = _split(session, allocation, quantity)
    _deallocate(session, item, allocation, quantity, reason=reason, actor=actor)
    allocation.status = AllocationStatus.RELEASED
    session.flush()


def allocate_free_units(*, uow: UnitOfWork, order_id: uuid.UUID, variant_id: int,
                        quantity: int, actor: str, reason: str,
                        avoid_location_id: int | None = None) -> int:
    """Set aside up to `quantity` more units for an order from units nobody holds (not
    reserved, not allocated), bins in pick-sequence order; returns how many it found."""
    session = uow.session
    item = _lock_items(session, [variant_id]).get(variant_id)
    if item is None or quantity <= 0:
        return 0
    wanted = min(quantity, max(item.available, 0))
    rows = list(session.exec(
        select(BinStock, Location).join(Location, col(Location.id) == BinStock.location_id)
        .where(BinStock.variant_id == variant_id, col(BinStock.on_hand) > BinStock.allocated)
        .order_by(col(Location.pick_sequence), col(BinStock.id)).with_for_update(of=BinStock)))
    found = 0
    for bin_stock, location in rows:
        if found == wanted:
            break
        if location.id == avoid_location_id or location.kind != LocationKind.BIN:
            continue
        take = min(bin_stock.on_hand - bin_stock.allocated, wanted - found)
        bin_stock.allocated += take
        item.allocated += take
        found += take
        assert location.id is not None
        session.add(Allocation(order_id=order_id, variant_id=variant_id,
                               location_id=location.id, quantity=take))
        _record(session, variant_id=variant_id, location_id=location.id,
                kind=MovementKind.ALLOCATE, allocated=take, reason=reason, actor=actor,
                document_type="order", document_id=str(order_id))
    session.flush()
    return found


def adjust_bin(*, uow: UnitOfWork, variant_id: int, location_id: int, delta: int,
               kind: MovementKind, reason: str, actor: str, document_type: str = "",
               document_id: str = "") -> None:
    """Add or take units in one bin (found, lost, damaged, counted). Refuses, without
    changing anything, to take units that are set aside for orders in that bin or promised
    to checkouts still under way: those must be dealt with first."""
    session = uow.session
    if delta == 0:
        return
    item = _lock_items(session, [variant_id]).get(variant_id)
    if item is None:
        item = create_stock_item(session, variant_id)
    bin_stock = _bin(session, location_id, variant_id, create=True)
    assert bin_stock is not None
    if bin_stock.on_hand + delta < bin_stock.allocated:
        raise StockConflict(
            f"Only {bin_stock.on_hand - bin_stock.allocated} unit(s) in this bin are not set "
            "aside for orders; give those allocations back (or short-pick them) first.",
            details={"on_hand": bin_stock.on_hand, "allocated": bin_stock.allocated})
    if item.on_hand + delta < item.allocated + item.reserved:
        raise StockConflict(
            "Shoppers' checkouts hold these units right now; try again when they are paid or "
            "expired.", details={"reserved": item.reserved})
    bin_stock.on_hand += delta
    item.on_hand += delta
    _record(session, variant_id=variant_id, location_id=location_id, kind=kind, on_hand=delta,
            reason=reason, actor=actor, document_type=document_type, document_id=document_id)
    session.flush()


def transfer_units(*, uow: UnitOfWork, variant_id: int, from_location_id: int,
                   to_location_id: int, quantity: int, actor: str, reason: str = "") -> None:
    """Move free units (not set aside) from one bin to another."""
    session = uow.session
    if quantity <= 0 or from_location_id == to_location_id:
        raise StockConflict("Move a positive number of units to another bin.")
    _lock_items(session, [variant_id])
    first, second = sorted((from_location_id, to_location_id))
    bins = {loc: _bin(session, loc, variant_id, create=True) for loc in (first, second)}
    source, target = bins[from_location_id], bins[to_location_id]
    assert source is not None and target is not None
    if source.on_hand - source.allocated < quantity:
        raise StockConflict(f"Only {source.on_hand - source.allocated} free unit(s) there.")
    source.on_hand -= quantity
    target.on_hand += quantity
    for location_id, sign in ((from_location_id, -1), (to_location_id, 1)):
        _record(session, variant_id=variant_id, location_id=location_id,
                kind=MovementKind.TRANSFER, on_hand=sign * quantity, reason=reason, actor=actor)
    session.flush()
