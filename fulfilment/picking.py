"""Picking: waves of ready orders become pick lists, walked bin by bin, scanned, or reported short.

A pick list belongs to one warehouse. Its lines are the wave's allocations merged per bin and
SKU, in the order of the bins' `pick_sequence` (the walk). Which units a line still wants is
never stored: it is what the line's allocations (status `allocated`, this list, this bin, this
variant) still hold. So a cancelled order, or another list's short pick that gave units back,
shrinks a line on its own, and `picked + short` never exceeds `quantity`.

Stock moves only through `fulfilment.inventory`. Locks, always in this order, so that the
services here, the cancellation and the allocation never wait on each other in a circle:
pick list -> orders (by id) -> stock rows (by variant id) -> bins and allocations.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import exists, update
from sqlmodel import Session, col, func, select

from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, DomainError, NotFound
from fulfilment.inventory import (
    StockConflict,
    adjust_bin,
    allocate_free_units,
    deallocate_units,
    pick_allocations,
)
from models.base import utcnow
from models.catalog import Product, Variant
from models.inventory import (
    Allocation,
    AllocationStatus,
    BinStock,
    Location,
    MovementKind,
    StockItem,
)
from models.orders import Order, OrderLine, OrderStatus, note, transition
from models.warehouse import PickList, PickListLine, PickListStatus

# Orders whose allocations a wave may take: ready to pick, or being picked and given more
# units (a short pick's re-allocation, a backorder found again).
WAVE_STATUSES = (OrderStatus.ALLOCATED, OrderStatus.PICKING)


class WrongItem(DomainError):
    """The scanned code is not the SKU or barcode of the line."""

    code = "wrong_item"


class PickRefused(DomainError):
    """A scan or short report the line cannot take (more than it wants, nothing left...)."""

    code = "pick_refused"


class PickListTaken(Conflict):
    """The list is claimed by someone else, done, or cancelled."""


# -- small reads and locks -----------------------------------------------------------------------


def _lock_orders(session: Session, order_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Order]:
    ids = sorted(set(order_ids))
    if not ids:
        return {}
    query = (select(Order).where(col(Order.id).in_(ids)).order_by(col(Order.id))
             .with_for_update())
    return {order.id: order for order in session.exec(query)}


def _lock_stock_rows(session: Session, variant_ids: Iterable[int]) -> None:
    """Take the stock rows' locks up front, in variant-id order, before calling several
    inventory services in a row (each would otherwise lock its variant when it comes)."""
    ids = sorted(set(variant_ids))
    if ids:
        list(session.exec(select(StockItem.variant_id).where(col(StockItem.variant_id).in_(ids))
                          .order_by(col(StockItem.variant_id)).with_for_update()))


def _locked_list(session: Session, pick_list_id: int) -> PickList:
    pick_list = session.get(PickList, pick_list_id, with_for_update=True)
    if pick_list is None:
        raise NotFound(f"No pick list {pick_list_id}.")
    return pick_list


def _require_claimed_by(pick_list: PickList, picker: str) -> None:
    if pick_list.status == PickListStatus.CLAIMED and pick_list.claimed_by == picker:
        return
    if pick_list.status == PickListStatus.OPEN:
        raise PickListTaken("Claim this pick list before picking from it.",
                            details={"status": pick_list.status})
    if pick_list.status == PickListStatus.CLAIMED:
        raise PickListTaken(f"This pick list is being picked by {pick_list.claimed_by}.",
                            details={"status": pick_list.status,
                                     "claimed_by": pick_list.claimed_by})
    raise PickListTaken(f"This pick list is {pick_list.status}.",
                        details={"status": pick_list.status})


def open_units(session: Session, pick_list_id: int) -> dict[tuple[int, int], int]:
    """What each line of a list still wants, keyed by (location id, variant id)."""
    rows = session.exec(
        select(Allocation.location_id, Allocation.variant_id, func.sum(Allocation.quantity))
        .where(Allocation.pick_list_id == pick_list_id,
               Allocation.status == AllocationStatus.ALLOCATED)
        .group_by(col(Allocation.location_id), col(Allocation.variant_id)))
    return {(location_id, variant_id): int(units) for location_id, variant_id, units in rows}


def _line_allocations(session: Session, pick_list_id: int | None, line: PickListLine, *,
                      lock: bool) -> list[Allocation]:
    """The allocations behind a line (or, with no list, every one in the line's bin for its
    SKU), oldest order first."""
    query = (
        select(Allocation).join(Order, col(Order.id) == Allocation.order_id)
        .where(Allocation.location_id == line.location_id,
               Allocation.variant_id == line.variant_id,
               Allocation.status == AllocationStatus.ALLOCATED)
        .order_by(col(Order.created_at), col(Order.id), col(Allocation.id)))
    if pick_list_id is not None:
        query = query.where(Allocation.pick_list_id == pick_list_id)
    if lock:
        query = query.with_for_update(of=Allocation)
    return list(session.exec(query))


def _finish_if_done(session: Session, pick_list: PickList) -> bool:
    """A claimed list with nothing left to pick is done. True if it is done now."""
    if pick_list.status != PickListStatus.CLAIMED or pick_list.id is None:
        return pick_list.status == PickListStatus.DONE
    if sum(open_units(session, pick_list.id).values()) > 0:
        return False
    pick_list.status = PickListStatus.DONE
    pick_list.completed_at = utcnow()
    session.flush()
    return True


def matches(code: str, variant: Variant) -> bool:
    """Whether a scanned or typed code names this variant: its SKU (any case) or barcode."""
    scanned = code.strip()
    return bool(scanned) and (scanned.casefold() == variant.sku.casefold()
                              or (variant.barcode is not None and scanned == variant.barcode))


# -- building a wave ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wave:
    pick_lists: list[PickList]
    order_count: int
    backorders_found: int  # units of earlier shortages set aside again before the wave


def build_wave(*, uow: UnitOfWork, actor: str, max_orders: int) -> Wave:
    """Put up to `max_orders` ready orders, oldest first, on new pick lists: one per warehouse,
    each SKU's allocations in one bin merged into one line, lines in pick-sequence order; the
    allocations get the list's id.

    First, backordered units of orders being prepared are looked for again (free units in
    bins); what is found goes on this wave. Orders are locked with SKIP LOCKED, so two
    builds at once take different orders, and an order a cancellation holds waits for the
    next wave. An allocation is on at most one list. Returns an empty wave when no order is
    ready: calling it again is harmless.
    """
    session = uow.session
    found = _retry_backorders(uow=uow, actor=actor, limit=max_orders)
    unlisted = exists().where(col(Allocation.order_id) == col(Order.id),
                              col(Allocation.status) == AllocationStatus.ALLOCATED,
                              col(Allocation.pick_list_id).is_(None))
    orders = list(session.exec(
        select(Order).where(col(Order.status).in_(WAVE_STATUSES), unlisted)
        .order_by(col(Order.created_at), col(Order.id)).limit(max_orders)
        .with_for_update(skip_locked=True)))
    if not orders:
        return Wave([], 0, found)
    rows = list(session.exec(
        select(Allocation, Location).join(Location, col(Location.id) == Allocation.location_id)
        .where(col(Allocation.order_id).in_([o.id for o in orders]),
               Allocation.status == AllocationStatus.ALLOCATED,
               col(Allocation.pick_list_id).is_(None))
        .order_by(col(Allocation.id)).with_for_update(of=Allocation)))
    by_warehouse: dict[int, list[tuple[Allocation, Location]]] = defaultdict(list)
    for allocation, location in rows:
        by_warehouse[location.warehouse_id].append((allocation, location))
    lists: list[PickList] = []
    now = utcnow()
    for warehouse_id in sorted(by_warehouse):
        pick_list = PickList(warehouse_id=warehouse_id, created_by=actor, created_at=now)
        session.add(pick_list)
        session.flush()
        assert pick_list.id is not None
        merged: dict[tuple[int, int], int] = defaultdict(int)
        places: dict[int, Location] = {}
        for allocation, location in by_warehouse[warehouse_id]:
            merged[(allocation.location_id, allocation.variant_id)] += allocation.quantity
            places[allocation.location_id] = location
        walk = sorted(merged, key=lambda key: (places[key[0]].pick_sequence,
                                               places[key[0]].code, key[1]))
        session.add_all([PickListLine(pick_list_id=pick_list.id, location_id=location_id,
                                      variant_id=variant_id, sequence=position,
                                      quantity=merged[(location_id, variant_id)])
                         for position, (location_id, variant_id) in enumerate(walk, 1)])
        session.execute(
            update(Allocation)
            .where(col(Allocation.id).in_([a.id for a, _ in by_warehouse[warehouse_id]]))
            .values(pick_list_id=pick_list.id)
            .execution_options(synchronize_session=False))
        lists.append(pick_list)
    session.flush()
    return Wave(lists, len({a.order_id for a, _ in rows}), found)


def _retry_backorders(*, uow: UnitOfWork, actor: str, limit: int) -> int:
    """Set aside units for backordered lines of orders still being prepared, from free units
    in bins; returns the units found."""
    session = uow.session
    waiting = list(session.exec(
        select(Order.id).join(OrderLine, col(OrderLine.order_id) == Order.id)
        .where(col(OrderLine.backordered) > 0, col(Order.status).in_(WAVE_STATUSES))
        .group_by(col(Order.id), col(Order.created_at))
        .order_by(col(Order.created_at), col(Order.id)).limit(limit)))
    if not waiting:
        return 0
    orders = list(session.exec(select(Order).where(col(Order.id).in_(waiting))
                               .order_by(col(Order.id)).with_for_update(skip_locked=True)))
    orders = [o for o in orders if o.status in WAVE_STATUSES]
    lines = list(session.exec(select(OrderLine).where(
        col(OrderLine.order_id).in_([o.id for o in orders]), col(OrderLine.backordered) > 0)
        .order_by(col(OrderLine.id))))
    _lock_stock_rows(session, [line.variant_id for line in lines])
    by_order = {o.id: o for o in orders}
    total = 0
    now = utcnow()
    for line in sorted(lines, key=lambda li: (by_order[li.order_id].created_at, li.order_id,
                                              li.id)):
        order = by_order[line.order_id]
        got = allocate_free_units(uow=uow, order_id=order.id, variant_id=line.variant_id,
                                  quantity=line.backordered, actor=actor,
                                  reason=f"backorder of {order.number} found")
        if got:
            line.backordered -= got
            total += got
            session.add(note(order, f"{got} backordered unit(s) of {line.sku} found in stock "
                                    "again; they go on the next pick list.",
                             actor=actor, at=now))
    session.flush()
    return total


# -- claiming -------------------------------------------------------------------------------------


def claim_pick_list(*, uow: UnitOfWork, pick_list_id: int, picker: str) -> PickList:
    """Give an open list to one picker. Locks the list row, so of two pickers claiming at
    once exactly one wins and the other gets PickListTaken (409); claiming one's own list
    again changes nothing. Its orders that are ready to pick move to `picking` (locked in id
    order). A list with nothing left to pick is done at once."""
    session = uow.session
    pick_list = _locked_list(session, pick_list_id)
    if pick_list.status == PickListStatus.CLAIMED and pick_list.claimed_by == picker:
        return pick_list
    if pick_list.status != PickListStatus.OPEN:
        who = f" by {pick_list.claimed_by}" if pick_list.claimed_by else ""
        raise PickListTaken(f"This pick list is {pick_list.status}{who} already.",
                            details={"status": pick_list.status,
                                     "claimed_by": pick_list.claimed_by})
    now = utcnow()
    pick_list.status = PickListStatus.CLAIMED
    pick_list.claimed_by = picker
    pick_list.claimed_at = now
    order_ids = session.exec(select(Allocation.order_id).distinct()
                             .where(Allocation.pick_list_id == pick_list_id))
    for order in _lock_orders(session, order_ids).values():
        if order.status == OrderStatus.ALLOCATED:
            session.add(transition(order, OrderStatus.PICKING, actor=picker, at=now,
                                   public=False,
                                   reason=f"Picking started (pick list #{pick_list_id})."))
    session.flush()
    _finish_if_done(session, pick_list)
    return pick_list


def release_pick_list(*, uow: UnitOfWork, pick_list_id: int, by: str,
                      may_release_others: bool) -> tuple[PickList, str]:
    """Hand a claimed list back, open for any picker (its picker's shift ended, a handheld
    died); returns the list and who had it. Units already picked stay picked; the rest wait
    on the list. Only its picker, or someone allowed to release others' lists (stock staff),
    may; PickListTaken otherwise, and for a list done or cancelled. Releasing an open list
    changes nothing. Locks the list."""
    session = uow.session
    pick_list = _locked_list(session, pick_list_id)
    if pick_list.status == PickListStatus.OPEN:
        return pick_list, ""
    if pick_list.status != PickListStatus.CLAIMED:
        raise PickListTaken(f"This pick list is {pick_list.status}.",
                            details={"status": pick_list.status})
    if pick_list.claimed_by != by and not may_release_others:
        raise PickListTaken(f"Only {pick_list.claimed_by}, or stock staff, may hand this pick "
                            "list back.", details={"status": pick_list.status,
                                                   "claimed_by": pick_list.claimed_by})
    now = utcnow()
    order_ids = session.exec(select(Allocation.order_id).distinct()
                             .where(Allocation.pick_list_id == pick_list_id))
    for order in _lock_orders(session, order_ids).values():
        session.add(note(order, f"Pick list #{pick_list_id} handed back by {by} (claimed by "
                                f"{pick_list.claimed_by}); what is left waits for a picker.",
                         actor=by, at=now))
    had_it = pick_list.claimed_by
    pick_list.status = PickListStatus.OPEN
    pick_list.claimed_by = ""
    pick_list.claimed_at = None
    session.flush()
    return pick_list, had_it


def complete_pick_list(*, uow: UnitOfWork, pick_list_id: int, picker: str) -> PickList:
    """Close the caller's claimed list when nothing is left to pick on it (e.g. its last
    units belonged to an order cancelled meanwhile). Refuses while units are left; a done
    list stays done (idempotent)."""
    session = uow.session
    pick_list = _locked_list(session, pick_list_id)
    if pick_list.status == PickListStatus.DONE:
        return pick_list
    _require_claimed_by(pick_list, picker)
    if not _finish_if_done(session, pick_list):
        left = sum(open_units(session, pick_list_id).values())
        raise PickRefused(f"{left} unit(s) are still to pick on this list: scan them or "
                          "report them short.", details={"units_left": left})
    return pick_list


# -- scanning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanResult:
    line: PickListLine
    picked_now: int
    list_done: bool


def _line_of(session: Session, pick_list: PickList, line_id: int | None,
             bin_code: str | None, code: str) -> PickListLine:
    """The line a scan is for: named by id, or found by bin code and the scanned item."""
    if line_id is not None:
        line = session.get(PickListLine, line_id)
        if line is None or line.pick_list_id != pick_list.id:
            raise NotFound(f"No line {line_id} on pick list {pick_list.id}.")
        if bin_code is not None:
            location = session.get(Location, line.location_id)
            if location is None or location.code.casefold() != bin_code.strip().casefold():
                raise PickRefused(f"Line {line_id} is not at bin {bin_code.strip()}.")
        return line
    assert bin_code is not None
    lines = list(session.exec(
        select(PickListLine).join(Location, col(Location.id) == PickListLine.location_id)
        .where(PickListLine.pick_list_id == pick_list.id,
               func.lower(Location.code) == bin_code.strip().lower())
        .order_by(col(PickListLine.sequence))))
    if not lines:
        raise NotFound(f"No line of this pick list is at bin {bin_code.strip()}.")
    variants = {v.id: v for v in session.exec(
        select(Variant).where(col(Variant.id).in_([li.variant_id for li in lines])))}
    fitting = [li for li in lines if matches(code, variants[li.variant_id])]
    if not fitting:
        return lines[0]  # refused below as the wrong item, naming what the bin should give
    wanting = open_units(session, pick_list.id or 0)
    return next((li for li in fitting if wanting.get((li.location_id, li.variant_id))),
                fitting[0])


def scan_item(*, uow: UnitOfWork, pick_list_id: int, picker: str, code: str, quantity: int,
              line_id: int | None = None, bin_code: str | None = None) -> ScanResult:
    """Confirm `quantity` units of a line taken from its bin: they move to the packing
    location through `pick_allocations`, oldest order first.

    Refuses without changing anything: a list not claimed by `picker` (PickListTaken), a code
    that is neither the line's SKU nor its barcode (WrongItem, naming what is expected), more
    units than the line still wants (PickRefused). Locks the list, then the variant's stock
    row, then the line's allocations. Not idempotent: each accepted scan picks more units,
    up to what the line wants.
    """
    if line_id is None and bin_code is None:
        raise PickRefused("Say which line (line_id) or which bin the item comes from.")
    if quantity <= 0:
        raise PickRefused("Scan at least one unit.")
    session = uow.session
    pick_list = _locked_list(session, pick_list_id)
    _require_claimed_by(pick_list, picker)
    line = _line_of(session, pick_list, line_id, bin_code, code)
    variant = session.get(Variant, line.variant_id)
    assert variant is not None
    if not matches(code, variant):
        product = session.get(Product, variant.product_id)
        expected = variant.sku + (f" (barcode {variant.barcode})" if variant.barcode else "")
        name = " ".join(part for part in (product.name if product else "", variant.name) if part)
        raise WrongItem(
            f"Wrong item: {code.strip()[:64]!r} is not what this line wants. Put it back and "
            f"take {expected}: {name}.",
            details={"scanned": code.strip()[:64], "expected_sku": variant.sku,
                     "expected_barcode": variant.barcode, "line_id": line.id})
    _lock_stock_rows(session, [line.variant_id])
    allocations = _line_allocations(session, pick_list_id, line, lock=True)
    wanted = sum(a.quantity for a in allocations)
    if quantity > wanted:
        raise PickRefused(
            f"This line wants {wanted} more unit(s) of {variant.sku}; you scanned {quantity}."
            if wanted else f"Nothing more is to pick on this line ({variant.sku}).",
            details={"wanted": wanted, "scanned_quantity": quantity, "line_id": line.id})
    pick_allocations(uow=uow, allocation_ids=[a.id for a in allocations if a.id is not None],
                     quantity=quantity, actor=picker, document_type="pick_list",
                     document_id=str(pick_list_id))
    line.picked += quantity
    session.flush()
    return ScanResult(line, quantity, _finish_if_done(session, pick_list))


# -- short picks ----------------------------------------------------------------------------------


@dataclass
class ShortResult:
    line: PickListLine
    picked: int  # units found and taken to packing
    short: int  # units of this line not found
    given_back: dict[str, int] = field(default_factory=dict)  # order number -> units
    reallocated: dict[str, int] = field(default_factory=dict)  # order number -> units
    backordered: dict[str, int] = field(default_factory=dict)  # order number -> units
    correction: int = 0  # the count correction's change to the bin
    list_done: bool = False


def report_short(*, uow: UnitOfWork, pick_list_id: int, line_id: int, picker: str,
                 found: int, left_in_bin: int = 0) -> ShortResult:
    """The bin held fewer units than the line wants: `found` were there and are taken.

    In one transaction: the `found` units are picked (oldest order first); the rest of the
    line is recorded as short and its allocations given back; other orders' allocations of
    that SKU in that bin are given back too (newest order first) as far as the bin cannot hold
    them; the bin's stock is corrected (COUNT_CORRECTION) to `left_in_bin` units, zero unless
    said otherwise; then each order that lost units gets free units of other bins set aside
    (`allocate_free_units`, never from this bin), which go on the next wave, and what cannot
    be found is backordered on its order line with an internal note in the order's history.

    Locks the list, then the orders concerned (id order), then the stock row, then the
    allocations; if another order was allocated to the bin meanwhile, raises Conflict before
    changing anything. Refuses (PickRefused) when `found` covers what the line wants, and
    (Conflict) when checkouts hold the units the correction would remove.
    """
    if found < 0 or left_in_bin < 0:
        raise PickRefused("Counts cannot be negative.")
    session = uow.session
    pick_list = _locked_list(session, pick_list_id)
    _require_claimed_by(pick_list, picker)
    line = session.get(PickListLine, line_id)
    if line is None or line.pick_list_id != pick_list_id:
        raise NotFound(f"No line {line_id} on pick list {pick_list_id}.")
    location = session.get(Location, line.location_id)
    variant = session.get(Variant, line.variant_id)
    assert location is not None and variant is not None

    seen = _line_allocations(session, None, line, lock=False)
    orders = _lock_orders(session, [a.order_id for a in seen])
    _lock_stock_rows(session, [line.variant_id])
    in_bin = _line_allocations(session, None, line, lock=True)
    if {a.order_id for a in in_bin} - set(orders):
        raise Conflict("Units in this bin were just set aside for another order; report the "
                       "shortage again.")
    ours = [a for a in in_bin if a.pick_list_id == pick_list_id]
    wanted = sum(a.quantity for a in ours)
    if wanted == 0:
        raise PickRefused(f"Nothing is left to pick on this line ({variant.sku}).",
                          details={"line_id": line_id})
    if found >= wanted:
        raise PickRefused(f"This line wants {wanted} unit(s) and you found {found}: that is "
                          "no shortage, scan them instead.",
                          details={"wanted": wanted, "found": found, "line_id": line_id})
    result = ShortResult(line=line, picked=found, short=wanted - found)
    if found:
        pick_allocations(uow=uow, allocation_ids=[a.id for a in ours if a.id is not None],
                         quantity=found, actor=picker, document_type="pick_list",
                         document_id=str(pick_list_id))
    reason = f"short pick at bin {location.code} (pick list #{pick_list_id})"
    lost: dict[uuid.UUID, int] = defaultdict(int)
    for allocation in _line_allocations(session, pick_list_id, line, lock=True):
        assert allocation.id is not None
        lost[allocation.order_id] += allocation.quantity
        deallocate_units(uow=uow, allocation_id=allocation.id, quantity=allocation.quantity,
                         reason=reason, actor=picker)
    bin_stock = session.exec(select(BinStock).where(
        BinStock.location_id == line.location_id, BinStock.variant_id == line.variant_id)
        .with_for_update()).one()
    excess = bin_stock.allocated - left_in_bin
    for allocation in reversed(_line_allocations(session, None, line, lock=True)):
        if excess <= 0:
            break
        assert allocation.id is not None
        take = min(allocation.quantity, excess)
        lost[allocation.order_id] += take
        excess -= take
        deallocate_units(uow=uow, allocation_id=allocation.id, quantity=take, reason=reason,
                         actor=picker)
    bin_stock = session.exec(select(BinStock).where(BinStock.id == bin_stock.id)
                             .with_for_update()).one()
    result.correction = left_in_bin - bin_stock.on_hand
    if result.correction:
        try:
            adjust_bin(uow=uow, variant_id=line.variant_id, location_id=line.location_id,
                       delta=result.correction, kind=MovementKind.COUNT_CORRECTION,
                       reason=f"{reason}: {left_in_bin} left", actor=picker,
                       document_type="pick_list", document_id=str(pick_list_id))
        except StockConflict as exc:
            raise Conflict(exc.message, details=exc.details) from exc
    _replace_lost(uow=uow, orders=orders, lost=lost, line=line, location=location,
                  variant=variant, actor=picker, result=result, pick_list_id=pick_list_id)
    line.picked += found
    line.short += result.short
    session.flush()
    result.list_done = _finish_if_done(session, pick_list)
    return result


def _replace_lost(*, uow: UnitOfWork, orders: dict[uuid.UUID, Order],
                  lost: dict[uuid.UUID, int], line: PickListLine, location: Location,
                  variant: Variant, actor: str, result: ShortResult, pick_list_id: int) -> None:
    """Set aside units from other bins for orders that lost some; backorder the rest."""
    session = uow.session
    now = utcnow()
    for order_id in sorted(lost, key=lambda o: (orders[o].created_at, o)):
        order, units = orders[order_id], lost[order_id]
        result.given_back[order.number] = units
        got = allocate_free_units(uow=uow, order_id=order_id, variant_id=line.variant_id,
                                  quantity=units, actor=actor, avoid_location_id=location.id,
                                  reason=f"replaces units not found at bin {location.code}")
        missing = units - got
        if got:
            result.reallocated[order.number] = got
        text = (f"Short pick at bin {location.code} (pick list #{pick_list_id}): {units} "
                f"unit(s) of {variant.sku} not found there; {got} set aside from other bins "
                "for the next pick list")
        if missing:
            result.backordered[order.number] = missing
            order_line = session.exec(select(OrderLine).where(
                OrderLine.order_id == order_id, OrderLine.variant_id == line.variant_id)
                .order_by(col(OrderLine.id))).first()
            assert order_line is not None
            order_line.backordered += missing
            text += f"; {missing} backordered"
        session.add(note(order, text + ".", actor=actor, at=now))
    session.flush()
