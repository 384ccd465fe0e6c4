"""Stock adjustments: units found, lost, damaged or corrected in one bin, with two-person
approval above a value limit.

Rules:
- An adjustment's value is |delta| x the variant's unit cost (weighted average) when it is
  requested. At or below the limit (ADJUSTMENT_APPROVAL_CENTS) it is applied at once; above
  it, it waits as `pending_approval` until a *different* member of staff approves (which
  applies it) or rejects it. The requester can do neither: `SecondPersonRequired` (403).
  A SKU whose unit cost is still 0 (never received on a purchase order nor imported with a
  cost) has no value and is therefore never held for approval.
- `damaged` and `lost` take units away, `found` adds them, `correction` goes either way.
- Units are only ever changed through `fulfilment.inventory.adjust_bin` (kind ADJUSTMENT, or
  COUNT_CORRECTION for adjustments that come from a cycle count), which locks the variant's
  stock row and refuses, with `StockConflict` and nothing changed, to take units that are
  allocated to orders in that bin or promised to checkouts under way.
- Deciding locks the adjustment row, so two people deciding at once queue and the second one
  finds it decided (Conflict). Every request, approval and rejection is audited with the
  status before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlmodel import Session, col, select

from conveyor import audit
from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, DomainError, NotFound
from fulfilment.inventory import StockConflict, adjust_bin
from fulfilment.receiving import (
    MAX_INT,
    decode_cursor,
    encode_cursor,
    field_error,
    find_bin,
    find_warehouse,
    raise_if_any,
    variants_by_sku,
)
from models.base import utcnow
from models.catalog import Variant
from models.inventory import BinStock, Location, LocationKind, MovementKind, StockItem, Warehouse
from models.warehouse import AdjustmentReason, AdjustmentStatus, StockAdjustment

TAKES_UNITS = frozenset({AdjustmentReason.DAMAGED, AdjustmentReason.LOST})
ADDS_UNITS = frozenset({AdjustmentReason.FOUND})


class SecondPersonRequired(DomainError):
    """The requester of an adjustment tried to approve or reject it themselves."""

    code = "forbidden"  # 403, like every other "not you" in the admin API


def same_person(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


@dataclass(frozen=True)
class AdjustmentView:
    adjustment: StockAdjustment
    sku: str
    warehouse: str
    bin: str


def _apply(uow: UnitOfWork, adjustment: StockAdjustment, actor_email: str) -> None:
    """Change the units through the one stock service (StockConflict leaves them as they are)."""
    from_count = adjustment.cycle_count_id is not None
    adjust_bin(uow=uow, variant_id=adjustment.variant_id, location_id=adjustment.location_id,
               delta=adjustment.quantity_delta,
               kind=MovementKind.COUNT_CORRECTION if from_count else MovementKind.ADJUSTMENT,
               reason=f"{adjustment.reason}: {adjustment.note}" if adjustment.note
               else adjustment.reason,
               actor=actor_email,
               document_type="cycle_count" if from_count else "stock_adjustment",
               document_id=str(adjustment.cycle_count_id if from_count else adjustment.id))


def adjustment_value(delta: int, unit_cost_cents: int) -> int:
    return abs(delta) * unit_cost_cents


def new_adjustment(uow: UnitOfWork, *, actor: audit.Actor, variant_id: int, location_id: int,
                   delta: int, reason: str, note: str, unit_cost_cents: int,
                   approval_limit_cents: int, cycle_count_id: int | None = None,
                   ) -> StockAdjustment:
    """Insert an adjustment and apply it at once when its value is within the limit
    (StockConflict from `adjust_bin` if the bin cannot take it). One held for approval that
    would take units the bin does not have free is refused the same way now, rather than
    failing at approval. The caller has checked its inputs and audits it."""
    session = uow.session
    value = adjustment_value(delta, unit_cost_cents)
    now = utcnow()
    applies_now = value <= approval_limit_cents
    if not applies_now and delta < 0:  # do not let a hopeless change wait for approval
        row = session.exec(select(BinStock).where(BinStock.location_id == location_id,
                                                  BinStock.variant_id == variant_id)).first()
        free = (row.on_hand - row.allocated) if row is not None else 0
        if free + delta < 0:
            raise StockConflict(
                f"Only {free} unit(s) in this bin are not set aside for orders; give those "
                "allocations back (or short-pick them) first.", details={"free": free})
    adjustment = StockAdjustment(
        variant_id=variant_id, location_id=location_id, quantity_delta=delta, reason=reason,
        note=note, value_cents=value, requested_by=actor.email, requested_at=now,
        status=AdjustmentStatus.APPLIED if applies_now else AdjustmentStatus.PENDING,
        decided_at=now if applies_now else None, cycle_count_id=cycle_count_id)
    session.add(adjustment)
    session.flush()
    if applies_now:
        _apply(uow, adjustment, actor.email)
    return adjustment


def request_adjustment(*, uow: UnitOfWork, actor: audit.Actor, sku: str, warehouse_code: str,
                       bin_code: str, delta: int, reason: AdjustmentReason, note: str,
                       approval_limit_cents: int) -> AdjustmentView:
    """Ask to change the units of one SKU in one bin. Unknown SKU, warehouse or bin, a delta
    whose sign does not fit the reason, or a value too large to record are refused (422)
    before anything is written. Applied at once (StockConflict if the bin cannot give the
    units) or held for a second person, as the module says. Audited."""
    session = uow.session
    errors = []
    variant = variants_by_sku(session, [sku]).get(sku)
    if variant is None:
        errors.append(field_error(["sku"], f"No SKU {sku}.", "unknown_sku"))
    warehouse = find_warehouse(session, warehouse_code)
    location = None
    if warehouse is None:
        errors.append(field_error(["warehouse"], f"No warehouse {warehouse_code}.",
                                  "unknown_warehouse"))
    else:
        assert warehouse.id is not None
        location = find_bin(session, warehouse.id, bin_code)
        if location is None or location.kind != LocationKind.BIN:
            errors.append(field_error(["bin"], f"No bin {bin_code} in {warehouse.code}.",
                                      "unknown_bin"))
    if reason in TAKES_UNITS and delta > 0:
        errors.append(field_error(["delta"], f"'{reason}' takes units away: give a negative "
                                  "delta.", "sign_mismatch"))
    if reason in ADDS_UNITS and delta < 0:
        errors.append(field_error(["delta"], f"'{reason}' adds units: give a positive delta.",
                                  "sign_mismatch"))
    raise_if_any(errors)
    assert variant is not None and variant.id is not None
    assert location is not None and location.id is not None and warehouse is not None
    item = session.get(StockItem, variant.id)
    unit_cost = item.unit_cost_cents if item is not None else 0
    if adjustment_value(delta, unit_cost) > MAX_INT:
        raise_if_any([field_error(["delta"], "This adjustment is worth more than can be "
                                  "recorded at once; split it.", "too_large")])
    adjustment = new_adjustment(uow, actor=actor, variant_id=variant.id,
                                location_id=location.id, delta=delta, reason=reason,
                                note=note, unit_cost_cents=unit_cost,
                                approval_limit_cents=approval_limit_cents)
    audit.record(session, actor, "stock.adjustment_request", target_type="stock_adjustment",
                 target_id=str(adjustment.id),
                 after={**adjustment.model_dump(), "sku": sku, "warehouse": warehouse.code,
                        "bin": location.code, "approval_limit_cents": approval_limit_cents})
    return AdjustmentView(adjustment, sku, warehouse.code, location.code)


def _pending(session: Session, adjustment_id: int, actor: audit.Actor,
             verb: str) -> StockAdjustment:
    adjustment = session.get(StockAdjustment, adjustment_id, with_for_update=True)
    if adjustment is None:
        raise NotFound("No such adjustment.")
    if adjustment.status != AdjustmentStatus.PENDING:
        raise Conflict(f"This adjustment is {adjustment.status} already.",
                       details={"status": adjustment.status})
    if same_person(adjustment.requested_by, actor.email):
        raise SecondPersonRequired(
            f"You requested this adjustment, so you cannot {verb} it: a different member of "
            "staff (stock or admin) must.",
            details={"reason": "second_person_required",
                     "requested_by": adjustment.requested_by})
    return adjustment


def approve_adjustment(*, uow: UnitOfWork, actor: audit.Actor,
                       adjustment_id: int) -> StockAdjustment:
    """A second person approves a pending adjustment, which applies it (StockConflict, and it
    stays pending, if the bin cannot give the units now). Locks the adjustment; audited."""
    session = uow.session
    adjustment = _pending(session, adjustment_id, actor, "approve")
    _apply(uow, adjustment, actor.email)
    adjustment.status = AdjustmentStatus.APPLIED
    adjustment.decided_by = actor.email
    adjustment.decided_at = utcnow()
    session.flush()
    audit.record(session, actor, "stock.adjustment_approve", target_type="stock_adjustment",
                 target_id=str(adjustment.id), before={"status": AdjustmentStatus.PENDING},
                 after={"status": adjustment.status, "quantity_delta": adjustment.quantity_delta,
                        "value_cents": adjustment.value_cents,
                        "requested_by": adjustment.requested_by})
    return adjustment


def reject_adjustment(*, uow: UnitOfWork, actor: audit.Actor, adjustment_id: int,
                      reason: str) -> StockAdjustment:
    """A second person rejects a pending adjustment: no units change. Locks the adjustment;
    audited with the reason (the table has no column for it)."""
    session = uow.session
    adjustment = _pending(session, adjustment_id, actor, "reject")
    adjustment.status = AdjustmentStatus.REJECTED
    adjustment.decided_by = actor.email
    adjustment.decided_at = utcnow()
    session.flush()
    audit.record(session, actor, "stock.adjustment_reject", target_type="stock_adjustment",
                 target_id=str(adjustment.id), before={"status": AdjustmentStatus.PENDING},
                 after={"status": adjustment.status, "reason": reason,
                        "requested_by": adjustment.requested_by})
    return adjustment


def _view_rows(session: Session, adjustments: Sequence[StockAdjustment]) -> list[AdjustmentView]:
    if not adjustments:
        return []
    skus = dict(session.exec(select(Variant.id, Variant.sku).where(
        col(Variant.id).in_({a.variant_id for a in adjustments}))).all())
    places = {loc.id: (w.code, loc.code) for loc, w in session.exec(
        select(Location, Warehouse).join(Warehouse, col(Warehouse.id) == Location.warehouse_id)
        .where(col(Location.id).in_({a.location_id for a in adjustments})))}
    return [AdjustmentView(a, skus.get(a.variant_id, ""), *places.get(a.location_id, ("", "")))
            for a in adjustments]


def get_adjustment(session: Session, adjustment_id: int) -> AdjustmentView:
    adjustment = session.get(StockAdjustment, adjustment_id)
    if adjustment is None:
        raise NotFound("No such adjustment.")
    return _view_rows(session, [adjustment])[0]


def list_adjustments(session: Session, *, statuses: list[str] | None,
                     cycle_count_id: int | None, limit: int, offset: int = 0,
                     cursor: str | None = None) -> tuple[list[AdjustmentView], str | None]:
    """Adjustments, newest first; `cursor` continues after the previous page."""
    query = select(StockAdjustment)
    if statuses:
        query = query.where(col(StockAdjustment.status).in_(statuses))
    if cycle_count_id is not None:
        query = query.where(StockAdjustment.cycle_count_id == cycle_count_id)
    if cursor:
        query = query.where(col(StockAdjustment.id) < decode_cursor(cursor))
    rows = list(session.exec(query.order_by(col(StockAdjustment.id).desc())
                             .offset(offset).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1].id if rows else None
    return _view_rows(session, rows), encode_cursor(last) if more and last else None
