"""Packing: picked units of an order go into parcels; the order is packed when all of it is.

What may be packed is what was picked (allocations `picked` or `shipped`) and is in no parcel
yet. An order becomes `packed` when nothing of it is left to pick or backordered and every
picked unit is in a parcel. Parcels leave with `fulfilment.shipping`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlmodel import Session, col, func, select

from conveyor.db import UnitOfWork
from conveyor.errors import Conflict, DomainError, NotFound
from models.base import utcnow
from models.inventory import Allocation, AllocationStatus
from models.orders import Order, OrderLine, OrderStatus, transition
from models.warehouse import Parcel, ParcelItem

if TYPE_CHECKING:
    from fulfilment.documents import PackingSlip

MAX_PARCEL_GRAMS = 1_000_000  # a tonne: beyond any parcel carrier


class PackingRefused(DomainError):
    """Items a parcel cannot take: not in the order, not picked, packed already."""

    code = "packing_refused"


@dataclass(frozen=True)
class ItemRequest:
    sku: str
    quantity: int


@dataclass(frozen=True)
class SkuProgress:
    """Where an order's units of one SKU are, from the warehouse's point of view."""

    variant_id: int
    sku: str
    product_name: str
    variant_name: str
    ordered: int
    to_pick: int  # set aside in bins
    picked: int  # taken to packing (shipped ones included)
    packed: int  # in parcels (shipped ones included)
    shipped: int
    backordered: int

    @property
    def packable(self) -> int:
        return self.picked - self.packed


def progress(session: Session, order_id: uuid.UUID) -> list[SkuProgress]:
    """Per SKU of the order: ordered, still to pick, picked, packed, shipped, backordered."""
    lines = list(session.exec(select(OrderLine).where(OrderLine.order_id == order_id)
                              .order_by(col(OrderLine.id))))
    held: dict[tuple[int, str], int] = defaultdict(int)
    for variant_id, status, units in session.exec(
            select(Allocation.variant_id, Allocation.status, func.sum(Allocation.quantity))
            .where(Allocation.order_id == order_id)
            .group_by(col(Allocation.variant_id), col(Allocation.status))):
        held[(variant_id, status)] += int(units)
    packed: dict[int, int] = defaultdict(int)
    shipped: dict[int, int] = defaultdict(int)
    for variant_id, units, shipped_at in session.exec(
            select(ParcelItem.variant_id, ParcelItem.quantity, Parcel.shipped_at)
            .join(Parcel, col(Parcel.id) == ParcelItem.parcel_id)
            .where(Parcel.order_id == order_id)):
        packed[variant_id] += units
        if shipped_at is not None:
            shipped[variant_id] += units
    merged: dict[int, SkuProgress] = {}
    for line in lines:
        earlier = merged.get(line.variant_id)
        merged[line.variant_id] = SkuProgress(
            variant_id=line.variant_id, sku=line.sku, product_name=line.product_name,
            variant_name=line.variant_name,
            ordered=line.quantity + (earlier.ordered if earlier else 0),
            to_pick=held[(line.variant_id, AllocationStatus.ALLOCATED)],
            picked=held[(line.variant_id, AllocationStatus.PICKED)]
            + held[(line.variant_id, AllocationStatus.SHIPPED)],
            packed=packed[line.variant_id], shipped=shipped[line.variant_id],
            backordered=line.backordered + (earlier.backordered if earlier else 0))
    return list(merged.values())


def everything_packed(items: list[SkuProgress]) -> bool:
    return all(p.to_pick == 0 and p.backordered == 0 and p.packed == p.picked for p in items)


@dataclass(frozen=True)
class Packed:
    parcel: Parcel
    items: list[ParcelItem]
    order: Order
    order_packed: bool  # this parcel completed the order


def pack_parcel(*, uow: UnitOfWork, order_id: uuid.UUID, weight_grams: int,
                items: list[ItemRequest], packer: str) -> Packed:
    """Put picked units of an order into a new parcel.

    Locks the order (so two packers of one order queue). Refuses without changing anything:
    an order not being picked (Conflict), a SKU not in the order, or more units than were
    picked and are not in a parcel yet (PackingRefused, with what is packable). Lines naming
    one SKU twice are added up. When the parcel leaves nothing unpacked, to pick or
    backordered, the order moves to `packed`. Not idempotent: each call makes a parcel.
    """
    session = uow.session
    order = session.get(Order, order_id, with_for_update=True)
    if order is None:
        raise NotFound("No such order.")
    if order.status != OrderStatus.PICKING:
        raise Conflict(f"Order {order.number} is {order.status.replace('_', ' ')}: only orders "
                       "being picked can be packed.", details={"status": order.status})
    if not items or not 0 < weight_grams <= MAX_PARCEL_GRAMS:
        raise PackingRefused("A parcel needs a weight and at least one item.")
    state = {p.sku.casefold(): p for p in progress(session, order_id)}
    wanted: dict[int, int] = defaultdict(int)
    by_variant: dict[int, SkuProgress] = {}
    for item in items:
        found = state.get(item.sku.strip().casefold())
        if found is None:
            raise PackingRefused(f"{item.sku.strip()[:64]} is not in order {order.number}.",
                                 details={"sku": item.sku.strip()[:64]})
        if item.quantity <= 0:
            raise PackingRefused("Each item needs a positive quantity.")
        wanted[found.variant_id] += item.quantity
        by_variant[found.variant_id] = found
    for variant_id, quantity in wanted.items():
        sku = by_variant[variant_id]
        if quantity > sku.packable:
            raise PackingRefused(
                f"Only {sku.packable} picked unit(s) of {sku.sku} are not packed yet; this "
                f"parcel would take {quantity}.",
                details={"sku": sku.sku, "packable": sku.packable, "requested": quantity,
                         "picked": sku.picked, "packed": sku.packed})
    parcel = Parcel(order_id=order_id, weight_grams=weight_grams, packed_by=packer,
                    packed_at=utcnow())
    session.add(parcel)
    session.flush()
    assert parcel.id is not None
    parcel_items = [ParcelItem(parcel_id=parcel.id, variant_id=variant_id, quantity=quantity)
                    for variant_id, quantity in sorted(wanted.items())]
    session.add_all(parcel_items)
    session.flush()
    done = everything_packed(progress(session, order_id))
    if done:
        count = session.exec(select(func.count()).select_from(Parcel)
                             .where(Parcel.order_id == order_id)).one()
        session.add(transition(order, OrderStatus.PACKED, actor=packer, at=utcnow(),
                               reason=f"Packed in {count} parcel(s)."))
    session.flush()
    return Packed(parcel, parcel_items, order, done)


def parcels_of(session: Session, order_id: uuid.UUID) -> list[tuple[Parcel, list[ParcelItem]]]:
    """An order's parcels, oldest first, each with its items."""
    parcels = list(session.exec(select(Parcel).where(Parcel.order_id == order_id)
                                .order_by(col(Parcel.id))))
    items: dict[int, list[ParcelItem]] = defaultdict(list)
    if parcels:
        for item in session.exec(select(ParcelItem).where(
                col(ParcelItem.parcel_id).in_([p.id for p in parcels]))
                .order_by(col(ParcelItem.id))):
            items[item.parcel_id].append(item)
    return [(parcel, items[parcel.id or 0]) for parcel in parcels]


def packing_slip(session: Session, order_id: uuid.UUID) -> PackingSlip:
    """What the packing slip shows: the address, the lines and each parcel's contents."""
    # Imported here: fpdf2 takes a while to load, and only slips need it (not the storefront).
    from fulfilment.documents import PackingSlip, SlipLine, SlipParcel

    order = session.get(Order, order_id)
    if order is None:
        raise NotFound("No such order.")
    state = progress(session, order_id)
    names = {p.variant_id: p for p in state}
    return PackingSlip(
        number=order.number, placed_at=order.created_at, full_name=order.full_name,
        address=order.address, postal_code=order.postal_code, city=order.city,
        country=order.country, phone=order.phone, shipping_method=order.shipping_method_name,
        lines=[SlipLine(sku=p.sku, name=f"{p.product_name} ({p.variant_name})",
                        ordered=p.ordered, backordered=p.backordered) for p in state],
        parcels=[SlipParcel(
            number=index, weight_grams=parcel.weight_grams, carrier=parcel.carrier,
            tracking_number=parcel.tracking_number,
            items=[(names[i.variant_id].sku if i.variant_id in names else str(i.variant_id),
                    names[i.variant_id].product_name if i.variant_id in names else "",
                    i.quantity) for i in items])
            for index, (parcel, items) in enumerate(parcels_of(session, order_id), 1)])
