"""The stock desk: stock levels and reorder settings, warehouses and bins, purchase orders and
receipts, adjustments with two-person approval, and blind cycle counts.

Endpoints only parse, call one service of `fulfilment.receiving`, `fulfilment.adjustments` or
`fulfilment.counting`, and render; those services lock, check, write the ledger (through
`fulfilment.inventory`) and the audit trail.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from admin.api import MAX_CENTS, Api, Context, DbId, Schema, UtcTime
from conveyor import audit
from conveyor.db import UnitOfWork
from fulfilment import adjustments as adj
from fulfilment import counting
from fulfilment import receiving as rcv
from models.staff import Permission
from models.warehouse import (
    AdjustmentReason,
    AdjustmentStatus,
    CycleCountStatus,
    PurchaseOrderStatus,
)

api = Api()
TAGS = ["stock"]
SKU = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
WAREHOUSE_CODE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,19}$"
BIN_CODE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
BIN_PART = r"^([A-Za-z0-9][A-Za-z0-9 ._/-]{0,19})?$"  # zone, aisle, shelf: no formula starts
PO_NUMBER = r"^[A-Za-z0-9-]{1,20}$"
MAX_UNITS = rcv.MAX_UNITS
WarehouseCode = Annotated[str, Field(pattern=WAREHOUSE_CODE)]
PoNumber = Annotated[str, Field(pattern=PO_NUMBER)]
Sku = Annotated[str, Field(pattern=SKU)]
BinCode = Annotated[str, Field(pattern=BIN_CODE)]
Units = Annotated[int, Field(ge=0, le=MAX_UNITS)]


def _no_nulls(model: BaseModel, names: tuple[str, ...]) -> None:
    nulls = [n for n in names if n in model.model_fields_set and getattr(model, n) is None]
    if nulls:
        raise ValueError(f"{', '.join(sorted(nulls))} cannot be null")


# -- Stock levels -------------------------------------------------------------------------------


class StockQuery(Schema):
    sku: str | None = Field(default=None, max_length=64, description="Part of a SKU.")
    product_id: DbId | None = None
    warehouse: WarehouseCode | None = Field(default=None, description="Warehouse code.")
    bin: BinCode | None = Field(default=None, description="Bin code.")
    below_reorder: bool | None = Field(default=None, description=(
        "true: only SKUs with reorder settings whose available units are at or below their "
        "reorder point; false: only the others."))
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    cursor: str | None = Field(default=None, max_length=200)


class BinLevelOut(BaseModel):
    warehouse: str
    bin: str
    kind: str
    zone: str
    aisle: str
    shelf: str
    pick_sequence: int
    on_hand: int
    allocated: int
    free: int


class StockRow(BaseModel):
    variant_id: int
    sku: str
    product_id: int
    product_name: str
    variant_name: str
    on_hand: int
    allocated: int
    reserved: int = Field(description="Held by live checkout reservations.")
    available: int = Field(description="on_hand - allocated - reserved")
    reorder_point: int
    reorder_quantity: int
    unit_cost_cents: int = Field(description="Weighted average cost.")
    bins: list[BinLevelOut]


class StockPage(BaseModel):
    items: list[StockRow]
    next_cursor: str | None


class ReorderQuery(Schema):
    limit: int = Field(default=100, ge=1, le=500)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    cursor: str | None = Field(default=None, max_length=200)


class ReorderRow(BaseModel):
    variant_id: int
    sku: str
    product_name: str
    variant_name: str
    available: int
    reorder_point: int
    reorder_quantity: int
    on_order: int = Field(description="Still expected on open purchase orders.")
    suggested_quantity: int
    unit_cost_cents: int


class ReorderPage(BaseModel):
    items: list[ReorderRow]
    next_cursor: str | None


class ReorderPatch(Schema):
    reorder_point: int | None = Field(default=None, ge=0, le=MAX_UNITS)
    reorder_quantity: int | None = Field(default=None, ge=0, le=MAX_UNITS)

    @model_validator(mode="after")
    def _something_to_change(self) -> ReorderPatch:
        _no_nulls(self, ("reorder_point", "reorder_quantity"))
        if not self.model_fields_set:
            raise ValueError("give reorder_point and/or reorder_quantity")
        return self


def _stock_row(level: rcv.StockLevel) -> StockRow:
    return StockRow(
        variant_id=level.variant_id, sku=level.sku, product_id=level.product_id,
        product_name=level.product_name, variant_name=level.variant_name,
        on_hand=level.on_hand, allocated=level.allocated, reserved=level.reserved,
        available=level.available, reorder_point=level.reorder_point,
        reorder_quantity=level.reorder_quantity, unit_cost_cents=level.unit_cost_cents,
        bins=[BinLevelOut(**b.__dict__, free=b.free) for b in level.bins])


@api.route("GET", "/api/stock", access=Permission.STOCK_READ, query=StockQuery,
           response=StockPage, tags=TAGS,
           summary="Stock per SKU: on hand, allocated, reserved, available, reorder settings, "
           "unit cost and bins")
def list_stock(ctx: Context, query: StockQuery) -> StockPage:
    f = rcv.StockFilter(sku=query.sku, product_id=query.product_id, warehouse=query.warehouse,
                        bin=query.bin, below_reorder=query.below_reorder)
    with ctx.db.read_session() as session:
        levels, cursor = rcv.stock_levels(session, f, limit=query.limit, offset=query.offset,
                                          cursor=query.cursor)
    return StockPage(items=[_stock_row(level) for level in levels], next_cursor=cursor)


@api.route("GET", "/api/stock/reorder", access=Permission.STOCK_READ, query=ReorderQuery,
           response=ReorderPage, tags=TAGS,
           summary="SKUs at or below their reorder point, with what is on order and a "
           "suggested quantity")
def list_reorder(ctx: Context, query: ReorderQuery) -> ReorderPage:
    with ctx.db.read_session() as session:
        found, cursor = rcv.reorder_suggestions(session, limit=query.limit, offset=query.offset,
                                                cursor=query.cursor)
    return ReorderPage(items=[ReorderRow(
        variant_id=s.level.variant_id, sku=s.level.sku, product_name=s.level.product_name,
        variant_name=s.level.variant_name, available=s.level.available,
        reorder_point=s.level.reorder_point, reorder_quantity=s.level.reorder_quantity,
        on_order=s.on_order, suggested_quantity=s.suggested_quantity,
        unit_cost_cents=s.level.unit_cost_cents) for s in found], next_cursor=cursor)


@api.route("PATCH", "/api/stock/{variant_id}", access=Permission.STOCK_WRITE,
           body=ReorderPatch, response=StockRow, tags=TAGS,
           summary="Set a SKU's reorder point and/or reorder quantity")
def update_reorder(ctx: Context, variant_id: DbId, body: ReorderPatch) -> StockRow:
    with ctx.unit_of_work() as uow:
        rcv.set_reorder_levels(uow=uow, actor=ctx.actor, variant_id=variant_id,
                               reorder_point=body.reorder_point,
                               reorder_quantity=body.reorder_quantity)
        levels, _ = rcv.stock_levels(uow.session, rcv.StockFilter(variant_id=variant_id),
                                     limit=1)
        return _stock_row(levels[0])


# -- Warehouses and bins ------------------------------------------------------------------------


class WarehouseIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    code: str = Field(pattern=WAREHOUSE_CODE, description="Kept upper-case.")
    name: str = Field(min_length=1, max_length=120)


class WarehouseOut(BaseModel):
    code: str
    name: str
    bins: int


class WarehouseList(BaseModel):
    items: list[WarehouseOut]


class BinIn(Schema):
    code: str = Field(pattern=BIN_CODE, description="Kept upper-case; PACK is reserved.")
    zone: str = Field(default="", max_length=20, pattern=BIN_PART)
    aisle: str = Field(default="", max_length=20, pattern=BIN_PART)
    shelf: str = Field(default="", max_length=20, pattern=BIN_PART)
    pick_sequence: int = Field(default=0, ge=0, le=1_000_000)


class BinOut(BaseModel):
    code: str
    kind: str
    zone: str
    aisle: str
    shelf: str
    pick_sequence: int


class BinList(BaseModel):
    warehouse: str
    items: list[BinOut]


def _bin_out(location: object) -> BinOut:
    return BinOut.model_validate(location, from_attributes=True)


@api.route("GET", "/api/warehouses", access=Permission.STOCK_READ, response=WarehouseList,
           tags=TAGS, summary="Warehouses and how many bins each has")
def list_warehouses(ctx: Context) -> WarehouseList:
    with ctx.db.read_session() as session:
        found = rcv.list_warehouses(session)
    return WarehouseList(items=[WarehouseOut(**w.__dict__) for w in found])


@api.route("POST", "/api/warehouses", access=Permission.STOCK_WRITE, body=WarehouseIn,
           response=WarehouseOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Create a warehouse")
def create_warehouse(ctx: Context, body: WarehouseIn) -> WarehouseOut:
    with ctx.unit_of_work() as uow:
        warehouse = rcv.create_warehouse(uow=uow, actor=ctx.actor, code=body.code,
                                         name=body.name)
    return WarehouseOut(code=warehouse.code, name=warehouse.name, bins=0)


@api.route("GET", "/api/warehouses/{code}/bins", access=Permission.STOCK_READ,
           response=BinList, tags=TAGS, summary="A warehouse's bins in walking order")
def list_bins(ctx: Context, code: WarehouseCode) -> BinList:
    with ctx.db.read_session() as session:
        warehouse, bins = rcv.list_bins(session, code)
    return BinList(warehouse=warehouse.code, items=[_bin_out(b) for b in bins])


@api.route("POST", "/api/warehouses/{code}/bins", access=Permission.STOCK_WRITE, body=BinIn,
           response=BinOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Create a bin (code, zone, aisle, shelf, pick sequence)")
def create_bin(ctx: Context, code: WarehouseCode, body: BinIn) -> BinOut:
    with ctx.unit_of_work() as uow:
        location = rcv.create_bin(uow=uow, actor=ctx.actor, warehouse_code=code,
                                  fields=rcv.BinFields(**body.model_dump()))
    return _bin_out(location)


# -- Purchase orders ----------------------------------------------------------------------------


class PoLineIn(Schema):
    sku: Sku
    quantity: int = Field(ge=1, le=MAX_UNITS)
    unit_cost_cents: int = Field(ge=0, le=MAX_CENTS)


class PurchaseOrderIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    supplier: str = Field(min_length=1, max_length=200)
    warehouse: WarehouseCode
    expected_at: UtcTime | None = None
    note: str = Field(default="", max_length=1000)
    lines: list[PoLineIn] = Field(min_length=1, max_length=200)


class PoLineOut(BaseModel):
    line_id: int
    sku: str
    name: str
    expected: int
    received: int = Field(description="Good units put into bins.")
    damaged: int = Field(description="Arrived unusable; not put into stock.")
    short: int
    over: int
    unit_cost_cents: int


class DiscrepancyOut(BaseModel):
    sku: str
    kind: str = Field(description="short, over or damaged")
    quantity: int


class ReceiptLineOut(BaseModel):
    sku: str
    bin: str
    good: int
    damaged: int


class ReceiptOut(BaseModel):
    id: int
    received_by: str
    received_at: datetime
    note: str
    lines: list[ReceiptLineOut]


class PurchaseOrderOut(BaseModel):
    number: str
    supplier: str
    warehouse: str
    status: str
    expected_at: datetime | None
    note: str
    created_by: str
    created_at: datetime
    lines: list[PoLineOut]
    discrepancies: list[DiscrepancyOut]
    receipts: list[ReceiptOut]


class PurchaseOrderQuery(Schema):
    status: list[PurchaseOrderStatus] | None = None
    supplier: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=50, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class PurchaseOrderPage(BaseModel):
    items: list[PurchaseOrderOut]
    total: int
    offset: int
    limit: int


class ArrivedLineIn(Schema):
    sku: Sku
    bin: BinCode
    good: Units = Field(description="Units put into the bin.")
    damaged: Units = Field(default=0, validate_default=True,
                           description="Units that arrived unusable.")

    @field_validator("damaged")
    @classmethod
    def _something_arrived(cls, damaged: int, info: ValidationInfo) -> int:
        if damaged == 0 and info.data.get("good") == 0:
            raise ValueError("good + damaged must be at least 1")
        return damaged


class ReceiptIn(Schema):
    note: str = Field(default="", max_length=1000)
    lines: list[ArrivedLineIn] = Field(min_length=1, max_length=200)


class ReasonIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)  # blanks are no reason

    reason: str = Field(min_length=3, max_length=500)


def _po_out(view: rcv.PurchaseOrderView) -> PurchaseOrderOut:
    po = view.order
    return PurchaseOrderOut(
        number=po.number, supplier=po.supplier, warehouse=view.warehouse, status=po.status,
        expected_at=po.expected_at, note=po.note, created_by=po.created_by,
        created_at=po.created_at,
        lines=[PoLineOut(line_id=line.line_id, sku=line.sku, name=line.name,
                         expected=line.expected, received=line.received,
                         damaged=line.damaged, short=line.short, over=line.over,
                         unit_cost_cents=line.unit_cost_cents) for line in view.lines],
        discrepancies=[DiscrepancyOut(sku=sku, kind=kind, quantity=units)
                       for sku, kind, units in view.discrepancies],
        receipts=[ReceiptOut(id=r.id, received_by=r.received_by, received_at=r.received_at,
                             note=r.note, lines=[ReceiptLineOut(**line.__dict__)
                                                 for line in r.lines])
                  for r in view.receipts])


@api.route("GET", "/api/purchase-orders", access=Permission.STOCK_WRITE,
           query=PurchaseOrderQuery, response=PurchaseOrderPage, tags=TAGS,
           summary="Purchase orders, newest first, with lines, receipts and discrepancies")
def list_purchase_orders(ctx: Context, query: PurchaseOrderQuery) -> PurchaseOrderPage:
    with ctx.db.read_session() as session:
        views, total = rcv.list_purchase_orders(
            session, statuses=[s.value for s in query.status] if query.status else None,
            supplier=query.supplier, limit=query.limit, offset=query.offset)
    return PurchaseOrderPage(items=[_po_out(v) for v in views], total=total,
                             offset=query.offset, limit=query.limit)


@api.route("POST", "/api/purchase-orders", access=Permission.STOCK_WRITE,
           body=PurchaseOrderIn, response=PurchaseOrderOut, status_code=201, tags=TAGS,
           summary="Create a purchase order: supplier, warehouse, expected lines and costs")
def create_purchase_order(ctx: Context, body: PurchaseOrderIn) -> PurchaseOrderOut:
    with ctx.unit_of_work() as uow:
        po = rcv.create_purchase_order(
            uow=uow, actor=ctx.actor, supplier=body.supplier, warehouse_code=body.warehouse,
            expected_at=body.expected_at, note=body.note,
            lines=[rcv.ExpectedLine(**line.model_dump()) for line in body.lines])
        return _po_out(rcv.purchase_order_view(uow.session, po.number))


@api.route("GET", "/api/purchase-orders/{number}", access=Permission.STOCK_WRITE,
           response=PurchaseOrderOut, tags=TAGS,
           summary="One purchase order: expected, received, damaged and discrepancies per line")
def get_purchase_order(ctx: Context, number: PoNumber) -> PurchaseOrderOut:
    with ctx.db.read_session() as session:
        return _po_out(rcv.purchase_order_view(session, number))


@api.route("POST", "/api/purchase-orders/{number}/receipts", access=Permission.STOCK_WRITE,
           body=ReceiptIn, response=PurchaseOrderOut, status_code=201, tags=TAGS,
           errors=(409,),
           summary="Record a delivery: good units into bins (weighted average cost updated), "
           "damaged units noted")
def receive_purchase_order(ctx: Context, number: PoNumber, body: ReceiptIn) -> PurchaseOrderOut:
    with ctx.unit_of_work() as uow:
        rcv.receive_purchase_order(
            uow=uow, actor=ctx.actor, number=number, note=body.note,
            lines=[rcv.ArrivedLine(**line.model_dump()) for line in body.lines])
        return _po_out(rcv.purchase_order_view(uow.session, number))


@api.route("POST", "/api/purchase-orders/{number}/cancel", access=Permission.STOCK_WRITE,
           body=ReasonIn, response=PurchaseOrderOut, tags=TAGS, errors=(409,),
           summary="Cancel a purchase order nothing was received on")
def cancel_purchase_order(ctx: Context, number: PoNumber, body: ReasonIn) -> PurchaseOrderOut:
    with ctx.unit_of_work() as uow:
        rcv.cancel_purchase_order(uow=uow, actor=ctx.actor, number=number, reason=body.reason)
        return _po_out(rcv.purchase_order_view(uow.session, number))


# -- Adjustments --------------------------------------------------------------------------------


class AdjustmentIn(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    sku: Sku
    warehouse: WarehouseCode
    bin: BinCode
    delta: int = Field(ge=-MAX_UNITS, le=MAX_UNITS, description="Units added (+) or taken (-).")
    reason: AdjustmentReason = Field(description="damaged and lost take units, found adds "
                                     "them, correction either")
    note: str = Field(min_length=1, max_length=1000)

    @field_validator("delta")
    @classmethod
    def _changes_something(cls, delta: int) -> int:
        if delta == 0:
            raise ValueError("delta must not be 0")
        return delta


class AdjustmentOut(BaseModel):
    id: int
    sku: str
    warehouse: str
    bin: str
    quantity_delta: int
    reason: str
    note: str
    value_cents: int
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str
    decided_at: datetime | None
    cycle_count_id: int | None


class AdjustmentQuery(Schema):
    status: list[AdjustmentStatus] | None = None
    cycle_count_id: DbId | None = None
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=1_000_000)
    cursor: str | None = Field(default=None, max_length=200)


class AdjustmentPage(BaseModel):
    items: list[AdjustmentOut]
    next_cursor: str | None


def _adjustment_out(view: adj.AdjustmentView) -> AdjustmentOut:
    a = view.adjustment
    assert a.id is not None
    return AdjustmentOut(id=a.id, sku=view.sku, warehouse=view.warehouse, bin=view.bin,
                         quantity_delta=a.quantity_delta, reason=a.reason, note=a.note,
                         value_cents=a.value_cents, status=a.status,
                         requested_by=a.requested_by, requested_at=a.requested_at,
                         decided_by=a.decided_by, decided_at=a.decided_at,
                         cycle_count_id=a.cycle_count_id)


@api.route("POST", "/api/stock/adjustments", access=Permission.STOCK_WRITE,
           body=AdjustmentIn, response=AdjustmentOut, status_code=201, tags=TAGS,
           errors=(409,),
           summary="Adjust a SKU in a bin: applied at once up to ADJUSTMENT_APPROVAL_CENTS, "
           "above that pending a second person's approval")
def request_adjustment(ctx: Context, body: AdjustmentIn) -> AdjustmentOut:
    with ctx.unit_of_work() as uow:
        view = adj.request_adjustment(
            uow=uow, actor=ctx.actor, sku=body.sku, warehouse_code=body.warehouse,
            bin_code=body.bin, delta=body.delta, reason=body.reason, note=body.note,
            approval_limit_cents=ctx.settings.adjustment_approval_cents)
    return _adjustment_out(view)


@api.route("GET", "/api/stock/adjustments", access=Permission.STOCK_WRITE,
           query=AdjustmentQuery, response=AdjustmentPage, tags=TAGS,
           summary="Adjustments, newest first, by status")
def list_adjustments(ctx: Context, query: AdjustmentQuery) -> AdjustmentPage:
    with ctx.db.read_session() as session:
        views, cursor = adj.list_adjustments(
            session, statuses=[s.value for s in query.status] if query.status else None,
            cycle_count_id=query.cycle_count_id, limit=query.limit, offset=query.offset,
            cursor=query.cursor)
    return AdjustmentPage(items=[_adjustment_out(v) for v in views], next_cursor=cursor)


@api.route("GET", "/api/stock/adjustments/{adjustment_id}", access=Permission.STOCK_WRITE,
           response=AdjustmentOut, tags=TAGS, summary="One adjustment")
def get_adjustment(ctx: Context, adjustment_id: DbId) -> AdjustmentOut:
    with ctx.db.read_session() as session:
        return _adjustment_out(adj.get_adjustment(session, adjustment_id))


def _decide(ctx: Context, action: str, adjustment_id: int,
            decide: Callable[[UnitOfWork], object]) -> AdjustmentOut:
    """Run a decision; a requester deciding their own adjustment is refused and audited."""
    try:
        with ctx.unit_of_work() as uow:
            decide(uow)
            return _adjustment_out(adj.get_adjustment(uow.session, adjustment_id))
    except adj.SecondPersonRequired:
        with ctx.unit_of_work() as uow:
            audit.record(uow.session, ctx.actor, action, outcome="denied",
                         target_type="stock_adjustment", target_id=str(adjustment_id),
                         after={"reason": "second_person_required"})
        raise


@api.route("POST", "/api/stock/adjustments/{adjustment_id}/approve",
           access=Permission.STOCK_WRITE, response=AdjustmentOut, tags=TAGS, errors=(409,),
           summary="Approve (and apply) a pending adjustment; not by its requester")
def approve_adjustment(ctx: Context, adjustment_id: DbId) -> AdjustmentOut:
    return _decide(ctx, "stock.adjustment_approve", adjustment_id, lambda uow: (
        adj.approve_adjustment(uow=uow, actor=ctx.actor, adjustment_id=adjustment_id)))


@api.route("POST", "/api/stock/adjustments/{adjustment_id}/reject",
           access=Permission.STOCK_WRITE, body=ReasonIn, response=AdjustmentOut, tags=TAGS,
           errors=(409,), summary="Reject a pending adjustment; not by its requester")
def reject_adjustment(ctx: Context, adjustment_id: DbId, body: ReasonIn) -> AdjustmentOut:
    return _decide(ctx, "stock.adjustment_reject", adjustment_id, lambda uow: (
        adj.reject_adjustment(uow=uow, actor=ctx.actor, adjustment_id=adjustment_id,
                              reason=body.reason)))


# -- Cycle counts -------------------------------------------------------------------------------


class CountIn(Schema):
    warehouse: WarehouseCode
    bins: list[BinCode] = Field(default_factory=list, max_length=500)
    skus: list[Sku] = Field(default_factory=list, max_length=500)


class SheetLineOut(BaseModel):
    line_id: int
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


class CountSheetOut(BaseModel):
    """The blind counting view: where to count and what, never how many the books say."""

    id: int
    warehouse: str
    status: str
    created_by: str
    created_at: datetime
    posted_by: str
    posted_at: datetime | None
    lines_total: int
    lines_counted: int
    lines: list[SheetLineOut]


class CountedIn(Schema):
    line_id: DbId
    counted: Units


class CountsIn(Schema):
    counts: list[CountedIn] = Field(min_length=1, max_length=1000)

    @field_validator("counts")
    @classmethod
    def _each_line_once(cls, counts: list[CountedIn]) -> list[CountedIn]:
        ids = [c.line_id for c in counts]
        if len(set(ids)) != len(ids):
            raise ValueError("each line_id may appear once")
        return counts


class ReviewLineOut(BaseModel):
    line_id: int
    bin: str
    sku: str
    name: str
    book: int = Field(description="The bin's quantity in the books when the line was counted.")
    counted: int
    variance: int
    unit_cost_cents: int
    value_cents: int = Field(description="variance x unit cost (negative: units missing)")
    needs_approval: bool
    adjustment_id: int | None
    adjustment_status: str | None


class CountReviewOut(BaseModel):
    id: int
    warehouse: str
    status: str
    approval_limit_cents: int
    lines: list[ReviewLineOut]
    variance_units: int
    variance_value_cents: int
    absolute_value_cents: int


class CountQuery(Schema):
    status: list[CycleCountStatus] | None = None
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class CountSummaryOut(BaseModel):
    id: int
    warehouse: str
    status: str
    created_by: str
    created_at: datetime
    posted_at: datetime | None
    lines_total: int
    lines_counted: int


class CountList(BaseModel):
    items: list[CountSummaryOut]


def _sheet_out(sheet: counting.CountSheet) -> CountSheetOut:
    c = sheet.count
    assert c.id is not None
    return CountSheetOut(
        id=c.id, warehouse=sheet.warehouse, status=c.status, created_by=c.created_by,
        created_at=c.created_at, posted_by=c.posted_by, posted_at=c.posted_at,
        lines_total=len(sheet.lines), lines_counted=sheet.counted,
        lines=[SheetLineOut(line_id=line.line_id, bin=line.bin, zone=line.zone,
                            aisle=line.aisle, shelf=line.shelf,
                            pick_sequence=line.pick_sequence, sku=line.sku, name=line.name,
                            counted=line.counted, counted_by=line.counted_by,
                            counted_at=line.counted_at) for line in sheet.lines])


def _review_out(review: counting.CountReview) -> CountReviewOut:
    c = review.sheet.count
    assert c.id is not None
    lines = [ReviewLineOut(
        line_id=r.line.line_id, bin=r.line.bin, sku=r.line.sku, name=r.line.name, book=r.book,
        counted=r.counted, variance=r.variance, unit_cost_cents=r.unit_cost_cents,
        value_cents=r.value_cents, needs_approval=review.needs_approval(r),
        adjustment_id=r.adjustment.id if r.adjustment else None,
        adjustment_status=r.adjustment.status if r.adjustment else None)
        for r in review.lines]
    return CountReviewOut(
        id=c.id, warehouse=review.sheet.warehouse, status=c.status,
        approval_limit_cents=review.approval_limit_cents, lines=lines,
        variance_units=sum(line.variance for line in lines),
        variance_value_cents=sum(line.value_cents for line in lines),
        absolute_value_cents=sum(abs(line.value_cents) for line in lines))


@api.route("POST", "/api/stock/counts", access=Permission.STOCK_WRITE, body=CountIn,
           response=CountSheetOut, status_code=201, tags=TAGS, errors=(409,),
           summary="Start a blind cycle count of a warehouse's bins and/or SKUs")
def create_count(ctx: Context, body: CountIn) -> CountSheetOut:
    with ctx.unit_of_work() as uow:
        return _sheet_out(counting.create_cycle_count(
            uow=uow, actor=ctx.actor, warehouse_code=body.warehouse, bins=body.bins,
            skus=body.skus))


@api.route("GET", "/api/stock/counts", access=Permission.STOCK_WRITE, query=CountQuery,
           response=CountList, tags=TAGS, summary="Cycle counts, newest first, with progress")
def list_counts(ctx: Context, query: CountQuery) -> CountList:
    with ctx.db.read_session() as session:
        found = counting.list_cycle_counts(
            session, statuses=[s.value for s in query.status] if query.status else None,
            limit=query.limit, offset=query.offset)
    return CountList(items=[CountSummaryOut(
        id=s.count.id or 0, warehouse=s.warehouse, status=s.count.status,
        created_by=s.count.created_by, created_at=s.count.created_at,
        posted_at=s.count.posted_at, lines_total=s.lines, lines_counted=s.counted)
        for s in found])


@api.route("GET", "/api/stock/counts/{count_id}", access=Permission.STOCK_WRITE,
           response=CountSheetOut, tags=TAGS,
           summary="The counting sheet: bins and SKUs to count, without book quantities")
def get_count(ctx: Context, count_id: DbId) -> CountSheetOut:
    with ctx.db.read_session() as session:
        return _sheet_out(counting.count_sheet(session, count_id))


@api.route("POST", "/api/stock/counts/{count_id}/counts", access=Permission.STOCK_WRITE,
           body=CountsIn, response=CountSheetOut, tags=TAGS, errors=(409,),
           summary="Record counted quantities for lines of an open count")
def record_counts(ctx: Context, count_id: DbId, body: CountsIn) -> CountSheetOut:
    with ctx.unit_of_work() as uow:
        return _sheet_out(counting.record_counts(
            uow=uow, actor=ctx.actor, count_id=count_id,
            counts=[counting.CountedLine(c.line_id, c.counted) for c in body.counts]))


@api.route("GET", "/api/stock/counts/{count_id}/review", access=Permission.STOCK_WRITE,
           response=CountReviewOut, tags=TAGS, errors=(409,),
           summary="Book, counted and variance with value per line, once every line is counted")
def review_count(ctx: Context, count_id: DbId) -> CountReviewOut:
    with ctx.db.read_session() as session:
        return _review_out(counting.review_cycle_count(
            session, count_id, approval_limit_cents=ctx.settings.adjustment_approval_cents))


@api.route("POST", "/api/stock/counts/{count_id}/post", access=Permission.STOCK_WRITE,
           response=CountReviewOut, tags=TAGS, errors=(409,),
           summary="Post a counted count: variances become adjustments (large ones pending "
           "a second person's approval)")
def post_count(ctx: Context, count_id: DbId) -> CountReviewOut:
    with ctx.unit_of_work() as uow:
        return _review_out(counting.post_cycle_count(
            uow=uow, actor=ctx.actor, count_id=count_id,
            approval_limit_cents=ctx.settings.adjustment_approval_cents))


@api.route("POST", "/api/stock/counts/{count_id}/cancel", access=Permission.STOCK_WRITE,
           body=ReasonIn, response=CountSummaryOut, tags=TAGS, errors=(409,),
           summary="Cancel an open count; stock is not touched")
def cancel_count(ctx: Context, count_id: DbId, body: ReasonIn) -> CountSummaryOut:
    with ctx.unit_of_work() as uow:
        count = counting.cancel_cycle_count(uow=uow, actor=ctx.actor, count_id=count_id,
                                            reason=body.reason)
        sheet = counting.count_sheet(uow.session, count_id)
    return CountSummaryOut(id=count_id, warehouse=sheet.warehouse, status=count.status,
                           created_by=count.created_by, created_at=count.created_at,
                           posted_at=count.posted_at, lines_total=len(sheet.lines),
                           lines_counted=sheet.counted)
