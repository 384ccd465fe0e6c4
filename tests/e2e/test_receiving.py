"""Purchase orders and receipts on the admin API: numbers, lines, good and damaged units into
bins, weighted average cost, discrepancies, status, cancelling; audited; ledger exact."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.inventory import verify_ledger
from models.audit import AuditEntry
from models.inventory import BinStock, Location, MovementKind, StockItem, StockMovement
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff, stock_of


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def ledger_stays_exact(db: Database):
    yield
    with db.read_session() as session:
        assert verify_ledger(session) == []


@pytest.fixture
def stock(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "stock", email="rita@conveyor.test")))


@pytest.fixture
def goods(db: Database, client: TestClient, stock: dict[str, str]) -> list[str]:
    """Two SKUs: 10 units of the first in TST/A-01-1 at a unit cost of 400, none of the
    second; and a second bin B-01 in TST."""
    made = make_product(db, name="Tea Pot", variants=[("White", 3000, 10), ("Black", 3000, 0)])
    with db.unit_of_work() as uow:
        item = uow.session.get(StockItem, made.variant_ids[0])
        assert item is not None
        item.unit_cost_cents = 400
    assert client.post("/api/warehouses/TST/bins", headers=stock,
                       json={"code": "B-01", "pick_sequence": 20}).status_code == 201
    return made.skus


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def field_locs(response: Any) -> list[list[str]]:
    return [f["loc"] for f in error_of(response, 422)["details"]["fields"]]


def new_po(client: TestClient, headers: dict[str, str], lines: list[tuple[str, int, int]],
           **extra: Any) -> dict[str, Any]:
    response = client.post("/api/purchase-orders", headers=headers, json={
        "supplier": "Porcelain & Co", "warehouse": "TST", **extra,
        "lines": [{"sku": s, "quantity": q, "unit_cost_cents": c} for s, q, c in lines]})
    assert response.status_code == 201, response.text
    return dict(response.json())


def receive(client: TestClient, headers: dict[str, str], number: str,
            lines: list[dict[str, Any]], note: str = "") -> Any:
    return client.post(f"/api/purchase-orders/{number}/receipts", headers=headers,
                       json={"note": note, "lines": lines})


def cost_of(db: Database, variant_sku: str) -> int:
    from models.catalog import Variant

    with db.read_session() as session:
        variant = session.exec(select(Variant).where(Variant.sku == variant_sku)).one()
        item = session.get(StockItem, variant.id)
        assert item is not None
        return item.unit_cost_cents


def test_a_purchase_order_gets_a_number_and_its_lines(client, stock, goods, db):
    po = new_po(client, stock, [(goods[0], 20, 500), (goods[1], 5, 1250)],
                expected_at="2026-12-01T09:00:00Z", note="Christmas stock")

    assert (po["number"], po["status"], po["supplier"], po["warehouse"], po["created_by"],
            po["note"], po["expected_at"]) == (
        "PO-000001", "open", "Porcelain & Co", "TST", "rita@conveyor.test", "Christmas stock",
        "2026-12-01T09:00:00Z")
    assert [(line["sku"], line["expected"], line["received"], line["damaged"], line["short"],
             line["over"], line["unit_cost_cents"]) for line in po["lines"]] == [
        (goods[0], 20, 0, 0, 20, 0, 500), (goods[1], 5, 0, 0, 5, 0, 1250)]
    assert po["discrepancies"] == [{"sku": goods[0], "kind": "short", "quantity": 20},
                                   {"sku": goods[1], "kind": "short", "quantity": 5}]
    assert client.get("/api/purchase-orders/po-000001", headers=stock).json() == po
    second = new_po(client, stock, [(goods[1], 1, 1)])
    assert second["number"] == "PO-000002"
    listed = client.get("/api/purchase-orders", headers=stock).json()
    assert ([p["number"] for p in listed["items"]], listed["total"]) == (
        ["PO-000002", "PO-000001"], 2)
    with db.read_session() as session:
        [entry, _] = session.exec(select(AuditEntry).where(
            AuditEntry.action == "stock.po_create").order_by(col(AuditEntry.id))).all()
    assert entry.target_id == "PO-000001" and entry.after is not None
    assert [line["sku"] for line in entry.after["lines"]] == goods


def test_receipts_put_good_units_in_bins_keep_damaged_out_and_show_discrepancies(
    client, stock, goods, db
):
    po = new_po(client, stock, [(goods[0], 20, 500), (goods[1], 5, 1250)])
    number = po["number"]

    first = receive(client, stock, number, [
        {"sku": goods[0], "bin": "A-01-1", "good": 8, "damaged": 2},
        {"sku": goods[0], "bin": "b-01", "good": 4},
    ], note="first pallet")

    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "partially_received"
    line = body["lines"][0]
    assert (line["received"], line["damaged"], line["short"], line["over"]) == (12, 2, 6, 0)
    assert body["discrepancies"] == [
        {"sku": goods[0], "kind": "short", "quantity": 6},
        {"sku": goods[0], "kind": "damaged", "quantity": 2},
        {"sku": goods[1], "kind": "short", "quantity": 5}]
    [receipt] = body["receipts"]
    assert (receipt["received_by"], receipt["note"], receipt["lines"]) == (
        "rita@conveyor.test", "first pallet",
        [{"sku": goods[0], "bin": "A-01-1", "good": 8, "damaged": 2},
         {"sku": goods[0], "bin": "B-01", "good": 4, "damaged": 0}])
    with db.read_session() as session:
        variant_id = session.exec(select(StockMovement.variant_id).where(
            StockMovement.document_type == "purchase_order")).first()
        bins = {loc.code: b.on_hand for b, loc in session.exec(
            select(BinStock, Location).join(Location, col(Location.id) == BinStock.location_id)
            .where(BinStock.variant_id == variant_id))}
        movements = session.exec(select(StockMovement).where(
            StockMovement.document_type == "purchase_order")
            .order_by(col(StockMovement.id))).all()
    assert bins == {"A-01-1": 18, "B-01": 4}  # 10 before + 8; the 2 damaged are not stock
    assert stock_of(db, variant_id).on_hand == 22
    assert [(m.kind, m.on_hand_delta, m.document_id, m.actor) for m in movements] == [
        (MovementKind.RECEIPT, 8, number, "rita@conveyor.test"),
        (MovementKind.RECEIPT, 4, number, "rita@conveyor.test")]
    # (10 x 400 + 12 x 500) / 22 = 454.5... -> 455
    assert cost_of(db, goods[0]) == 455

    rest = receive(client, stock, number, [
        {"sku": goods[0], "bin": "A-01-1", "good": 6},
        {"sku": goods[1], "bin": "B-01", "good": 3, "damaged": 2}])
    assert rest.json()["status"] == "received"
    assert rest.json()["discrepancies"] == [{"sku": goods[0], "kind": "damaged", "quantity": 2},
                                            {"sku": goods[1], "kind": "damaged", "quantity": 2}]
    assert cost_of(db, goods[1]) == 1250  # nothing before: the line's cost
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(
            AuditEntry.action == "stock.po_receive").order_by(col(AuditEntry.id))).all()
    assert [(e.before["status"], e.after["status"]) for e in entries] == [
        ("open", "partially_received"), ("partially_received", "received")]
    assert (entries[0].before["unit_cost_cents"], entries[0].after["unit_cost_cents"]) == (
        {goods[0]: 400}, {goods[0]: 455})


def test_receiving_more_than_expected_is_allowed_and_shown_as_over(client, stock, goods, db):
    number = new_po(client, stock, [(goods[1], 5, 1000)])["number"]
    body = receive(client, stock, number, [{"sku": goods[1], "bin": "B-01", "good": 7}]).json()
    assert body["status"] == "received"
    assert body["discrepancies"] == [{"sku": goods[1], "kind": "over", "quantity": 2}]
    later = receive(client, stock, number, [{"sku": goods[1], "bin": "B-01", "good": 1}])
    assert later.status_code == 201, later.text
    assert later.json()["lines"][0]["over"] == 3
    # 7 at 1000, then 1 at 1000: the cost stays
    assert cost_of(db, goods[1]) == 1000


def test_the_weighted_cost_rounds_half_up(client, stock, db):
    made = make_product(db, variants=[("Std", 1000, 1)])
    with db.unit_of_work() as uow:
        item = uow.session.get(StockItem, made.variant_ids[0])
        assert item is not None
        item.unit_cost_cents = 100
    number = new_po(client, stock, [(made.skus[0], 1, 101)])["number"]
    receive(client, stock, number, [{"sku": made.skus[0], "bin": "A-01-1", "good": 1}])
    assert cost_of(db, made.skus[0]) == 101  # 100.5


def test_damaged_units_alone_change_neither_stock_nor_cost(client, stock, goods, db):
    number = new_po(client, stock, [(goods[0], 2, 9999)])["number"]
    body = receive(client, stock, number, [{"sku": goods[0], "bin": "A-01-1", "good": 0,
                                            "damaged": 2}]).json()
    assert body["status"] == "received"
    assert body["lines"][0]["damaged"] == 2 and body["lines"][0]["received"] == 0
    assert cost_of(db, goods[0]) == 400
    with db.read_session() as session:
        assert session.exec(select(StockMovement).where(
            StockMovement.document_type == "purchase_order")).all() == []


def test_receipt_refusals(client, stock, goods, db):
    other = make_product(db, variants=[("Std", 1000, 0)])
    number = new_po(client, stock, [(goods[0], 5, 100)])["number"]

    assert field_locs(receive(client, stock, number, [
        {"sku": other.skus[0], "bin": "A-01-1", "good": 1},
        {"sku": goods[0], "bin": "Z-99", "good": 1}])) == [
        ["lines", "0", "sku"], ["lines", "1", "bin"]]
    assert field_locs(receive(client, stock, number, [
        {"sku": goods[0], "bin": "A-01-1", "good": 0, "damaged": 0}])) == [
        ["lines", "0", "damaged"]]
    assert field_locs(receive(client, stock, number, [
        {"sku": goods[0], "bin": "A-01-1", "good": -1}])) == [["lines", "0", "good"]]
    assert field_locs(receive(client, stock, number, [])) == [["lines"]]
    assert field_locs(receive(client, stock, number, [
        {"sku": goods[0], "bin": "PACK", "good": 1}])) == [["lines", "0", "bin"]]
    assert error_of(receive(client, stock, "PO-999999", [
        {"sku": goods[0], "bin": "A-01-1", "good": 1}]), 404)["code"] == "not_found"
    assert stock_of(db, other.variant_ids[0]).on_hand == 0
    assert client.get(f"/api/purchase-orders/{number}", headers=stock).json()["receipts"] == []


def test_purchase_order_refusals_name_each_bad_field(client, stock, goods):
    response = client.post("/api/purchase-orders", headers=stock, json={
        "supplier": "S", "warehouse": "NOPE", "lines": [
            {"sku": goods[0], "quantity": 1, "unit_cost_cents": 1},
            {"sku": "NO-SUCH", "quantity": 1, "unit_cost_cents": 1},
            {"sku": goods[0], "quantity": 2, "unit_cost_cents": 1}]})
    assert field_locs(response) == [["warehouse"], ["lines", "1", "sku"], ["lines", "2", "sku"]]
    response = client.post("/api/purchase-orders", headers=stock, json={
        "supplier": "  ", "warehouse": "TST", "lines": [
            {"sku": goods[0], "quantity": 0, "unit_cost_cents": -1}]})
    assert field_locs(response) == [["supplier"], ["lines", "0", "quantity"],
                                     ["lines", "0", "unit_cost_cents"]]
    response = client.post("/api/purchase-orders", headers=stock, json={
        "supplier": "S", "warehouse": "TST", "expected_at": "2026-12-01T09:00:00",
        "lines": [{"sku": goods[0], "quantity": 1, "unit_cost_cents": 1}]})
    assert field_locs(response) == [["expected_at"]]
    assert client.get("/api/purchase-orders", headers=stock).json()["total"] == 0
    assert error_of(client.get("/api/purchase-orders/PO-000404", headers=stock), 404)


def test_only_an_open_purchase_order_can_be_cancelled_and_nothing_arrives_after(
    client, stock, goods, db
):
    first = new_po(client, stock, [(goods[0], 5, 100)])["number"]
    response = client.post(f"/api/purchase-orders/{first}/cancel", headers=stock,
                           json={"reason": "supplier out of stock"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    refused = receive(client, stock, first, [{"sku": goods[0], "bin": "A-01-1", "good": 1}])
    assert error_of(refused, 409)["code"] == "conflict"
    assert error_of(client.post(f"/api/purchase-orders/{first}/cancel", headers=stock,
                                json={"reason": "again"}), 409)

    second = new_po(client, stock, [(goods[0], 5, 100)])["number"]
    receive(client, stock, second, [{"sku": goods[0], "bin": "A-01-1", "good": 1}])
    assert error_of(client.post(f"/api/purchase-orders/{second}/cancel", headers=stock,
                                json={"reason": "too late"}), 409)["code"] == "conflict"
    assert field_locs(client.post(f"/api/purchase-orders/{second}/cancel", headers=stock,
                                  json={"reason": " "})) == [["reason"]]
    assert [p["number"] for p in client.get(
        "/api/purchase-orders", params={"status": "cancelled"}, headers=stock).json()[
        "items"]] == [first]
    with db.read_session() as session:
        [entry] = session.exec(select(AuditEntry).where(
            AuditEntry.action == "stock.po_cancel")).all()
    assert (entry.before, entry.after) == ({"status": "open"}, {
        "status": "cancelled", "reason": "supplier out of stock"})


def test_concurrent_receipts_on_one_purchase_order_queue_and_add_up(client, stock, goods, db):
    import threading

    from conveyor import audit
    from fulfilment.receiving import ArrivedLine, receive_purchase_order

    number = new_po(client, stock, [(goods[1], 8, 1000)])["number"]
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            with db.unit_of_work() as uow:
                receive_purchase_order(uow=uow, actor=audit.Actor(email="racer@conveyor.test"),
                                       number=number,
                                       lines=[ArrivedLine(goods[1], "B-01", 1)])
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    po = client.get(f"/api/purchase-orders/{number}", headers=stock).json()
    assert (po["status"], po["lines"][0]["received"], len(po["receipts"])) == ("received", 8, 8)
    assert cost_of(db, goods[1]) == 1000
    with db.read_session() as session:
        assert session.exec(select(BinStock).join(
            Location, col(Location.id) == BinStock.location_id).where(
            Location.code == "B-01")).one().on_hand == 8
