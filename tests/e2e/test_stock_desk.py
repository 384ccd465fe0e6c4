"""The stock desk on the admin API: stock levels and reorder settings, warehouses and bins,
and adjustments with two-person approval. Real PostgreSQL; the ledger is checked after each
test."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.inventory import (
    LineRequest,
    allocate_order_stock,
    receive_stock,
    reserve_lines,
    verify_ledger,
)
from models.audit import AuditEntry
from models.base import utcnow
from models.inventory import BinStock, Location, MovementKind, StockItem, StockMovement
from models.warehouse import StockAdjustment
from tests.e2e.admin_client import bearer, login
from tests.factories import make_pending_order, make_product, make_staff, stock_of

LIMIT = 5000  # ADJUSTMENT_APPROVAL_CENTS in these tests (the default)


@pytest.fixture
def client(db: Database, settings: Settings):
    assert settings.adjustment_approval_cents == LIMIT
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def ledger_stays_exact(db: Database):
    yield
    with db.read_session() as session:
        assert verify_ledger(session) == []


@pytest.fixture
def stock(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "stock", email="sam@conveyor.test")))


@pytest.fixture
def second(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "stock", email="kim@conveyor.test")))


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def field_locs(response: Any) -> list[list[str]]:
    return [f["loc"] for f in error_of(response, 422)["details"]["fields"]]


def audit_entries(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)
                                 .order_by(col(AuditEntry.id))))


def set_cost(db: Database, variant_id: int, cents: int) -> None:
    with db.unit_of_work() as uow:
        item = uow.session.get(StockItem, variant_id)
        assert item is not None
        item.unit_cost_cents = cents


def tst_bin(db: Database, code: str = "A-01-1") -> int:
    with db.read_session() as session:
        location = session.exec(select(Location).where(Location.code == code)).one()
        assert location.id is not None
        return location.id


def bin_units(db: Database, variant_id: int, code: str = "A-01-1") -> tuple[int, int]:
    with db.read_session() as session:
        row = session.exec(select(BinStock).where(BinStock.variant_id == variant_id,
                                                  BinStock.location_id == tst_bin(db, code))
                           ).one()
        return row.on_hand, row.allocated


def allocate(db: Database, variant_id: int, quantity: int) -> None:
    """An approved order's units set aside in the bin (reserved, then allocated)."""
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, lines=[LineRequest(variant_id, quantity)],
                      until=utcnow() + timedelta(minutes=15))
    with db.unit_of_work() as uow:
        allocate_order_stock(uow=uow, order_id=order_id)


# -- stock levels ---------------------------------------------------------------------------------


def test_each_sku_shows_on_hand_allocated_reserved_available_costs_and_bins(client, stock, db):
    made = make_product(db, name="Desk Fan", variants=[("Grey", 2500, 10), ("Blue", 2500, 4)])
    grey, blue = made.variant_ids
    set_cost(db, grey, 1234)
    allocate(db, grey, 3)
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, lines=[LineRequest(grey, 2)],
                      until=utcnow() + timedelta(minutes=15))

    response = client.get("/api/stock", headers=stock)

    assert response.status_code == 200, response.text
    rows = {row["sku"]: row for row in response.json()["items"]}
    assert rows[made.skus[0]] | {"bins": []} == {
        "variant_id": grey, "sku": made.skus[0], "product_id": made.product_id,
        "product_name": "Desk Fan", "variant_name": "Grey", "on_hand": 10, "allocated": 3,
        "reserved": 2, "available": 5, "reorder_point": 0, "reorder_quantity": 0,
        "unit_cost_cents": 1234, "bins": []}
    assert rows[made.skus[0]]["bins"] == [{
        "warehouse": "TST", "bin": "A-01-1", "kind": "bin", "zone": "", "aisle": "",
        "shelf": "", "pick_sequence": 10, "on_hand": 10, "allocated": 3, "free": 7}]
    assert (rows[made.skus[1]]["available"], rows[made.skus[1]]["variant_id"]) == (4, blue)
    assert response.json()["next_cursor"] is None


def test_filters_narrow_the_list_and_pages_follow_the_cursor(client, stock, db):
    lamps = make_product(db, name="Lamp", variants=[("A", 100, 5), ("B", 100, 1)])
    chairs = make_product(db, name="Chair", variants=[("C", 100, 2)])
    with db.unit_of_work() as uow:
        from models.inventory import Warehouse
        other = Warehouse(code="NTH", name="North")
        uow.session.add(other)
        uow.flush()
        assert other.id is not None
        shelf = Location(warehouse_id=other.id, code="N-1", pick_sequence=1)
        uow.session.add(shelf)
        uow.flush()
        assert shelf.id is not None
        receive_stock(uow=uow, variant_id=chairs.variant_ids[0], location_id=shelf.id,
                      quantity=3, actor="test")
        item = uow.session.get(StockItem, lamps.variant_ids[1])
        assert item is not None
        item.reorder_point = 1

    def skus(**params: Any) -> list[str]:
        response = client.get("/api/stock", params=params, headers=stock)
        assert response.status_code == 200, response.text
        return [row["sku"] for row in response.json()["items"]]

    assert skus(sku=lamps.skus[0].lower()) == [lamps.skus[0]]
    assert skus(product_id=lamps.product_id) == lamps.skus
    assert skus(warehouse="nth") == chairs.skus
    assert skus(warehouse="NTH", bin="N-1") == chairs.skus
    assert skus(bin="A-01-1") == lamps.skus + chairs.skus
    assert skus(below_reorder="true") == [lamps.skus[1]]
    assert skus(below_reorder="false") == [lamps.skus[0], *chairs.skus]
    north = client.get("/api/stock", params={"warehouse": "NTH"}, headers=stock).json()
    assert [b["bin"] for b in north["items"][0]["bins"]] == ["N-1"]  # bins of that warehouse

    first = client.get("/api/stock", params={"limit": 2}, headers=stock).json()
    assert [r["sku"] for r in first["items"]] == lamps.skus
    second = client.get("/api/stock", params={"limit": 2, "cursor": first["next_cursor"]},
                        headers=stock).json()
    assert ([r["sku"] for r in second["items"]], second["next_cursor"]) == (chairs.skus, None)
    assert skus(offset=1, limit=1) == [lamps.skus[1]]


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 201}, {"offset": -1}, {"product_id": 0}, {"warehouse": "a b"},
    {"bin": "=SUM(A1)"}, {"below_reorder": "perhaps"}, {"cursor": "not-a-cursor"},
    {"colour": "red"},
])
def test_bad_filters_are_refused_with_details(client, stock, params):
    response = client.get("/api/stock", params=params, headers=stock)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] in ("invalid_input", "invalid_cursor")


def test_reorder_settings_are_audited_and_the_reorder_list_suggests_quantities(
    client, stock, db
):
    made = make_product(db, name="Kettle", variants=[("Steel", 3000, 4), ("Red", 3000, 50)])
    steel, red = made.variant_ids

    response = client.patch(f"/api/stock/{steel}", headers=stock,
                            json={"reorder_point": 5, "reorder_quantity": 20})
    assert response.status_code == 200, response.text
    assert (response.json()["reorder_point"], response.json()["reorder_quantity"]) == (5, 20)
    assert client.patch(f"/api/stock/{red}", headers=stock,
                        json={"reorder_point": 10}).status_code == 200
    [entry, _] = audit_entries(db, "stock.reorder_update")
    assert (entry.target_id, entry.before, entry.after) == (
        str(steel), {"reorder_point": 0, "reorder_quantity": 0},
        {"reorder_point": 5, "reorder_quantity": 20})

    reorder = client.get("/api/stock/reorder", headers=stock).json()["items"]
    assert [(r["sku"], r["available"], r["on_order"], r["suggested_quantity"])
            for r in reorder] == [(made.skus[0], 4, 0, 20)]

    # A big backlog asks for more than the reorder quantity; what is on order counts.
    client.patch(f"/api/stock/{steel}", headers=stock, json={"reorder_point": 40})
    assert client.get("/api/stock/reorder", headers=stock).json()["items"][0][
        "suggested_quantity"] == 37
    po = client.post("/api/purchase-orders", headers=stock, json={
        "supplier": "Kettles Ltd", "warehouse": "TST",
        "lines": [{"sku": made.skus[0], "quantity": 30, "unit_cost_cents": 900}]})
    assert po.status_code == 201, po.text
    [row] = client.get("/api/stock/reorder", headers=stock).json()["items"]
    assert (row["on_order"], row["suggested_quantity"]) == (30, 20)


def test_reorder_settings_refuse_bad_values_and_unknown_variants(client, stock):
    assert field_locs(client.patch("/api/stock/1", headers=stock, json={})) == [[]]
    assert field_locs(client.patch("/api/stock/1", headers=stock,
                                   json={"reorder_point": -1})) == [["reorder_point"]]
    assert field_locs(client.patch("/api/stock/1", headers=stock,
                                   json={"reorder_point": None})) == [[]]
    response = client.patch("/api/stock/999999", headers=stock, json={"reorder_point": 1})
    assert error_of(response, 404)["code"] == "not_found"


# -- warehouses and bins --------------------------------------------------------------------------


def test_warehouses_and_bins_are_created_listed_and_audited(client, stock, db):
    made = client.post("/api/warehouses", headers=stock, json={"code": "ber", "name": "Berlin"})
    assert made.status_code == 201, made.text
    assert made.json() == {"code": "BER", "name": "Berlin", "bins": 0}
    for code, sequence in (("b-02", 20), ("b-01", 10)):
        response = client.post("/api/warehouses/BER/bins", headers=stock, json={
            "code": code, "zone": "B", "aisle": "01", "shelf": "2", "pick_sequence": sequence})
        assert response.status_code == 201, response.text
    assert response.json() == {"code": "B-01", "kind": "bin", "zone": "B", "aisle": "01",
                               "shelf": "2", "pick_sequence": 10}

    listed = client.get("/api/warehouses/ber/bins", headers=stock).json()
    assert (listed["warehouse"], [b["code"] for b in listed["items"]]) == (
        "BER", ["B-01", "B-02"])
    assert client.get("/api/warehouses", headers=stock).json() == {
        "items": [{"code": "BER", "name": "Berlin", "bins": 2}]}
    assert [e.target_id for e in audit_entries(db, "stock.bin_create")] == ["BER/B-02",
                                                                             "BER/B-01"]
    assert audit_entries(db, "stock.warehouse_create")[0].after["warehouse"] == "BER"
    assert audit_entries(db, "stock.bin_create")[1].after["bin"] == "B-01"


def test_warehouse_and_bin_refusals(client, stock):
    client.post("/api/warehouses", headers=stock, json={"code": "BER", "name": "Berlin"})
    assert error_of(client.post("/api/warehouses", headers=stock,
                                json={"code": "Ber", "name": "Again"}), 409)["code"] == "conflict"
    assert field_locs(client.post("/api/warehouses", headers=stock,
                                  json={"code": "", "name": "x", "extra": 1})) == [
        ["code"], ["extra"]]
    client.post("/api/warehouses/BER/bins", headers=stock, json={"code": "A-1"})
    assert error_of(client.post("/api/warehouses/BER/bins", headers=stock,
                                json={"code": "a-1"}), 409)["code"] == "conflict"
    assert field_locs(client.post("/api/warehouses/BER/bins", headers=stock,
                                  json={"code": "pack"})) == [["code"]]
    assert field_locs(client.post("/api/warehouses/BER/bins", headers=stock,
                                  json={"code": "A-2", "zone": "=cmd()",
                                        "pick_sequence": -5})) == [
        ["zone"], ["pick_sequence"]]
    assert error_of(client.post("/api/warehouses/NOPE/bins", headers=stock,
                                json={"code": "A-1"}), 404)["code"] == "not_found"
    assert error_of(client.get("/api/warehouses/NOPE/bins", headers=stock), 404)


@pytest.mark.parametrize("role", ["finance", "picker", "reviewer"])
def test_roles_without_stock_write_cannot_change_stock(client, db, role):
    made = make_product(db, variants=[("Std", 1000, 5)])
    token = bearer(login(client, make_staff(db, role)))
    writes = [
        ("PATCH", f"/api/stock/{made.variant_ids[0]}", {"reorder_point": 1}),
        ("POST", "/api/warehouses", {"code": "X", "name": "X"}),
        ("POST", "/api/warehouses/TST/bins", {"code": "X-1"}),
        ("POST", "/api/stock/adjustments", {"sku": made.skus[0], "warehouse": "TST",
                                            "bin": "A-01-1", "delta": -1, "reason": "lost",
                                            "note": "gone"}),
        ("POST", "/api/purchase-orders", {"supplier": "S", "warehouse": "TST", "lines": [
            {"sku": made.skus[0], "quantity": 1, "unit_cost_cents": 1}]}),
        ("POST", "/api/stock/counts", {"warehouse": "TST"}),
    ]
    for method, path, body in writes:
        response = client.request(method, path, json=body, headers=token)
        assert error_of(response, 403)["code"] == "forbidden", (method, path)
    assert stock_of(db, made.variant_ids[0]).on_hand == 5
    reads = client.get("/api/stock", headers=token)
    assert reads.status_code == (200 if role == "picker" else 403)


# -- adjustments -----------------------------------------------------------------------------------


def adjust(client: TestClient, headers: dict[str, str], sku: str, delta: int,
           reason: str = "correction", **extra: Any) -> Any:
    return client.post("/api/stock/adjustments", headers=headers, json={
        "sku": sku, "warehouse": "TST", "bin": "A-01-1", "delta": delta, "reason": reason,
        "note": "shelf check", **extra})


def test_a_small_adjustment_is_applied_at_once_through_the_ledger(client, stock, db):
    made = make_product(db, variants=[("Std", 1000, 10)])
    variant = made.variant_ids[0]
    set_cost(db, variant, 2500)  # 2 units: 5000 cents, at the limit

    response = adjust(client, stock, made.skus[0], -2, "damaged")

    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["value_cents"], body["quantity_delta"], body["bin"],
            body["requested_by"], body["decided_by"]) == (
        "applied", 5000, -2, "A-01-1", "sam@conveyor.test", "")
    assert stock_of(db, variant).on_hand == 8 and bin_units(db, variant) == (8, 0)
    with db.read_session() as session:
        movement = session.exec(select(StockMovement).where(
            StockMovement.kind == MovementKind.ADJUSTMENT)).one()
    assert (movement.on_hand_delta, movement.document_type, movement.document_id,
            movement.actor) == (-2, "stock_adjustment", str(body["id"]), "sam@conveyor.test")
    [entry] = audit_entries(db, "stock.adjustment_request")
    assert entry.after is not None and entry.after["status"] == "applied"


def test_a_large_adjustment_waits_for_a_second_person(client, stock, second, db):
    made = make_product(db, variants=[("Std", 1000, 10)])
    variant = made.variant_ids[0]
    set_cost(db, variant, 2501)  # 2 units: 5002 cents, above the limit
    body = adjust(client, stock, made.skus[0], -2, "lost").json()
    assert (body["status"], body["value_cents"]) == ("pending_approval", 5002)
    assert stock_of(db, variant).on_hand == 10

    own = client.post(f"/api/stock/adjustments/{body['id']}/approve", headers=stock)
    error = error_of(own, 403)
    assert error["details"]["reason"] == "second_person_required"
    assert "different member of staff" in error["message"]
    own_reject = client.post(f"/api/stock/adjustments/{body['id']}/reject", headers=stock,
                             json={"reason": "never mind"})
    assert error_of(own_reject, 403)["details"]["reason"] == "second_person_required"
    assert stock_of(db, variant).on_hand == 10
    denied = audit_entries(db, "stock.adjustment_approve")
    assert [(e.outcome, e.actor_email) for e in denied] == [("denied", "sam@conveyor.test")]

    pending = client.get("/api/stock/adjustments", params={"status": "pending_approval"},
                         headers=second).json()["items"]
    assert [a["id"] for a in pending] == [body["id"]]
    approved = client.post(f"/api/stock/adjustments/{body['id']}/approve", headers=second)
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decided_by"]) == (
        "applied", "kim@conveyor.test")
    assert stock_of(db, variant).on_hand == 8
    again = client.post(f"/api/stock/adjustments/{body['id']}/approve", headers=second)
    assert error_of(again, 409)["code"] == "conflict"
    assert client.get("/api/stock/adjustments", params={"status": "pending_approval"},
                      headers=second).json()["items"] == []
    [ok] = [e for e in audit_entries(db, "stock.adjustment_approve") if e.outcome == "ok"]
    assert (ok.before, ok.after["status"], ok.actor_email) == (
        {"status": "pending_approval"}, "applied", "kim@conveyor.test")


def test_a_second_person_may_reject_and_nothing_moves(client, stock, second, db):
    made = make_product(db, variants=[("Std", 1000, 10)])
    set_cost(db, made.variant_ids[0], 100_000)
    body = adjust(client, stock, made.skus[0], 3, "found").json()
    response = client.post(f"/api/stock/adjustments/{body['id']}/reject", headers=second,
                           json={"reason": "those belong to the returns shelf"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"
    assert stock_of(db, made.variant_ids[0]).on_hand == 10
    [entry] = audit_entries(db, "stock.adjustment_reject")
    assert entry.after["reason"] == "those belong to the returns shelf"
    listed = client.get("/api/stock/adjustments", params={"status": ["rejected", "applied"]},
                        headers=stock).json()["items"]
    assert [a["status"] for a in listed] == ["rejected"]
    assert client.get(f"/api/stock/adjustments/{body['id']}", headers=stock).json()[
        "status"] == "rejected"


def test_an_adjustment_cannot_take_units_allocated_to_orders(client, stock, second, db):
    made = make_product(db, variants=[("Std", 1000, 5)])
    variant = made.variant_ids[0]
    allocate(db, variant, 4)

    response = adjust(client, stock, made.skus[0], -2, "lost")

    error = error_of(response, 409)
    assert error["code"] == "stock_conflict" and "set aside" in error["message"]
    assert stock_of(db, variant).on_hand == 5
    with db.read_session() as session:
        assert session.exec(select(StockAdjustment)).all() == []

    # Approved later, when the units have gone to an order: refused, and it stays pending.
    set_cost(db, variant, 100_000)
    pending = adjust(client, stock, made.skus[0], -1, "lost").json()
    assert pending["status"] == "pending_approval"
    allocate(db, variant, 1)
    refused = client.post(f"/api/stock/adjustments/{pending['id']}/approve", headers=second)
    assert error_of(refused, 409)["code"] == "stock_conflict"
    assert client.get(f"/api/stock/adjustments/{pending['id']}", headers=second).json()[
        "status"] == "pending_approval"


def test_adjustment_refusals_name_the_field(client, stock, db):
    made = make_product(db, variants=[("Std", 1000, 5)])
    sku = made.skus[0]
    assert field_locs(adjust(client, stock, "NO-SUCH", -1)) == [["sku"]]
    assert field_locs(adjust(client, stock, sku, -1, bin="Z-9")) == [["bin"]]
    assert field_locs(adjust(client, stock, sku, -1, warehouse="NOPE")) == [["warehouse"]]
    assert field_locs(adjust(client, stock, sku, 1, "lost")) == [["delta"]]
    assert field_locs(adjust(client, stock, sku, -1, "found")) == [["delta"]]
    assert field_locs(adjust(client, stock, sku, 0)) == [["delta"]]
    assert field_locs(adjust(client, stock, sku, -1, "stolen")) == [["reason"]]
    assert field_locs(adjust(client, stock, sku, 10_000_000)) == [["delta"]]
    assert field_locs(adjust(client, stock, sku, -1, note="")) == [["note"]]
    assert error_of(adjust(client, stock, sku, -6, "lost"), 409)["code"] == "stock_conflict"
    assert error_of(client.post("/api/stock/adjustments/999/approve", headers=stock), 404)
    assert field_locs(client.get("/api/stock/adjustments", params={"status": "done"},
                                 headers=stock)) == [["status", "0"]]
    assert stock_of(db, made.variant_ids[0]).on_hand == 5


def test_two_people_approving_at_once_apply_it_once(client, stock, db):
    import threading

    from conveyor import audit
    from conveyor.errors import Conflict
    from fulfilment.adjustments import approve_adjustment

    made = make_product(db, variants=[("Std", 1000, 10)])
    set_cost(db, made.variant_ids[0], 100_000)
    pending = adjust(client, stock, made.skus[0], -3, "lost").json()
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def approve(n: int) -> None:
        barrier.wait()
        try:
            with db.unit_of_work() as uow:
                approve_adjustment(uow=uow, adjustment_id=pending["id"],
                                   actor=audit.Actor(email=f"boss{n}@conveyor.test"))
            outcomes.append("applied")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=approve, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["applied"] + ["conflict"] * 5
    assert stock_of(db, made.variant_ids[0]).on_hand == 7
