"""Packing on PostgreSQL: only picked units go into parcels, never more than were picked; the
order is packed when all of it is; the packing slip."""

from __future__ import annotations

import uuid

import pytest

from conveyor.db import Database
from conveyor.errors import Conflict
from fulfilment import packing
from fulfilment.documents import render_packing_slip
from models.orders import OrderStatus
from tests.integration.test_picking import (
    bin_,
    build,
    claim,
    floor,  # noqa: F401 (fixture)
    pick_everything,
    put,
    ready_order,
    reload,
    scan,
    short,
    sku_of,
    variant,
    walk,
)


def pack(db: Database, order_id: uuid.UUID, items: list[tuple[str, int]],
         weight: int = 900) -> packing.Packed:
    with db.unit_of_work() as uow:
        return packing.pack_parcel(uow=uow, order_id=order_id, weight_grams=weight,
                                   items=[packing.ItemRequest(s, q) for s, q in items],
                                   packer="packer@conveyor.test")


def state(db: Database, order_id: uuid.UUID) -> dict[str, packing.SkuProgress]:
    with db.read_session() as session:
        return {p.sku: p for p in packing.progress(session, order_id)}


@pytest.fixture
def two_line_order(floor, settings):  # noqa: F811
    """An order of 2 lamps and 1 mug on a claimed pick list; returns (db, order, lamp, mug,
    pick list id)."""
    db = floor
    shelf, other = bin_(db, "WH1", "A-01", 10), bin_(db, "WH1", "B-01", 20)
    lamp, mug = variant(db, "Lamp"), variant(db, "Mug")
    put(db, lamp, shelf, 10)
    put(db, mug, other, 10)
    order = ready_order(db, settings, [(lamp, 2), (mug, 1)])
    [pick_list] = build(db)
    claim(db, pick_list.id)
    return db, order, sku_of(db, lamp), sku_of(db, mug), pick_list.id


def test_only_picked_units_can_be_packed_and_never_more(two_line_order):
    db, order, lamp, mug, pick_list_id = two_line_order
    scan(db, pick_list_id, lamp, 1, bin_code="A-01")

    with pytest.raises(packing.PackingRefused, match=f"Only 1 picked unit.*{lamp}") as refused:
        pack(db, order.id, [(lamp, 2)])
    assert refused.value.details == {"sku": lamp, "packable": 1, "requested": 2, "picked": 1,
                                     "packed": 0}
    with pytest.raises(packing.PackingRefused, match="Only 0 picked unit"):
        pack(db, order.id, [(mug, 1)])  # not picked yet
    with pytest.raises(packing.PackingRefused, match="not in order"):
        pack(db, order.id, [("NO-SUCH-SKU", 1)])
    with pytest.raises(packing.PackingRefused, match="Only 1"):
        pack(db, order.id, [(lamp, 1), (lamp.lower(), 1)])  # one SKU twice adds up

    first = pack(db, order.id, [(lamp, 1)])

    assert not first.order_packed and reload(db, order.id).status == OrderStatus.PICKING
    with pytest.raises(packing.PackingRefused, match="Only 0"):
        pack(db, order.id, [(lamp, 1)])  # that unit is in a parcel now
    assert state(db, order.id)[lamp].packed == 1 and state(db, order.id)[lamp].to_pick == 1


def test_the_order_is_packed_when_every_picked_unit_is_in_a_parcel(two_line_order):
    db, order, lamp, mug, pick_list_id = two_line_order
    pick_everything(db, pick_list_id)

    first = pack(db, order.id, [(lamp, 2)])
    assert not first.order_packed
    second = pack(db, order.id, [(mug, 1)], weight=300)

    assert second.order_packed
    assert reload(db, order.id).status == OrderStatus.PACKED
    with pytest.raises(Conflict, match="packed"):
        pack(db, order.id, [(mug, 1)])


def test_units_still_to_pick_or_backordered_keep_the_order_unpacked(two_line_order):
    db, order, lamp, mug, pick_list_id = two_line_order
    mug_line = next(li for li in walk(db, pick_list_id) if li.sku == mug)
    scan(db, pick_list_id, lamp, 2, bin_code="A-01")
    short(db, pick_list_id, mug_line.id, found=0, left_in_bin=0)  # no other mug: backordered

    packed = pack(db, order.id, [(lamp, 2)])

    assert not packed.order_packed
    assert state(db, order.id)[mug].backordered == 1
    assert reload(db, order.id).status == OrderStatus.PICKING


def test_an_order_not_being_picked_cannot_be_packed(floor, settings):  # noqa: F811
    db = floor
    shelf = bin_(db, "WH1", "A-01", 10)
    lamp = variant(db, "Lamp")
    put(db, lamp, shelf, 10)
    order = ready_order(db, settings, [(lamp, 1)])

    with pytest.raises(Conflict, match="allocated"):
        pack(db, order.id, [(sku_of(db, lamp), 1)])


def test_the_packing_slip_lists_address_lines_and_parcels(two_line_order):
    db, order, lamp, mug, pick_list_id = two_line_order
    pick_everything(db, pick_list_id)
    pack(db, order.id, [(lamp, 2)], weight=1200)

    with db.read_session() as session:
        slip = packing.packing_slip(session, order.id)

    assert slip.number == order.number and slip.city == "Berlin"
    assert [(line.sku, line.ordered) for line in slip.lines] == [(lamp, 2), (mug, 1)]
    [parcel] = slip.parcels
    assert (parcel.weight_grams, [(sku, qty) for sku, _, qty in parcel.items]) == (
        1200, [(lamp, 2)])
    pdf = render_packing_slip(slip)
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert f"Packing slip {order.number}".encode() in pdf  # the document's title
