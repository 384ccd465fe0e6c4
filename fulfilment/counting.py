"""Cycle counts: blind counting of bins, a review of the variances, and posting them as
adjustments.

How it works, and why:
- A count covers a warehouse and a set of bins and/or SKUs; its lines are every bin x SKU
  with a `bin_stock` row in that scope (bins of kind `bin` only: units at the packing
  location are picked for orders and move too fast to count). A bin and SKU can be in one
  open count at a time, checked under the warehouse row's lock, or two counts of the same
  shelf would each post the same variance.
- Counting is blind: the sheet shows where to go and what to look for, never the quantity
  the books expect; counters record what they find, and may count a line again while the
  count is open.
- The book quantity a line is compared with is the bin's quantity *when that line was
  counted*, summed from the append-only ledger up to `counted_at`. Picking may go on while a
  count is open; comparing with the quantity at posting would turn every pick made between
  counting and posting into a false variance (and a wrong correction). The variance is then
  applied as a delta, so movements after the count are kept. `expected` is filled with that
  book quantity when the count is posted.
- The review (once every line is counted) shows book, counted, variance and its value.
  Posting turns each variance into a `stock_adjustment` (reason `correction`, with the
  count's id) under the same two-person rule as other adjustments: a variance worth more than
  ADJUSTMENT_APPROVAL_CENTS waits for a second person to approve it (then it is applied with
  kind COUNT_CORRECTION); smaller ones are applied at once through
  `fulfilment.inventory.adjust_bin` (kind COUNT_CORRECTION). The same rule, because a large
  count variance moves as much value as a large manual adjustment, and a count must not be a
  way round the approval.
- Posting locks the count row, then every stock row of its SKUs in variant-id order (so the
  ledger read for book quantities sees every committed movement), and applies lines in
  variant order. A variance that would take units allocated to orders (or promised to
  checkouts) refuses the whole posting with the StockConflict message, naming the line:
  nothing is applied, and the count stays open to be dealt with and posted again.
- Creating, counting, posting and cancelling are audited; counting entries never hold
  expected quantities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_
from sqlmodel import Session, col, func, select

from conveyor import audit
from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, NotFound
from fulfilment.adjustments import adjustment_value, new_adjustment
from fulfilment.inventory import StockConflict
from fulfilment.receiving import (
    MAX_INT,
    field_error,
    find_bin,
    find_warehouse,
    lock_stock_items,
    raise_if_any,
    variants_by_sku,
)
from models.base import utcnow
from models.catalog import Product, Variant
from models.inventory import (
    BinStock,
    Location,
    LocationKind,
    StockItem,
    StockMovement,
    Warehouse,
)
from models.warehouse import (
    AdjustmentReason,
    CycleCount,
    CycleCountLine,
    CycleCountStatus,
    StockAdjustment,
)


@dataclass(frozen=True)
class SheetLine:
    """What a counter sees: where, what, and what they counted. Never the book quantity."""

    line_id: int
    variant_id: int
    location_id: int
    bin: str
    zone: str
    aisle: str
    shelf: str
    pick_sequence: int
    sku: str
    name: str
    counted: int | None
    counted_by: str
    counted_at: datetime | None


@dataclass(frozen=True)
class CountSheet:
    count: CycleCount
    warehouse: str
    lines: list[SheetLine]

    @property
    def counted(self) -> int:
        return sum(1 for line in self.lines if line.counted is not None)


@dataclass(frozen=True)
class ReviewLine:
    line: SheetLine
    book: int
    unit_cost_cents: int
    adjustment: StockAdjustment | None

    @property
    def counted(self) -> int:
        assert self.line.counted is not None
        return self.line.counted

    @property
    def variance(self) -> int:
        return self.counted - self.book

    @property
    def value_cents(self) -> int:
        """The variance's value, signed: negative when units are missing."""
        return self.variance * self.unit_cost_cents


@dataclass(frozen=True)
class CountReview:
    sheet: CountSheet
    lines: list[ReviewLine]
    approval_limit_cents: int

    def needs_approval(self, line: ReviewLine) -> bool:
        return adjustment_value(line.variance, line.unit_cost_cents) > self.approval_limit_cents


@dataclass(frozen=True)
class CountSummary:
    count: CycleCount
    warehouse: str
    lines: int
    counted: int


def _get_count(session: Session, count_id: int, *, lock: bool = False) -> CycleCount:
    count = session.get(CycleCount, count_id, with_for_update=lock)
    if count is None:
        raise NotFound("No such cycle count.")
    return count


def _open(count: CycleCount) -> None:
    if count.status != CycleCountStatus.OPEN:
        raise Conflict(f"This count is {count.status}.", details={"status": count.status})


def create_cycle_count(*, uow: UnitOfWork, actor: audit.Actor, warehouse_code: str,
                       bins: Sequence[str] = (), skus: Sequence[str] = ()) -> CountSheet:
    """A count of the bin x SKU rows of a warehouse, narrowed to these bins and/or SKUs (all
    of the warehouse when neither is given). Unknown warehouse, bins or SKUs and an empty
    scope are refused (422); lines already in another open count are refused (Conflict),
    checked under the warehouse row's lock. Audited."""
    session = uow.session
    errors: list[dict[str, Any]] = []
    warehouse = find_warehouse(session, warehouse_code, lock=True)
    if warehouse is None:
        raise_if_any([field_error(["warehouse"], f"No warehouse {warehouse_code}.",
                                  "unknown_warehouse")])
    assert warehouse is not None and warehouse.id is not None
    location_ids: list[int] = []
    for i, code in enumerate(bins):
        location = find_bin(session, warehouse.id, code)
        if location is None or location.kind != LocationKind.BIN or location.id is None:
            errors.append(field_error(["bins", i], f"No bin {code} in {warehouse.code}.",
                                      "unknown_bin"))
        else:
            location_ids.append(location.id)
    variants = variants_by_sku(session, skus)
    errors += [field_error(["skus", i], f"No SKU {sku}.", "unknown_sku")
               for i, sku in enumerate(skus) if sku not in variants]
    raise_if_any(errors)
    query = (select(BinStock.location_id, BinStock.variant_id)
             .join(Location, col(Location.id) == BinStock.location_id)
             .where(Location.warehouse_id == warehouse.id, Location.kind == LocationKind.BIN))
    if bins:
        query = query.where(col(BinStock.location_id).in_(location_ids))
    if skus:
        query = query.where(col(BinStock.variant_id).in_([v.id for v in variants.values()]))
    pairs = sorted(set(session.exec(query).all()))
    if not pairs:
        raise_if_any([field_error(["bins" if bins else "skus" if skus else "warehouse"],
                                  "Nothing to count: no stock rows in this scope.",
                                  "empty_scope")])
    busy = set(session.exec(
        select(CycleCountLine.location_id, CycleCountLine.variant_id)
        .join(CycleCount, col(CycleCount.id) == CycleCountLine.cycle_count_id)
        .where(CycleCount.warehouse_id == warehouse.id,
               CycleCount.status == CycleCountStatus.OPEN)).all())
    overlap = [pair for pair in pairs if pair in busy]
    if overlap:
        raise Conflict(f"{len(overlap)} of these bin/SKU rows are in another open count; post "
                       "or cancel that one first.", details={"rows": len(overlap)})
    count = CycleCount(warehouse_id=warehouse.id, created_by=actor.email)
    session.add(count)
    session.flush()
    assert count.id is not None
    for location_id, variant_id in pairs:
        session.add(CycleCountLine(cycle_count_id=count.id, location_id=location_id,
                                   variant_id=variant_id))
    session.flush()
    sheet = count_sheet(session, count.id)
    audit.record(session, actor, "stock.count_create", target_type="cycle_count",
                 target_id=str(count.id),
                 after={"warehouse": warehouse.code, "bins": list(bins), "skus": list(skus),
                        "lines": [{"bin": line.bin, "sku": line.sku} for line in sheet.lines]})
    return sheet


def count_sheet(session: Session, count_id: int) -> CountSheet:
    """The blind counting view: bins in walking order and the SKUs in them."""
    count = _get_count(session, count_id)
    warehouse = session.get(Warehouse, count.warehouse_id)
    lines = [SheetLine(
        line_id=line.id, variant_id=line.variant_id, location_id=line.location_id,
        bin=location.code, zone=location.zone, aisle=location.aisle, shelf=location.shelf,
        pick_sequence=location.pick_sequence, sku=variant.sku,
        name=f"{product.name} ({variant.name})", counted=line.counted,
        counted_by=line.counted_by, counted_at=line.counted_at)
        for line, location, variant, product in session.exec(
            select(CycleCountLine, Location, Variant, Product)
            .join(Location, col(Location.id) == CycleCountLine.location_id)
            .join(Variant, col(Variant.id) == CycleCountLine.variant_id)
            .join(Product, col(Product.id) == Variant.product_id)
            .where(CycleCountLine.cycle_count_id == count_id)
            .order_by(col(Location.pick_sequence), col(Location.code), col(Variant.sku)))
        if line.id is not None]
    return CountSheet(count, warehouse.code if warehouse else "", lines)


def list_cycle_counts(session: Session, *, statuses: list[str] | None, limit: int,
                      offset: int) -> list[CountSummary]:
    query = select(CycleCount, Warehouse).join(Warehouse,
                                               col(Warehouse.id) == CycleCount.warehouse_id)
    if statuses:
        query = query.where(col(CycleCount.status).in_(statuses))
    rows = list(session.exec(query.order_by(col(CycleCount.id).desc()).offset(offset)
                             .limit(limit)))
    progress: dict[int, tuple[int, int]] = {}
    if rows:
        for count_id, total, counted in session.exec(
                select(CycleCountLine.cycle_count_id, func.count(),
                       func.count(col(CycleCountLine.counted)))
                .where(col(CycleCountLine.cycle_count_id).in_([c.id for c, _ in rows]))
                .group_by(col(CycleCountLine.cycle_count_id))):
            progress[count_id] = (int(total), int(counted))
    return [CountSummary(count, warehouse.code, *progress.get(count.id or 0, (0, 0)))
            for count, warehouse in rows]


@dataclass(frozen=True)
class CountedLine:
    line_id: int
    counted: int


def record_counts(*, uow: UnitOfWork, actor: audit.Actor, count_id: int,
                  counts: Sequence[CountedLine]) -> CountSheet:
    """Record what was found on some lines of an open count (a line counted again keeps the
    latest figure and time). Lines of other counts are refused (422). Locks the count row, so
    counting and posting do not interleave. Audited with the figures, never a book quantity."""
    session = uow.session
    count = _get_count(session, count_id, lock=True)
    _open(count)
    lines = {line.id: line for line in session.exec(
        select(CycleCountLine).where(CycleCountLine.cycle_count_id == count_id)
        .with_for_update())}
    raise_if_any([field_error(["counts", i, "line_id"], f"Line {c.line_id} is not on this "
                              "count.", "unknown_line")
                  for i, c in enumerate(counts) if c.line_id not in lines])
    now = utcnow()
    for c in counts:
        line = lines[c.line_id]
        line.counted, line.counted_by, line.counted_at = c.counted, actor.email, now
    session.flush()
    audit.record(session, actor, "stock.count_record", target_type="cycle_count",
                 target_id=str(count_id),
                 after={"counts": [{"line_id": c.line_id, "counted": c.counted}
                                   for c in counts]})
    return count_sheet(session, count_id)


def _book_at_count(session: Session, count_id: int) -> dict[int, int]:
    """Each counted line's bin quantity at the moment it was counted, from the ledger."""
    rows = session.exec(
        select(CycleCountLine.id, func.sum(StockMovement.on_hand_delta))
        .join(StockMovement, and_(
            col(StockMovement.variant_id) == col(CycleCountLine.variant_id),
            col(StockMovement.location_id) == col(CycleCountLine.location_id),
            col(StockMovement.created_at) <= col(CycleCountLine.counted_at)))
        .where(CycleCountLine.cycle_count_id == count_id)
        .group_by(col(CycleCountLine.id))).all()
    return {line_id: int(total or 0) for line_id, total in rows if line_id is not None}


def _review(session: Session, count_id: int, approval_limit_cents: int) -> CountReview:
    sheet = count_sheet(session, count_id)
    missing = len(sheet.lines) - sheet.counted
    if missing:
        raise Conflict(f"{missing} line(s) are not counted yet; the review opens when every "
                       "line is.", details={"uncounted": missing})
    adjustments = {(a.variant_id, a.location_id): a for a in session.exec(
        select(StockAdjustment).where(StockAdjustment.cycle_count_id == count_id))}
    if sheet.count.status == CycleCountStatus.POSTED:
        stored = {line.id: line.expected for line in session.exec(
            select(CycleCountLine).where(CycleCountLine.cycle_count_id == count_id))}
        book = {k: v for k, v in stored.items() if k is not None and v is not None}
    else:
        book = _book_at_count(session, count_id)
    costs = {item.variant_id: item.unit_cost_cents for item in session.exec(
        select(StockItem).where(col(StockItem.variant_id).in_(
            {line.variant_id for line in sheet.lines})))}
    return CountReview(sheet, [ReviewLine(
        line=line, book=book.get(line.line_id, 0),
        unit_cost_cents=int(costs.get(line.variant_id, 0)),
        adjustment=adjustments.get((line.variant_id, line.location_id)))
        for line in sheet.lines], approval_limit_cents)


def review_cycle_count(session: Session, count_id: int, *,
                       approval_limit_cents: int) -> CountReview:
    """Book quantity (at counting), counted, variance and its value per line; only once every
    line is counted (Conflict before). After posting, the stored book quantities and the
    adjustments made."""
    return _review(session, count_id, approval_limit_cents)


def post_cycle_count(*, uow: UnitOfWork, actor: audit.Actor, count_id: int,
                     approval_limit_cents: int) -> CountReview:
    """Turn the variances of a fully counted, open count into adjustments (see the module
    docstring for locks, the approval rule and refusals) and mark it posted. Audited."""
    session = uow.session
    count = _get_count(session, count_id, lock=True)
    _open(count)
    variant_ids = session.exec(select(CycleCountLine.variant_id).where(
        CycleCountLine.cycle_count_id == count_id)).all()
    lock_stock_items(session, variant_ids)
    review = _review(session, count_id, approval_limit_cents)
    posted: list[dict[str, Any]] = []
    for line in sorted(review.lines, key=lambda r: (r.line.variant_id, r.line.location_id)):
        row = session.get(CycleCountLine, line.line.line_id)
        assert row is not None
        row.expected = line.book
        if line.variance == 0:
            continue
        cost = line.unit_cost_cents
        if adjustment_value(line.variance, cost) > MAX_INT:
            raise_if_any([field_error(["lines", line.line.line_id], f"The variance of "
                                      f"{line.line.sku} in {line.line.bin} is worth more than "
                                      "can be recorded at once.", "too_large")])
        try:
            adjustment = new_adjustment(
                uow, actor=actor, variant_id=line.line.variant_id,
                location_id=line.line.location_id, delta=line.variance,
                reason=AdjustmentReason.CORRECTION, note=f"cycle count {count_id}",
                unit_cost_cents=cost, approval_limit_cents=approval_limit_cents,
                cycle_count_id=count_id)
        except StockConflict as exc:
            raise StockConflict(
                f"{line.line.sku} in {line.line.bin} (counted {line.counted}, book "
                f"{line.book}): {exc.message}",
                details={**exc.details, "line_id": line.line.line_id, "sku": line.line.sku,
                         "bin": line.line.bin}) from None
        posted.append({"line_id": line.line.line_id, "sku": line.line.sku,
                       "bin": line.line.bin, "book": line.book, "counted": line.counted,
                       "variance": line.variance, "adjustment_id": adjustment.id,
                       "status": adjustment.status, "value_cents": adjustment.value_cents})
    count.status = CycleCountStatus.POSTED
    count.posted_by = actor.email
    count.posted_at = utcnow()
    session.flush()
    audit.record(session, actor, "stock.count_post", target_type="cycle_count",
                 target_id=str(count_id), before={"status": CycleCountStatus.OPEN},
                 after={"status": count.status, "lines": len(review.lines),
                        "variances": posted})
    return _review(session, count_id, approval_limit_cents)


def cancel_cycle_count(*, uow: UnitOfWork, actor: audit.Actor, count_id: int,
                       reason: str) -> CycleCount:
    """Cancel an open count: nothing changes in stock, its lines are free to count again.
    Locks the count; audited."""
    session = uow.session
    count = _get_count(session, count_id, lock=True)
    _open(count)
    count.status = CycleCountStatus.CANCELLED
    session.flush()
    audit.record(session, actor, "stock.count_cancel", target_type="cycle_count",
                 target_id=str(count_id), before={"status": CycleCountStatus.OPEN},
                 after={"status": count.status, "reason": reason})
    return count

