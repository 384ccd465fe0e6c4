"""A full day in the warehouse, over the admin API where the back office has one:

morning: stock staff set up bins and receive a purchase order; five customers buy (real
checkout, card authorised at localstripe, screened, captured, allocated); a wave goes out,
a picker walks it and finds a bin short; the missing units come from another bin on a second
wave; packers pack (one order in two parcels, the first shipped before the second is packed),
the carrier takes everything; in the evening a count finds two variances.

At the end every number adds up: the ledger matches every counter, on hand per SKU is
received - shipped + corrections, nothing is left allocated, every order is shipped with
its email, and the audit chain is intact."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlmodel import col, func, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor import audit
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.inventory import adjust_bin, verify_ledger
from models.audit import AuditEntry
from models.inventory import Location, MovementKind, StockItem, StockMovement
from models.messaging import Email
from models.orders import Order, OrderStatus
from models.warehouse import Parcel, ParcelItem, PickList, PickListStatus
from tests.e2e.admin_client import bearer, login
from tests.factories import make_staff
from tests.integration.test_picking import lenient_screening, ready_order, sku_of, variant

BINS = [("A-01", "A", 10), ("A-02", "A", 20), ("B-01", "B", 110), ("B-02", "B", 120),
        ("C-01", "C", 210)]


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_a_full_day_in_the_warehouse_adds_up(db: Database, settings: Settings):
    lenient_screening(db)
    lamp, mug, rug, vase = (variant(db, name) for name in ("Lamp", "Mug", "Rug", "Vase"))
    sku = {v: sku_of(db, v) for v in (lamp, mug, rug, vase)}
    with TestClient(create_app(settings, db=db)) as client:
        stock = bearer(login(client, make_staff(db, "stock", email="sam@conveyor.test")))
        picker = bearer(login(client, make_staff(db, "picker", email="pia@conveyor.test")))

        # -- morning: bins, a delivery ----------------------------------------------------------
        ok(client.post("/api/warehouses", json={"code": "MAIN", "name": "Main"},
                       headers=stock), 201)
        for code, aisle, sequence in BINS:
            ok(client.post("/api/warehouses/MAIN/bins", headers=stock, json={
                "code": code, "aisle": aisle, "pick_sequence": sequence}), 201)
        expected = {lamp: 10, mug: 6, rug: 4, vase: 3}
        po = ok(client.post("/api/purchase-orders", headers=stock, json={
            "supplier": "Acme Homeware", "warehouse": "MAIN",
            "lines": [{"sku": sku[v], "quantity": q, "unit_cost_cents": 500}
                      for v, q in expected.items()]}), 201)
        arrived = [(lamp, "A-01", 10), (rug, "A-02", 4), (mug, "B-01", 4), (vase, "B-02", 3),
                   (mug, "C-01", 2)]
        ok(client.post(f"/api/purchase-orders/{po['number']}/receipts", headers=stock, json={
            "lines": [{"sku": sku[v], "bin": b, "good": q} for v, b, q in arrived]}), 201)
        received: dict[int, int] = defaultdict(int)
        for v, _, q in arrived:
            received[v] += q

        # -- customers buy -----------------------------------------------------------------------
        baskets = [[(lamp, 2), (mug, 1)], [(mug, 2), (rug, 1)], [(lamp, 1), (vase, 1)],
                   [(mug, 1), (lamp, 1)], [(rug, 2), (vase, 2)]]
        orders = [ready_order(db, settings, basket) for basket in baskets]
        ordered: dict[int, int] = defaultdict(int)
        for basket in baskets:
            for v, q in basket:
                ordered[v] += q

        # -- the first wave ----------------------------------------------------------------------
        wave = ok(client.post("/api/picklists", json={}, headers=picker), 201)
        assert wave["orders"] == 5
        [first] = wave["items"]
        walk = ok(client.post(f"/api/picklists/{first['id']}/claim", headers=picker))["items"]
        assert [(li["bin"], li["sku"], li["quantity"]) for li in walk] == [
            ("A-01", sku[lamp], 4), ("A-02", sku[rug], 3), ("B-01", sku[mug], 4),
            ("B-02", sku[vase], 3)]
        for line in walk:
            if line["bin"] == "B-01":  # only two mugs are really there
                shorted = ok(client.post(
                    f"/api/picklists/{first['id']}/lines/{line['id']}/short", headers=picker,
                    json={"found": 2}))
                assert (shorted["short"], shorted["bin_correction"]) == (2, -2)
                assert sum(shorted["reallocated"].values()) == 2
                assert shorted["backordered"] == {}
            else:
                ok(client.post(f"/api/picklists/{first['id']}/scan", headers=picker, json={
                    "bin": line["bin"], "code": line["sku"], "quantity": line["quantity"]}))
        assert ok(client.get(f"/api/picklists/{first['id']}", headers=picker))["status"] == \
            "done"

        # -- the second wave: the mugs from C-01 -------------------------------------------------
        [second] = ok(client.post("/api/picklists", json={}, headers=picker), 201)["items"]
        [line] = ok(client.post(f"/api/picklists/{second['id']}/claim",
                                headers=picker))["items"]
        assert (line["bin"], line["sku"], line["quantity"]) == ("C-01", sku[mug], 2)
        ok(client.post(f"/api/picklists/{second['id']}/scan", headers=picker,
                       json={"line_id": line["id"], "code": sku[mug], "quantity": 2}))

        # -- packing and shipping ----------------------------------------------------------------
        tracking = 0

        def ship(parcel_id: int) -> dict[str, Any]:
            nonlocal tracking
            tracking += 1
            return ok(client.post(f"/api/parcels/{parcel_id}/ship", headers=picker, json={
                "carrier": "DHL", "tracking_number": f"JD{tracking:06d}",
                "tracking_url": f"https://track.example/JD{tracking:06d}"}))

        split, *others = orders
        lamps = ok(client.post(f"/api/orders/{split.number}/parcels", headers=picker, json={
            "weight_grams": 1500, "items": [{"sku": sku[lamp], "quantity": 2}]}), 201)
        assert ship(lamps["id"])["order_status"] == OrderStatus.PICKING  # partial shipment
        last = ok(client.post(f"/api/orders/{split.number}/parcels", headers=picker, json={
            "weight_grams": 400, "items": [{"sku": sku[mug], "quantity": 1}]}), 201)
        assert last["order_status"] == OrderStatus.PACKED
        assert ship(last["id"])["order_status"] == OrderStatus.SHIPPED
        for order, basket in zip(others, baskets[1:], strict=True):
            parcel = ok(client.post(f"/api/orders/{order.number}/parcels", headers=picker,
                                    json={"weight_grams": 1000, "items": [
                                        {"sku": sku[v], "quantity": q} for v, q in basket]}),
                        201)
            assert parcel["order_status"] == OrderStatus.PACKED
            slip = client.get(f"/api/orders/{order.number}/packing-slip.pdf", headers=picker)
            assert slip.headers["content-type"] == "application/pdf"
            assert ship(parcel["id"])["order_status"] == OrderStatus.SHIPPED

    # -- evening: a count finds the rug bin one short and a lamp more ----------------------------
    with db.unit_of_work() as uow:
        bins = {loc.code: loc.id for loc in uow.session.exec(select(Location))}
        for v, code, delta in ((rug, "A-02", -1), (lamp, "A-01", +1)):
            adjust_bin(uow=uow, variant_id=v, location_id=bins[code], delta=delta,
                       kind=MovementKind.COUNT_CORRECTION, reason="evening count",
                       actor="sam@conveyor.test", document_type="count", document_id="day-1")

    # -- every number adds up ---------------------------------------------------------------------
    with db.read_session() as session:
        assert verify_ledger(session) == []
        shipped: dict[int, int] = defaultdict(int)
        for variant_id, quantity in session.exec(
                select(ParcelItem.variant_id, ParcelItem.quantity)
                .join(Parcel, col(Parcel.id) == ParcelItem.parcel_id)
                .where(col(Parcel.shipped_at).is_not(None))):
            shipped[variant_id] += quantity
        corrections = dict(session.exec(
            select(StockMovement.variant_id, func.sum(StockMovement.on_hand_delta))
            .where(StockMovement.kind == MovementKind.COUNT_CORRECTION)
            .group_by(col(StockMovement.variant_id))).all())
        assert corrections == {mug: -2, rug: -1, lamp: 1}
        for v in (lamp, mug, rug, vase):
            item = session.get(StockItem, v)
            assert item is not None
            assert item.on_hand == received[v] - shipped[v] + corrections.get(v, 0), sku[v]
            assert (item.allocated, item.reserved) == (0, 0)
        assert dict(shipped) == dict(ordered)  # every unit ordered went out
        statuses = session.exec(select(Order.status).where(
            col(Order.id).in_([o.id for o in orders]))).all()
        assert statuses == [OrderStatus.SHIPPED] * 5
        assert {p.status for p in session.exec(select(PickList))} == {PickListStatus.DONE}
        shipped_emails = session.exec(select(Email).where(Email.template == "order_shipped")
                                      ).all()
        assert sorted(e.order_id for e in shipped_emails) == sorted(o.id for o in orders)
        split_email = next(e for e in shipped_emails if e.order_id == split.id)
        assert "JD000001" in split_email.text_body and "JD000002" in split_email.text_body
        assert audit.verify_chain(session).ok
        steps = dict(session.exec(select(AuditEntry.action, func.count())
                                  .group_by(col(AuditEntry.action))).all())
    assert (steps["picklist.build"], steps["picklist.claim"], steps["picklist.scan"],
            steps["picklist.short"], steps["parcel.pack"], steps["parcel.ship"]) == (
        2, 2, 4, 1, 6, 6)
