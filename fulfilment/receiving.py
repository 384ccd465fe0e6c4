"""The receiving desk: where stock lives (warehouses and bins), what is there (stock levels,
reorder suggestions and settings) and what comes in (purchase orders and their receipts).

Guarantees:
- Units only ever enter bins through `fulfilment.inventory.receive_stock` (document type
  "purchase_order", document id the PO number), so the ledger stays exact; damaged units are
  recorded on the receipt and the PO line but never put into stock.
- A receipt locks its purchase order row first, then the stock rows of the variants it
  brings in (variant-id order, like every stock writer), then the bins: two receipts of one
  PO queue, and the weighted average cost is computed from the on-hand quantity read under
  the lock.
- Every write here appends an audit entry (`conveyor.audit.record`) with the values before
  and after, in the caller's transaction: the change and its entry commit together.
- Bad input raises `InvalidStockInput` (422 with one entry per bad field) before anything
  is written; a document in the wrong state raises `Conflict`; nothing is idempotent by key:
  each call records one delivery, one bin, one warehouse.

Line states: a PO line is complete when the units that arrived (good + damaged) reach the
quantity expected. Its discrepancies are `short` (expected - arrived, when positive), `over`
(arrived - expected, when positive) and `damaged` (arrived unusable: the supplier owes a credit
or a replacement). A PO is `received` when every line is complete, `partially_received` once
anything arrived; more units may still be received on a received PO (shown as over). Only an
open PO (nothing received) can be cancelled.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, func, select

from conveyor import audit
from conveyor.db import LIKE_ESCAPE, UnitOfWork, like_pattern
from conveyor.errors import Conflict, DomainError, NotFound
from fulfilment.inventory import receive_stock
from models.catalog import Product, Variant
from models.inventory import BinStock, Location, LocationKind, StockItem, Warehouse
from models.warehouse import (
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderStatus,
    Receipt,
    ReceiptLine,
)

MAX_UNITS = 1_000_000  # the most units one line, count or adjustment may name
MAX_INT = 2_147_483_647  # what an INTEGER column holds
RESERVED_BIN_CODES = frozenset({"PACK"})  # `packing_location` makes this one itself
OPEN_PO_STATUSES = (PurchaseOrderStatus.OPEN, PurchaseOrderStatus.PARTIALLY_RECEIVED)


# -- Errors and look-ups shared by the stock desk ------------------------------------------------


class InvalidStockInput(DomainError):
    """Input that names things that do not exist or do not fit together (422, per field)."""

    code = "invalid_input"

    def __init__(self, message: str, fields: list[dict[str, Any]]) -> None:
        super().__init__(message, details={"fields": fields})
        self.fields = fields


class InvalidCursor(DomainError):
    code = "invalid_cursor"


def field_error(loc: Sequence[str | int], message: str, kind: str) -> dict[str, Any]:
    return {"loc": [str(part) for part in loc], "message": message, "type": kind}


def raise_if_any(fields: list[dict[str, Any]]) -> None:
    if fields:
        first = fields[0]["message"]
        more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
        raise InvalidStockInput(f"{first}{more}", fields)


def normalise_code(code: str) -> str:
    return code.strip().upper()


def find_warehouse(session: Session, code: str, *, lock: bool = False) -> Warehouse | None:
    query = select(Warehouse).where(func.upper(col(Warehouse.code)) == normalise_code(code))
    if lock:
        query = query.with_for_update()
    return session.exec(query).first()


def get_warehouse(session: Session, code: str) -> Warehouse:
    warehouse = find_warehouse(session, code)
    if warehouse is None:
        raise NotFound(f"No warehouse {code}.")
    return warehouse


def find_bin(session: Session, warehouse_id: int, code: str) -> Location | None:
    return session.exec(select(Location).where(
        Location.warehouse_id == warehouse_id,
        func.upper(col(Location.code)) == normalise_code(code))).first()


def variants_by_sku(session: Session, skus: Iterable[str]) -> dict[str, Variant]:
    wanted = sorted({s for s in skus if s})
    if not wanted:
        return {}
    return {v.sku: v for v in session.exec(select(Variant).where(col(Variant.sku).in_(wanted)))}


def lock_stock_items(session: Session, variant_ids: Iterable[int]) -> dict[int, StockItem]:
    """Lock these variants' stock rows in primary-key order (the order every stock writer
    uses), creating missing ones; returns them by variant id."""
    ids = sorted(set(variant_ids))
    if not ids:
        return {}
    items = {item.variant_id: item for item in session.exec(
        select(StockItem).where(col(StockItem.variant_id).in_(ids))
        .order_by(col(StockItem.variant_id)).with_for_update())}
    for variant_id in ids:
        if variant_id not in items:
            items[variant_id] = StockItem(variant_id=variant_id)
            session.add(items[variant_id])
    session.flush()
    return items


def encode_cursor(value: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": value}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value = raw["after"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
            raise ValueError("not a position in this list")
        return value
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCursor("This cursor is not valid for this list; start again without it.",
                            details={"reason": str(exc)}) from None


# -- Warehouses and bins -----------------------------------------------------------------------


@dataclass(frozen=True)
class WarehouseView:
    code: str
    name: str
    bins: int


def list_warehouses(session: Session) -> list[WarehouseView]:
    counts = dict(session.exec(
        select(Location.warehouse_id, func.count()).where(Location.kind == LocationKind.BIN)
        .group_by(col(Location.warehouse_id))).all())
    return [WarehouseView(w.code, w.name, int(counts.get(w.id or 0, 0)))
            for w in session.exec(select(Warehouse).order_by(col(Warehouse.code)))]


def create_warehouse(*, uow: UnitOfWork, actor: audit.Actor, code: str,
                     name: str) -> Warehouse:
    """A new warehouse. Codes are kept upper-case and unique regardless of case (Conflict);
    audited."""
    session = uow.session
    code = normalise_code(code)
    if find_warehouse(session, code) is not None:
        raise Conflict(f"A warehouse {code} exists already.", details={"code": code})
    warehouse = Warehouse(code=code, name=name.strip())
    session.add(warehouse)
    session.flush()
    audit.record(session, actor, "stock.warehouse_create", target_type="warehouse",
                 target_id=code, after={"warehouse": code, "name": warehouse.name,
                                        "id": warehouse.id})  # "code" keys are redacted
    return warehouse


def list_bins(session: Session, warehouse_code: str) -> tuple[Warehouse, list[Location]]:
    """A warehouse's locations in walking order (NotFound for an unknown warehouse)."""
    warehouse = get_warehouse(session, warehouse_code)
    bins = list(session.exec(select(Location).where(Location.warehouse_id == warehouse.id)
                             .order_by(col(Location.pick_sequence), col(Location.code))))
    return warehouse, bins


@dataclass(frozen=True)
class BinFields:
    code: str
    zone: str = ""
    aisle: str = ""
    shelf: str = ""
    pick_sequence: int = 0


def add_bin(session: Session, actor: audit.Actor, warehouse: Warehouse,
            fields: BinFields) -> Location:
    """Insert one bin (checked by the caller) and its audit entry."""
    assert warehouse.id is not None
    location = Location(warehouse_id=warehouse.id, code=normalise_code(fields.code),
                        zone=fields.zone, aisle=fields.aisle, shelf=fields.shelf,
                        pick_sequence=fields.pick_sequence, kind=LocationKind.BIN)
    session.add(location)
    session.flush()
    audit.record(session, actor, "stock.bin_create", target_type="bin",
                 target_id=f"{warehouse.code}/{location.code}",
                 after={"warehouse": warehouse.code, "bin": location.code, "zone": location.zone,
                        "aisle": location.aisle, "shelf": location.shelf,
                        "pick_sequence": location.pick_sequence, "id": location.id})
    return location


def check_bin_code(code: str, loc: Sequence[str | int]) -> list[dict[str, Any]]:
    if normalise_code(code) in RESERVED_BIN_CODES:
        return [field_error(loc, f"{normalise_code(code)} is the packing location's code",
                            "reserved_code")]
    return []


def create_bin(*, uow: UnitOfWork, actor: audit.Actor, warehouse_code: str,
               fields: BinFields) -> Location:
    """A new bin in a warehouse (NotFound for an unknown warehouse; Conflict when the code is
    taken, compared without regard to case; the packing location's code is refused). The
    warehouse row is locked, so two creations of one code queue; audited."""
    session = uow.session
    warehouse = find_warehouse(session, warehouse_code, lock=True)
    if warehouse is None:
        raise NotFound(f"No warehouse {warehouse_code}.")
    raise_if_any(check_bin_code(fields.code, ["code"]))
    assert warehouse.id is not None
    if find_bin(session, warehouse.id, fields.code) is not None:
        raise Conflict(f"Warehouse {warehouse.code} has a bin {normalise_code(fields.code)} "
                       "already.", details={"code": normalise_code(fields.code)})
    return add_bin(session, actor, warehouse, fields)


# -- Stock levels ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StockFilter:
    sku: str | None = None
    product_id: int | None = None
    warehouse: str | None = None
    bin: str | None = None
    below_reorder: bool | None = None
    variant_id: int | None = None


@dataclass(frozen=True)
class BinLevel:
    warehouse: str
    bin: str
    kind: str
    zone: str
    aisle: str
    shelf: str
    pick_sequence: int
    on_hand: int
    allocated: int

    @property
    def free(self) -> int:
        return self.on_hand - self.allocated


@dataclass(frozen=True)
class StockLevel:
    variant_id: int
    sku: str
    product_id: int
    product_name: str
    variant_name: str
    on_hand: int
    allocated: int
    reserved: int
    reorder_point: int
    reorder_quantity: int
    unit_cost_cents: int
    bins: list[BinLevel] = field(default_factory=list)

    @property
    def available(self) -> int:
        return self.on_hand - self.allocated - self.reserved


def _reorder_due() -> Any:
    """A SKU is due for reordering when it has reorder settings and what can be sold is at or
    below its reorder point."""
    available = (col(StockItem.on_hand) - col(StockItem.allocated) - col(StockItem.reserved))
    return (available <= col(StockItem.reorder_point)) & (
        (col(StockItem.reorder_point) > 0) | (col(StockItem.reorder_quantity) > 0))


def _bin_scope(f: StockFilter) -> Any:
    query = (select(BinStock.variant_id)
             .join(Location, col(Location.id) == BinStock.location_id)
             .join(Warehouse, col(Warehouse.id) == Location.warehouse_id))
    if f.warehouse:
        query = query.where(func.upper(col(Warehouse.code)) == normalise_code(f.warehouse))
    if f.bin:
        query = query.where(func.upper(col(Location.code)) == normalise_code(f.bin))
    return query


def stock_levels(session: Session, f: StockFilter, *, limit: int, offset: int = 0,
                 cursor: str | None = None) -> tuple[list[StockLevel], str | None]:
    """One row per SKU (in variant-id order) with its counters and bins; `cursor` continues
    after the last row of the previous page, `offset` skips rows from there."""
    query = (select(Variant, StockItem, Product)
             .join(StockItem, col(StockItem.variant_id) == Variant.id)
             .join(Product, col(Product.id) == Variant.product_id))
    if f.sku:
        query = query.where(col(Variant.sku).ilike(like_pattern(f.sku), escape=LIKE_ESCAPE))
    if f.product_id is not None:
        query = query.where(Variant.product_id == f.product_id)
    if f.variant_id is not None:
        query = query.where(Variant.id == f.variant_id)
    if f.warehouse or f.bin:
        query = query.where(col(Variant.id).in_(_bin_scope(f)))
    if f.below_reorder is True:
        query = query.where(_reorder_due())
    elif f.below_reorder is False:
        query = query.where(~_reorder_due())
    if cursor:
        query = query.where(col(Variant.id) > decode_cursor(cursor))
    rows = list(session.exec(query.order_by(col(Variant.id)).offset(offset).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    levels = [StockLevel(
        variant_id=v.id, sku=v.sku, product_id=p.id, product_name=p.name, variant_name=v.name,
        on_hand=s.on_hand, allocated=s.allocated, reserved=s.reserved,
        reorder_point=s.reorder_point, reorder_quantity=s.reorder_quantity,
        unit_cost_cents=s.unit_cost_cents) for v, s, p in rows
        if v.id is not None and p.id is not None]
    by_variant = {level.variant_id: level for level in levels}
    if by_variant:
        bins_query = (select(BinStock, Location, Warehouse)
                      .join(Location, col(Location.id) == BinStock.location_id)
                      .join(Warehouse, col(Warehouse.id) == Location.warehouse_id)
                      .where(col(BinStock.variant_id).in_(list(by_variant))))
        if f.warehouse:
            bins_query = bins_query.where(
                func.upper(col(Warehouse.code)) == normalise_code(f.warehouse))
        if f.bin:
            bins_query = bins_query.where(func.upper(col(Location.code)) == normalise_code(f.bin))
        for stock, location, warehouse in session.exec(bins_query.order_by(
                col(Warehouse.code), col(Location.pick_sequence), col(Location.code))):
            by_variant[stock.variant_id].bins.append(BinLevel(
                warehouse=warehouse.code, bin=location.code, kind=location.kind,
                zone=location.zone, aisle=location.aisle, shelf=location.shelf,
                pick_sequence=location.pick_sequence, on_hand=stock.on_hand,
                allocated=stock.allocated))
    return levels, encode_cursor(levels[-1].variant_id) if more and levels else None


@dataclass(frozen=True)
class ReorderSuggestion:
    level: StockLevel
    on_order: int  # expected on open purchase orders and not arrived yet

    @property
    def suggested_quantity(self) -> int:
        """Nothing when what is coming lifts the SKU above its reorder point; otherwise its
        reorder quantity, or more if that would still leave it at or below the point."""
        position = self.level.available + self.on_order
        if position > self.level.reorder_point:
            return 0
        return max(self.level.reorder_quantity, self.level.reorder_point - position + 1)


def on_order(session: Session, variant_ids: Iterable[int]) -> dict[int, int]:
    """Units still expected on open or partly received purchase orders, per variant."""
    ids = list(set(variant_ids))
    found: dict[int, int] = defaultdict(int)
    if not ids:
        return found
    for line in session.exec(
            select(PurchaseOrderLine)
            .join(PurchaseOrder, col(PurchaseOrder.id) == PurchaseOrderLine.purchase_order_id)
            .where(col(PurchaseOrderLine.variant_id).in_(ids),
                   col(PurchaseOrder.status).in_(OPEN_PO_STATUSES))):
        found[line.variant_id] += max(
            0, line.quantity_expected - line.quantity_received - line.quantity_damaged)
    return found


def reorder_suggestions(session: Session, *, limit: int, offset: int = 0,
                        cursor: str | None = None,
                        ) -> tuple[list[ReorderSuggestion], str | None]:
    """SKUs with reorder settings whose available quantity is at or below their reorder
    point, with what is already on order and a suggested quantity."""
    levels, next_cursor = stock_levels(session, StockFilter(below_reorder=True), limit=limit,
                                       offset=offset, cursor=cursor)
    coming = on_order(session, [level.variant_id for level in levels])
    return ([ReorderSuggestion(level, coming.get(level.variant_id, 0)) for level in levels],
            next_cursor)


def set_reorder_levels(*, uow: UnitOfWork, actor: audit.Actor, variant_id: int,
                       reorder_point: int | None, reorder_quantity: int | None) -> StockItem:
    """Change a SKU's reorder point and/or quantity (None leaves one as it is). Locks the
    stock row; audited with both values before and after."""
    session = uow.session
    item = session.get(StockItem, variant_id, with_for_update=True)
    if item is None:
        raise NotFound("No stock row for this variant.")
    before = {"reorder_point": item.reorder_point, "reorder_quantity": item.reorder_quantity}
    if reorder_point is not None:
        item.reorder_point = reorder_point
    if reorder_quantity is not None:
        item.reorder_quantity = reorder_quantity
    session.flush()
    audit.record(session, actor, "stock.reorder_update", target_type="variant",
                 target_id=str(variant_id), before=before,
                 after={"reorder_point": item.reorder_point,
                        "reorder_quantity": item.reorder_quantity})
    return item


# -- Purchase orders ---------------------------------------------------------------------------


def weighted_average_cost(on_hand_before: int, old_cost: int, received: int,
                          line_cost: int) -> int:
    """(on_hand_before x old_cost + received x line_cost) / (on_hand_before + received), in
    integer cents, halves rounded up. Pure."""
    if received <= 0:
        raise ValueError("received units must be positive")
    before = max(on_hand_before, 0)
    numerator = before * old_cost + received * line_cost
    denominator = before + received
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True)
class ExpectedLine:
    sku: str
    quantity: int
    unit_cost_cents: int


@dataclass(frozen=True)
class ArrivedLine:
    sku: str
    bin: str
    good: int
    damaged: int = 0


@dataclass(frozen=True)
class PoLineView:
    line_id: int
    variant_id: int
    sku: str
    name: str
    expected: int
    received: int
    damaged: int
    unit_cost_cents: int

    @property
    def arrived(self) -> int:
        return self.received + self.damaged

    @property
    def short(self) -> int:
        return max(0, self.expected - self.arrived)

    @property
    def over(self) -> int:
        return max(0, self.arrived - self.expected)


@dataclass(frozen=True)
class ReceiptLineView:
    sku: str
    bin: str
    good: int
    damaged: int


@dataclass(frozen=True)
class ReceiptView:
    id: int
    received_by: str
    received_at: datetime
    note: str
    lines: list[ReceiptLineView]


@dataclass(frozen=True)
class PurchaseOrderView:
    order: PurchaseOrder
    warehouse: str
    lines: list[PoLineView]
    receipts: list[ReceiptView]

    @property
    def discrepancies(self) -> list[tuple[str, str, int]]:
        """(sku, "short" | "over" | "damaged", units) for every line that differs."""
        found: list[tuple[str, str, int]] = []
        for line in self.lines:
            for kind, units in (("short", line.short), ("over", line.over),
                                ("damaged", line.damaged)):
                if units:
                    found.append((line.sku, kind, units))
        return found


def _po_number(po_id: int) -> str:
    return f"PO-{po_id:06d}"


def create_purchase_order(*, uow: UnitOfWork, actor: audit.Actor, supplier: str,
                          warehouse_code: str, lines: Sequence[ExpectedLine],
                          expected_at: datetime | None = None, note: str = "",
                          ) -> PurchaseOrder:
    """A purchase order (status open, number PO-000123 from its id) with one line per SKU.
    Unknown warehouse or SKUs and SKUs listed twice are refused together, one entry per field;
    audited."""
    session = uow.session
    errors: list[dict[str, Any]] = []
    warehouse = find_warehouse(session, warehouse_code)
    if warehouse is None:
        errors.append(field_error(["warehouse"], f"No warehouse {warehouse_code}.",
                                  "unknown_warehouse"))
    variants = variants_by_sku(session, [line.sku for line in lines])
    seen: set[str] = set()
    for i, line in enumerate(lines):
        if line.sku not in variants:
            errors.append(field_error(["lines", i, "sku"], f"No SKU {line.sku}.", "unknown_sku"))
        elif line.sku in seen:
            errors.append(field_error(["lines", i, "sku"], f"{line.sku} is listed twice.",
                                      "duplicate_sku"))
        seen.add(line.sku)
    raise_if_any(errors)
    assert warehouse is not None and warehouse.id is not None
    po = PurchaseOrder(number=f"PO-{uuid.uuid4().hex[:16]}", supplier=supplier.strip(),
                       warehouse_id=warehouse.id, expected_at=expected_at, note=note,
                       created_by=actor.email)
    session.add(po)
    session.flush()
    assert po.id is not None
    po.number = _po_number(po.id)
    for line in lines:
        variant_id = variants[line.sku].id
        assert variant_id is not None
        session.add(PurchaseOrderLine(purchase_order_id=po.id, variant_id=variant_id,
                                      quantity_expected=line.quantity,
                                      unit_cost_cents=line.unit_cost_cents))
    session.flush()
    audit.record(session, actor, "stock.po_create", target_type="purchase_order",
                 target_id=po.number,
                 after={**po.model_dump(), "warehouse": warehouse.code,
                        "lines": [line.__dict__ for line in lines]})
    return po


def _get_po(session: Session, number: str, *, lock: bool = False) -> PurchaseOrder:
    query = select(PurchaseOrder).where(PurchaseOrder.number == number.strip().upper())
    if lock:
        query = query.with_for_update()
    po = session.exec(query).first()
    if po is None:
        raise NotFound(f"No purchase order {number}.")
    return po


def _views(session: Session, orders: list[PurchaseOrder]) -> list[PurchaseOrderView]:
    ids = [po.id for po in orders if po.id is not None]
    if not ids:
        return []
    warehouses = {w.id: w.code for w in session.exec(select(Warehouse).where(
        col(Warehouse.id).in_({po.warehouse_id for po in orders})))}
    lines: dict[int, list[PoLineView]] = defaultdict(list)
    skus: dict[int, str] = {}
    for line, variant, product in session.exec(
            select(PurchaseOrderLine, Variant, Product)
            .join(Variant, col(Variant.id) == PurchaseOrderLine.variant_id)
            .join(Product, col(Product.id) == Variant.product_id)
            .where(col(PurchaseOrderLine.purchase_order_id).in_(ids))
            .order_by(col(PurchaseOrderLine.id))):
        assert line.id is not None
        skus[line.id] = variant.sku
        lines[line.purchase_order_id].append(PoLineView(
            line_id=line.id, variant_id=line.variant_id, sku=variant.sku,
            name=f"{product.name} ({variant.name})", expected=line.quantity_expected,
            received=line.quantity_received, damaged=line.quantity_damaged,
            unit_cost_cents=line.unit_cost_cents))
    receipt_lines: dict[int, list[ReceiptLineView]] = defaultdict(list)
    receipts = list(session.exec(select(Receipt).where(col(Receipt.purchase_order_id).in_(ids))
                                 .order_by(col(Receipt.id))))
    if receipts:
        for rline, location in session.exec(
                select(ReceiptLine, Location)
                .join(Location, col(Location.id) == ReceiptLine.location_id)
                .where(col(ReceiptLine.receipt_id).in_([r.id for r in receipts]))
                .order_by(col(ReceiptLine.id))):
            receipt_lines[rline.receipt_id].append(ReceiptLineView(
                sku=skus.get(rline.purchase_order_line_id, ""), bin=location.code,
                good=rline.quantity_good, damaged=rline.quantity_damaged))
    by_po: dict[int, list[ReceiptView]] = defaultdict(list)
    for receipt in receipts:
        assert receipt.id is not None
        by_po[receipt.purchase_order_id].append(ReceiptView(
            receipt.id, receipt.received_by, receipt.received_at, receipt.note,
            receipt_lines[receipt.id]))
    return [PurchaseOrderView(po, warehouses.get(po.warehouse_id, ""), lines[po.id],
                              by_po[po.id]) for po in orders if po.id is not None]


def purchase_order_view(session: Session, number: str) -> PurchaseOrderView:
    return _views(session, [_get_po(session, number)])[0]


def list_purchase_orders(session: Session, *, statuses: list[str] | None, supplier: str | None,
                         limit: int, offset: int) -> tuple[list[PurchaseOrderView], int]:
    """Purchase orders, newest first, with their lines and receipts."""
    query = select(PurchaseOrder)
    if statuses:
        query = query.where(col(PurchaseOrder.status).in_(statuses))
    if supplier:
        query = query.where(col(PurchaseOrder.supplier).ilike(like_pattern(supplier),
                                                              escape=LIKE_ESCAPE))
    total = session.exec(select(func.count()).select_from(query.subquery())).one()
    orders = list(session.exec(query.order_by(col(PurchaseOrder.id).desc())
                               .offset(offset).limit(limit)))
    return _views(session, orders), int(total)


def receive_purchase_order(*, uow: UnitOfWork, actor: audit.Actor, number: str,
                           lines: Sequence[ArrivedLine], note: str = "") -> Receipt:
    """Record one delivery against a purchase order: per line, the bin and the good and
    damaged units. Good units go into their bins through `receive_stock`; each variant's
    unit cost becomes the weighted average of the stock on hand and the units received at the
    line's cost. The PO row is locked first (a cancelled PO is refused), then the stock rows in
    variant-id order. Lines for SKUs not on the PO, and bins not in its warehouse (or the
    packing location), are refused before anything changes. Audited."""
    session = uow.session
    po = _get_po(session, number, lock=True)
    if po.status == PurchaseOrderStatus.CANCELLED:
        raise Conflict(f"{po.number} is cancelled; nothing can be received on it.")
    po_lines = {variant.sku: line for line, variant in session.exec(
        select(PurchaseOrderLine, Variant)
        .join(Variant, col(Variant.id) == PurchaseOrderLine.variant_id)
        .where(PurchaseOrderLine.purchase_order_id == po.id)
        .order_by(col(PurchaseOrderLine.id)).with_for_update(of=PurchaseOrderLine))}
    errors: list[dict[str, Any]] = []
    bins: dict[str, Location] = {}
    for i, arrived in enumerate(lines):
        if arrived.sku not in po_lines:
            errors.append(field_error(["lines", i, "sku"],
                                      f"{arrived.sku} is not on {po.number}.", "unknown_sku"))
        location = find_bin(session, po.warehouse_id, arrived.bin)
        if location is None or location.kind != LocationKind.BIN:
            errors.append(field_error(["lines", i, "bin"], f"No bin {arrived.bin} in this "
                                      "purchase order's warehouse.", "unknown_bin"))
        else:
            bins[arrived.bin] = location
    raise_if_any(errors)
    arriving: dict[str, int] = defaultdict(int)
    for arrived in lines:
        arriving[arrived.sku] += arrived.good + arrived.damaged
    raise_if_any([field_error(["lines", i, "good"], "More units than a line can record.",
                              "too_large") for i, arrived in enumerate(lines)
                  if po_lines[arrived.sku].quantity_received
                  + po_lines[arrived.sku].quantity_damaged + arriving[arrived.sku] > MAX_INT])

    good: dict[int, int] = defaultdict(int)
    for arrived in lines:
        good[po_lines[arrived.sku].variant_id] += arrived.good
    items = lock_stock_items(session, [v for v, units in good.items() if units])
    overflowing = {v for v, item in items.items() if item.on_hand + good[v] > MAX_INT}
    raise_if_any([field_error(["lines", i, "good"], "More units than stock can hold.",
                              "too_large") for i, arrived in enumerate(lines)
                  if po_lines[arrived.sku].variant_id in overflowing])
    cost_of = {line.variant_id: line.unit_cost_cents for line in po_lines.values()}
    costs_before = {v: item.unit_cost_cents for v, item in items.items()}
    costs_after = {v: weighted_average_cost(item.on_hand, item.unit_cost_cents, good[v],
                                            cost_of[v]) for v, item in items.items()}
    before = {"status": po.status, "lines": {sku: {"received": line.quantity_received,
                                                   "damaged": line.quantity_damaged}
                                             for sku, line in po_lines.items()}}

    assert po.id is not None
    receipt = Receipt(purchase_order_id=po.id, received_by=actor.email, note=note)
    session.add(receipt)
    session.flush()
    for arrived in lines:
        po_line, location = po_lines[arrived.sku], bins[arrived.bin]
        assert po_line.id is not None and location.id is not None and receipt.id is not None
        session.add(ReceiptLine(receipt_id=receipt.id, purchase_order_line_id=po_line.id,
                                location_id=location.id, quantity_good=arrived.good,
                                quantity_damaged=arrived.damaged))
        po_line.quantity_received += arrived.good
        po_line.quantity_damaged += arrived.damaged
        if arrived.good:
            receive_stock(uow=uow, variant_id=po_line.variant_id, location_id=location.id,
                          quantity=arrived.good, actor=actor.email,
                          reason=f"receipt {receipt.id} on {po.number}",
                          document_type="purchase_order", document_id=po.number)
    for variant_id, cost in costs_after.items():
        items[variant_id].unit_cost_cents = cost
    complete = all(line.quantity_received + line.quantity_damaged >= line.quantity_expected
                   for line in po_lines.values())
    if complete:
        po.status = PurchaseOrderStatus.RECEIVED
    elif po.status == PurchaseOrderStatus.OPEN:
        po.status = PurchaseOrderStatus.PARTIALLY_RECEIVED
    session.flush()
    skus = {line.variant_id: sku for sku, line in po_lines.items()}
    audit.record(session, actor, "stock.po_receive", target_type="purchase_order",
                 target_id=po.number,
                 before={**before, "unit_cost_cents": {skus[v]: c
                                                       for v, c in costs_before.items()}},
                 after={"status": po.status, "receipt_id": receipt.id, "note": note,
                        "arrived": [a.__dict__ for a in lines],
                        "lines": {sku: {"received": line.quantity_received,
                                        "damaged": line.quantity_damaged}
                                  for sku, line in po_lines.items()},
                        "unit_cost_cents": {skus[v]: c for v, c in costs_after.items()}})
    return receipt


def cancel_purchase_order(*, uow: UnitOfWork, actor: audit.Actor, number: str,
                          reason: str) -> PurchaseOrder:
    """Cancel a purchase order nothing was received on yet (Conflict otherwise). Locks the PO
    row; audited with the reason."""
    session = uow.session
    po = _get_po(session, number, lock=True)
    if po.status != PurchaseOrderStatus.OPEN:
        raise Conflict(f"{po.number} is {po.status}: only an open purchase order with nothing "
                       "received can be cancelled.", details={"status": po.status})
    po.status = PurchaseOrderStatus.CANCELLED
    session.flush()
    audit.record(session, actor, "stock.po_cancel", target_type="purchase_order",
                 target_id=po.number, before={"status": PurchaseOrderStatus.OPEN},
                 after={"status": po.status, "reason": reason})
    return po
