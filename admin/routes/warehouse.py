"""The warehouse floor: pick lists (waves, claims, scans, short picks), packing, packing slips
and shipping. Thin endpoints over `fulfilment.picking`, `.packing` and `.shipping`; every
write is audited in the same transaction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, func, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import orders as desk
from admin.api import PUBLIC, Api, Context, DbId, Schema
from conveyor import audit
from conveyor.errors import NotFound
from conveyor.templating import create_environment
from fulfilment import packing, picking, shipping
from fulfilment.documents import render_packing_slip
from models.catalog import Product, Variant
from models.inventory import Allocation, Location, Warehouse
from models.orders import Order
from models.staff import Permission
from models.warehouse import Parcel, ParcelItem, PickList, PickListLine, PickListStatus

api = Api()
PICK_TAGS = ["picking"]
SHIP_TAGS = ["packing and shipping"]
_emails = create_environment()
MAX_UNITS = 100_000


# -- schemas ------------------------------------------------------------------------------------


class WaveRequest(Schema):
    max_orders: int | None = Field(default=None, ge=1, le=5000, description=(
        "At most this many orders (never more than PICK_WAVE_MAX_ORDERS)."))


class PickListQuery(Schema):
    status: list[PickListStatus] | None = Field(default=None, description="Any of these.")
    warehouse: str | None = Field(default=None, min_length=1, max_length=20)
    claimed_by: str | None = Field(default=None, min_length=1, max_length=254)
    sort: Literal["oldest", "newest"] = "oldest"
    limit: int = Field(default=50, ge=1, le=200)


class PickLineOut(BaseModel):
    id: int
    sequence: int
    bin: str
    zone: str
    aisle: str
    sku: str
    barcode: str | None
    product_name: str
    variant_name: str
    quantity: int
    picked: int
    short: int
    remaining: int = Field(description="Units still to take from the bin for this line.")
    done: bool


class PickListSummary(BaseModel):
    id: int
    warehouse: str
    status: str
    created_by: str
    created_at: datetime
    claimed_by: str
    claimed_at: datetime | None
    completed_at: datetime | None
    orders: int
    lines: int
    units: int
    picked: int
    short: int
    remaining: int


class PickListDetail(PickListSummary):
    order_numbers: list[str]
    items: list[PickLineOut]


class PickListPage(BaseModel):
    items: list[PickListSummary]


class WaveResult(BaseModel):
    orders: int
    backorders_found: int
    items: list[PickListSummary]


class ScanRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    line_id: DbId | None = None
    bin: str | None = Field(default=None, min_length=1, max_length=40)
    code: str = Field(min_length=1, max_length=64, description="The SKU or barcode scanned.")
    quantity: int = Field(default=1, ge=1, le=MAX_UNITS)

    @model_validator(mode="after")
    def _where(self) -> ScanRequest:
        if self.line_id is None and self.bin is None:
            raise ValueError("give line_id or bin")
        return self


class ScanResult(BaseModel):
    line: PickLineOut
    picked_now: int
    pick_list_status: str


class ShortRequest(Schema):
    found: int = Field(ge=0, le=MAX_UNITS, description="Units that were in the bin for this "
                       "line (they are picked).")
    left_in_bin: int = Field(default=0, ge=0, le=MAX_UNITS, description=(
        "Units really left in the bin afterwards; its stock is corrected to this."))


class ShortResult(BaseModel):
    line: PickLineOut
    picked: int
    short: int
    given_back: dict[str, int]
    reallocated: dict[str, int]
    backordered: dict[str, int]
    bin_correction: int
    pick_list_status: str


class PackItem(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=MAX_UNITS)


class PackRequest(Schema):
    weight_grams: int = Field(ge=1, le=packing.MAX_PARCEL_GRAMS)
    items: list[PackItem] = Field(min_length=1, max_length=200)


class ParcelItemOut(BaseModel):
    sku: str
    product_name: str
    quantity: int


class ParcelOut(BaseModel):
    id: int
    order_number: str
    order_status: str
    weight_grams: int
    packed_by: str
    packed_at: datetime
    items: list[ParcelItemOut]
    carrier: str
    tracking_number: str
    tracking_url: str
    shipped_by: str
    shipped_at: datetime | None


class SkuProgressOut(BaseModel):
    sku: str
    product_name: str
    variant_name: str
    ordered: int
    to_pick: int
    picked: int
    packed: int
    shipped: int
    backordered: int
    packable: int


class PackingState(BaseModel):
    order_number: str
    order_status: str
    skus: list[SkuProgressOut]
    parcels: list[ParcelOut]


class ShipRequest(Schema):
    model_config = ConfigDict(str_strip_whitespace=True)

    carrier: str = Field(min_length=1, max_length=60)
    tracking_number: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9._/ -]+$")
    tracking_url: str | None = Field(default=None, max_length=500,
                                     pattern=r"^https?://[^\s<>\"'\\]+$")


# -- reads --------------------------------------------------------------------------------------


def _summaries(session: Session, lists: list[PickList]) -> list[PickListDetail]:
    """Summaries of these lists (with empty line lists), in the given order, in four queries."""
    ids = [p.id for p in lists if p.id is not None]
    if not ids:
        return []
    codes = {w.id: w.code for w in session.exec(select(Warehouse))}
    totals = {row[0]: tuple(row[1:]) for row in session.execute(
        sa_select(col(PickListLine.pick_list_id), func.count(col(PickListLine.id)),
               func.sum(PickListLine.quantity), func.sum(PickListLine.picked),
               func.sum(PickListLine.short))
        .where(col(PickListLine.pick_list_id).in_(ids))
        .group_by(col(PickListLine.pick_list_id)))}
    numbers: dict[int, list[str]] = defaultdict(list)
    for pick_list_id, number in session.exec(
            select(Allocation.pick_list_id, Order.number).distinct()
            .join(Order, col(Order.id) == Allocation.order_id)
            .where(col(Allocation.pick_list_id).in_(ids)).order_by(col(Order.number))):
        numbers[pick_list_id or 0].append(number)
    remaining = {row[0]: int(row[1]) for row in session.exec(
        select(Allocation.pick_list_id, func.sum(Allocation.quantity))
        .where(col(Allocation.pick_list_id).in_(ids), Allocation.status == "allocated")
        .group_by(col(Allocation.pick_list_id)))}
    result = []
    for p in lists:
        count, units, picked, short = totals.get(p.id, (0, 0, 0, 0))
        result.append(PickListDetail(
            id=p.id or 0, warehouse=codes.get(p.warehouse_id, "?"), status=p.status,
            created_by=p.created_by, created_at=p.created_at, claimed_by=p.claimed_by,
            claimed_at=p.claimed_at, completed_at=p.completed_at,
            orders=len(numbers[p.id or 0]), lines=int(count or 0), units=int(units or 0),
            picked=int(picked or 0), short=int(short or 0), remaining=remaining.get(p.id, 0),
            order_numbers=numbers[p.id or 0], items=[]))
    return result


def _lines(session: Session, pick_list_id: int) -> list[PickLineOut]:
    wanting = picking.open_units(session, pick_list_id)
    rows = session.exec(
        select(PickListLine, Location, Variant, Product)
        .join(Location, col(Location.id) == PickListLine.location_id)
        .join(Variant, col(Variant.id) == PickListLine.variant_id)
        .join(Product, col(Product.id) == Variant.product_id)
        .where(PickListLine.pick_list_id == pick_list_id)
        .order_by(col(PickListLine.sequence)))
    return [_line_out(line, location, variant, product,
                      wanting.get((line.location_id, line.variant_id), 0))
            for line, location, variant, product in rows]


def _line_out(line: PickListLine, location: Location, variant: Variant, product: Product,
              remaining: int) -> PickLineOut:
    return PickLineOut(
        id=line.id or 0, sequence=line.sequence, bin=location.code, zone=location.zone,
        aisle=location.aisle, sku=variant.sku, barcode=variant.barcode,
        product_name=product.name, variant_name=variant.name, quantity=line.quantity,
        picked=line.picked, short=line.short, remaining=remaining, done=remaining == 0)


def _one_line(session: Session, line: PickListLine) -> PickLineOut:
    location = session.get(Location, line.location_id)
    variant = session.get(Variant, line.variant_id)
    assert location is not None and variant is not None
    product = session.get(Product, variant.product_id)
    assert product is not None
    wanting = picking.open_units(session, line.pick_list_id)
    return _line_out(line, location, variant, product,
                     wanting.get((line.location_id, line.variant_id), 0))


def _detail(session: Session, pick_list: PickList) -> PickListDetail:
    [detail] = _summaries(session, [pick_list])
    detail.items = _lines(session, pick_list.id or 0)
    return detail


def _parcel_out(parcel: Parcel, items: list[ParcelItem], order: Order,
                names: dict[int, packing.SkuProgress]) -> ParcelOut:
    return ParcelOut(
        id=parcel.id or 0, order_number=order.number, order_status=order.status,
        weight_grams=parcel.weight_grams, packed_by=parcel.packed_by, packed_at=parcel.packed_at,
        items=[ParcelItemOut(sku=names[i.variant_id].sku if i.variant_id in names else "",
                             product_name=names[i.variant_id].product_name
                             if i.variant_id in names else "", quantity=i.quantity)
               for i in items],
        carrier=parcel.carrier, tracking_number=parcel.tracking_number,
        tracking_url=parcel.tracking_url, shipped_by=parcel.shipped_by,
        shipped_at=parcel.shipped_at)


def _names(session: Session, order_id: uuid.UUID) -> dict[int, packing.SkuProgress]:
    return {p.variant_id: p for p in packing.progress(session, order_id)}


# -- pick lists ---------------------------------------------------------------------------------


@api.route("POST", "/api/picklists", access=Permission.PICKING, body=WaveRequest,
           response=WaveResult, status_code=201, tags=PICK_TAGS,
           summary="Build a wave: ready orders, oldest first, on one pick list per warehouse, "
           "lines merged per bin and SKU and sorted along the walk")
def build_pick_lists(ctx: Context, body: WaveRequest) -> WaveResult:
    limit = min(body.max_orders or ctx.settings.pick_wave_max_orders,
                ctx.settings.pick_wave_max_orders)
    with ctx.unit_of_work() as uow:
        wave = picking.build_wave(uow=uow, actor=ctx.staff.email, max_orders=limit)
        summaries = _summaries(uow.session, wave.pick_lists)
        audit.record(uow.session, ctx.actor, "picklist.build", target_type="pick_list",
                     target_id=",".join(str(s.id) for s in summaries),
                     after={"pick_lists": [s.id for s in summaries], "orders": wave.order_count,
                            "max_orders": limit, "backorders_found": wave.backorders_found})
    return WaveResult(orders=wave.order_count, backorders_found=wave.backorders_found,
                      items=[PickListSummary.model_validate(s.model_dump(
                          exclude={"items", "order_numbers"})) for s in summaries])


@api.route("GET", "/api/picklists", access=Permission.PICKING, query=PickListQuery,
           response=PickListPage, tags=PICK_TAGS,
           summary="Pick lists, filtered by status, warehouse and picker")
def list_pick_lists(ctx: Context, query: PickListQuery) -> PickListPage:
    statement = select(PickList)
    if query.status:
        statement = statement.where(col(PickList.status).in_([s.value for s in query.status]))
    if query.claimed_by:
        statement = statement.where(func.lower(PickList.claimed_by)
                                    == query.claimed_by.strip().lower())
    with ctx.db.read_session() as session:
        if query.warehouse:
            statement = statement.join(Warehouse, col(Warehouse.id) == PickList.warehouse_id
                                       ).where(func.lower(Warehouse.code)
                                               == query.warehouse.strip().lower())
        order = (col(PickList.id).asc() if query.sort == "oldest" else col(PickList.id).desc())
        lists = list(session.exec(statement.order_by(order).limit(query.limit)))
        summaries = _summaries(session, lists)
    return PickListPage(items=[PickListSummary.model_validate(
        s.model_dump(exclude={"items", "order_numbers"})) for s in summaries])


@api.route("GET", "/api/picklists/{pick_list_id}", access=Permission.PICKING,
           response=PickListDetail, tags=PICK_TAGS,
           summary="One pick list: its lines in walking order with bin, SKU, barcode, product, "
           "quantity, picked, short and what is still to take")
def get_pick_list(ctx: Context, pick_list_id: DbId) -> PickListDetail:
    with ctx.db.read_session() as session:
        pick_list = session.get(PickList, pick_list_id)
        if pick_list is None:
            raise NotFound(f"No pick list {pick_list_id}.")
        return _detail(session, pick_list)


@api.route("POST", "/api/picklists/{pick_list_id}/claim", access=Permission.PICKING,
           response=PickListDetail, tags=PICK_TAGS, errors=(409,),
           summary="Claim an open pick list (one picker wins; the others get 409); its orders "
           "move to picking")
def claim_pick_list(ctx: Context, pick_list_id: DbId) -> PickListDetail:
    with ctx.unit_of_work() as uow:
        pick_list = picking.claim_pick_list(uow=uow, pick_list_id=pick_list_id,
                                            picker=ctx.staff.email)
        detail = _detail(uow.session, pick_list)
        audit.record(uow.session, ctx.actor, "picklist.claim", target_type="pick_list",
                     target_id=str(pick_list_id), after={"status": pick_list.status,
                                                         "orders": detail.order_numbers})
    return detail


@api.route("POST", "/api/picklists/{pick_list_id}/release", access=Permission.PICKING,
           response=PickListDetail, tags=PICK_TAGS, errors=(409,),
           summary="Hand a claimed pick list back, open for any picker: its own picker, or stock "
           "staff for anyone's; what was picked stays picked")
def release_pick_list(ctx: Context, pick_list_id: DbId) -> PickListDetail:
    with ctx.unit_of_work() as uow:
        pick_list, had_it = picking.release_pick_list(
            uow=uow, pick_list_id=pick_list_id, by=ctx.staff.email,
            may_release_others=ctx.staff.may(Permission.STOCK_WRITE))
        detail = _detail(uow.session, pick_list)
        audit.record(uow.session, ctx.actor, "picklist.release", target_type="pick_list",
                     target_id=str(pick_list_id), before={"claimed_by": had_it},
                     after={"status": pick_list.status})
    return detail


@api.route("POST", "/api/picklists/{pick_list_id}/scan", access=Permission.PICKING,
           body=ScanRequest, response=ScanResult, tags=PICK_TAGS, errors=(409,),
           summary="Confirm units taken from a bin: the SKU or barcode must be the line's, and "
           "not more than it still wants")
def scan_pick(ctx: Context, pick_list_id: DbId, body: ScanRequest) -> ScanResult:
    with ctx.unit_of_work() as uow:
        result = picking.scan_item(uow=uow, pick_list_id=pick_list_id, picker=ctx.staff.email,
                                   code=body.code, quantity=body.quantity,
                                   line_id=body.line_id, bin_code=body.bin)
        line = _one_line(uow.session, result.line)
        status = PickListStatus.DONE if result.list_done else PickListStatus.CLAIMED
        audit.record(uow.session, ctx.actor, "picklist.scan", target_type="pick_list",
                     target_id=str(pick_list_id),
                     after={"line_id": line.id, "bin": line.bin, "sku": line.sku,
                            "scanned": body.code, "quantity": body.quantity,
                            "line_picked": line.picked, "pick_list_status": status})
    return ScanResult(line=line, picked_now=result.picked_now, pick_list_status=status)


@api.route("POST", "/api/picklists/{pick_list_id}/lines/{line_id}/short",
           access=Permission.PICKING, body=ShortRequest, response=ShortResult,
           tags=PICK_TAGS, errors=(409,),
           summary="Report a short pick: what was found is picked, the bin's count corrected, "
           "the missing units set aside elsewhere for the next wave or backordered")
def report_short(ctx: Context, pick_list_id: DbId, line_id: DbId,
                 body: ShortRequest) -> ShortResult:
    with ctx.unit_of_work() as uow:
        result = picking.report_short(uow=uow, pick_list_id=pick_list_id, line_id=line_id,
                                      picker=ctx.staff.email, found=body.found,
                                      left_in_bin=body.left_in_bin)
        line = _one_line(uow.session, result.line)
        status = PickListStatus.DONE if result.list_done else PickListStatus.CLAIMED
        audit.record(uow.session, ctx.actor, "picklist.short", target_type="pick_list",
                     target_id=str(pick_list_id),
                     after={"line_id": line.id, "bin": line.bin, "sku": line.sku,
                            "found": body.found, "left_in_bin": body.left_in_bin,
                            "short": result.short, "given_back": result.given_back,
                            "reallocated": result.reallocated,
                            "backordered": result.backordered,
                            "bin_correction": result.correction, "pick_list_status": status})
    return ShortResult(line=line, picked=result.picked, short=result.short,
                       given_back=result.given_back, reallocated=result.reallocated,
                       backordered=result.backordered, bin_correction=result.correction,
                       pick_list_status=status)


@api.route("POST", "/api/picklists/{pick_list_id}/complete", access=Permission.PICKING,
           response=PickListDetail, tags=PICK_TAGS, errors=(409,),
           summary="Close one's claimed pick list when nothing is left to pick on it")
def complete_pick_list(ctx: Context, pick_list_id: DbId) -> PickListDetail:
    with ctx.unit_of_work() as uow:
        pick_list = picking.complete_pick_list(uow=uow, pick_list_id=pick_list_id,
                                               picker=ctx.staff.email)
        audit.record(uow.session, ctx.actor, "picklist.complete", target_type="pick_list",
                     target_id=str(pick_list_id), after={"status": pick_list.status})
        return _detail(uow.session, pick_list)


# -- packing and shipping -----------------------------------------------------------------------


@api.route("GET", "/api/orders/{number}/parcels", access=Permission.SHIPPING,
           response=PackingState, tags=SHIP_TAGS,
           summary="What of an order is picked, packed and shipped, per SKU, and its parcels")
def order_parcels(ctx: Context, number: str) -> PackingState:
    with ctx.db.read_session() as session:
        order = desk.order_by_number(session, number)
        names = _names(session, order.id)
        parcels = packing.parcels_of(session, order.id)
    return PackingState(
        order_number=order.number, order_status=order.status,
        skus=[SkuProgressOut(sku=p.sku, product_name=p.product_name,
                             variant_name=p.variant_name, ordered=p.ordered, to_pick=p.to_pick,
                             picked=p.picked, packed=p.packed, shipped=p.shipped,
                             backordered=p.backordered, packable=p.packable)
              for p in names.values()],
        parcels=[_parcel_out(parcel, items, order, names) for parcel, items in parcels])


@api.route("POST", "/api/orders/{number}/parcels", access=Permission.SHIPPING,
           body=PackRequest, response=ParcelOut, status_code=201, tags=SHIP_TAGS,
           errors=(409,),
           summary="Pack picked units into a parcel; the order is packed when all of it is")
def pack_parcel(ctx: Context, number: str, body: PackRequest) -> ParcelOut:
    with ctx.unit_of_work() as uow:
        order = desk.order_by_number(uow.session, number)
        packed = packing.pack_parcel(
            uow=uow, order_id=order.id, weight_grams=body.weight_grams, packer=ctx.staff.email,
            items=[packing.ItemRequest(i.sku, i.quantity) for i in body.items])
        out = _parcel_out(packed.parcel, packed.items, packed.order,
                          _names(uow.session, order.id))
        audit.record(uow.session, ctx.actor, "parcel.pack", target_type="parcel",
                     target_id=str(out.id),
                     after={"order": order.number, "weight_grams": body.weight_grams,
                            "items": [i.model_dump() for i in out.items],
                            "order_status": packed.order.status})
    return out


@api.route("GET", "/api/orders/{number}/packing-slip.pdf", access=Permission.SHIPPING,
           tags=SHIP_TAGS,
           summary="The order's packing slip as a PDF: address, lines and parcel contents")
def packing_slip_pdf(ctx: Context, number: str) -> Response:
    with ctx.db.read_session() as session:
        order = desk.order_by_number(session, number)
        slip = packing.packing_slip(session, order.id)
    return Response(render_packing_slip(slip), media_type="application/pdf", headers={
        "content-disposition": f'inline; filename="packing-slip-{order.number}.pdf"'})


@api.route("POST", "/api/parcels/{parcel_id}/ship", access=Permission.SHIPPING,
           body=ShipRequest, response=ParcelOut, tags=SHIP_TAGS, errors=(409,),
           summary="Hand a parcel to a carrier: its units leave stock; when the order's last "
           "parcel leaves the order is shipped and the customer gets the tracking links")
def ship_parcel(ctx: Context, parcel_id: DbId, body: ShipRequest) -> ParcelOut:
    with ctx.unit_of_work() as uow:
        shipped = shipping.ship_parcel(
            uow=uow, parcel_id=parcel_id, carrier=body.carrier,
            tracking_number=body.tracking_number, tracking_url=body.tracking_url or "",
            shipper=ctx.staff.email, env=_emails, settings=ctx.settings)
        names = _names(uow.session, shipped.order.id)
        items = list(uow.session.exec(select(ParcelItem).where(
            ParcelItem.parcel_id == parcel_id).order_by(col(ParcelItem.id))))
        out = _parcel_out(shipped.parcel, items, shipped.order, names)
        if not shipped.already:
            audit.record(uow.session, ctx.actor, "parcel.ship", target_type="parcel",
                         target_id=str(parcel_id),
                         after={"order": shipped.order.number, "carrier": body.carrier,
                                "tracking_number": body.tracking_number,
                                "tracking_url": body.tracking_url or "",
                                "order_status": shipped.order.status,
                                "order_shipped": shipped.order_shipped})
    return out


# -- the handheld page --------------------------------------------------------------------------

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
PAGE_FILES = {"picker.js": "text/javascript; charset=utf-8",
              "picker.css": "text/css; charset=utf-8"}
# The page's own policy: its script and style from here, API calls to here, nothing inline.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _static(name: str, media_type: str) -> Response:
    return Response((STATIC_DIR / name).read_bytes(), media_type=media_type,
                    headers={"content-security-policy": PAGE_CSP, "cache-control": "no-cache"})


async def picker_page(request: Request) -> Response:
    """The pickers' handheld page; it signs in and calls the API like any client."""
    return _static("picker.html", "text/html; charset=utf-8")


async def picker_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in PAGE_FILES:
        raise HTTPException(404)
    return _static(name, PAGE_FILES[name])


picker_page.access = PUBLIC  # type: ignore[attr-defined]
picker_asset.access = PUBLIC  # type: ignore[attr-defined]


def page_routes() -> list[Route]:
    """The handheld page and its two files: public, as the page holds no data."""
    return [Route("/picker", picker_page, methods=["GET"]),
            Route("/picker/static/{name}", picker_asset, methods=["GET"])]
