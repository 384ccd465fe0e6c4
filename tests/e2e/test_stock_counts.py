"""Cycle counts on the admin API: blind counting sheets, the review of variances, posting them
as adjustments (large ones for a second person), refusals; ledger exact after each test."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select
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
from models.inventory import Location, MovementKind, StockItem, StockMovement
from models.warehouse import CycleCountLine, StockAdjustment
from tests.e2e.admin_client import bearer, login
from tests.factories import make_pending_order, make_product, make_staff, stock_of

BOOK_WORDS = ("expected", "book", "on_hand", "allocated", "variance", "available", "quantity")


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
def counter(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "stock", email="cora@conveyor.test")))


@pytest.fixture
def supervisor(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "admin", email="sue@conveyor.test")))


@pytest.fixture
def shelf(db: Database) -> dict[str, Any]:
    """TST/A-01-1 holds 10 mugs (cost 300) and 6 plates (cost 2000); TST/B-01 holds 4 mugs."""
    made = make_product(db, name="Crockery", variants=[("Mug", 900, 10), ("Plate", 1500, 6)])
    mug, plate = made.variant_ids
    with db.unit_of_work() as uow:
        a01 = uow.session.exec(select(Location).where(Location.code == "A-01-1")).one()
        b01 = Location(warehouse_id=a01.warehouse_id, code="B-01", pick_sequence=20)
        uow.session.add(b01)
        uow.flush()
        assert b01.id is not None
        receive_stock(uow=uow, variant_id=mug, location_id=b01.id, quantity=4, actor="test")
        for variant_id, cost in ((mug, 300), (plate, 2000)):
            item = uow.session.get(StockItem, variant_id)
            assert item is not None
            item.unit_cost_cents = cost
    return {"mug": made.skus[0], "plate": made.skus[1], "mug_id": mug, "plate_id": plate,
            "a01": a01.id}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def field_locs(response: Any) -> list[list[str]]:
    return [f["loc"] for f in error_of(response, 422)["details"]["fields"]]


def start(client: TestClient, headers: dict[str, str], **scope: Any) -> dict[str, Any]:
    response = client.post("/api/stock/counts", headers=headers,
                           json={"warehouse": "TST", **scope})
    assert response.status_code == 201, response.text
    return dict(response.json())


def record(client: TestClient, headers: dict[str, str], count: dict[str, Any],
           found: dict[tuple[str, str], int]) -> Any:
    lines = {(line["bin"], line["sku"]): line["line_id"] for line in count["lines"]}
    return client.post(f"/api/stock/counts/{count['id']}/counts", headers=headers, json={
        "counts": [{"line_id": lines[key], "counted": n} for key, n in found.items()]})


def keys_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def test_the_counting_sheet_is_blind(client, counter, shelf, db):
    count = start(client, counter)

    assert [(line["bin"], line["sku"], line["counted"]) for line in count["lines"]] == [
        ("A-01-1", shelf["mug"], None), ("A-01-1", shelf["plate"], None),
        ("B-01", shelf["mug"], None)]
    assert (count["status"], count["lines_total"], count["lines_counted"]) == ("open", 3, 0)
    sheet = client.get(f"/api/stock/counts/{count['id']}", headers=counter).json()
    assert sheet == count
    for view in (count, sheet):
        assert not [k for k in keys_in(view) if any(w in k for w in BOOK_WORDS)]
    recorded = record(client, counter, count, {("A-01-1", shelf["mug"]): 9})
    assert recorded.status_code == 200, recorded.text
    assert not [k for k in keys_in(recorded.json()) if any(w in k for w in BOOK_WORDS)]
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(
            AuditEntry.action.in_(("stock.count_create", "stock.count_record")))).all()
        assert len(entries) == 2
        assert not [k for e in entries for k in keys_in(e.after)
                    if any(w in k for w in BOOK_WORDS)]
    # The review (with book quantities) stays closed until every line is counted.
    review = client.get(f"/api/stock/counts/{count['id']}/review", headers=counter)
    assert "2 line(s) are not counted" in error_of(review, 409)["message"]
    assert error_of(client.post(f"/api/stock/counts/{count['id']}/post", headers=counter), 409)


def test_posting_turns_small_variances_into_count_corrections_at_once(
    client, counter, supervisor, shelf, db
):
    count = start(client, counter, bins=["A-01-1"])
    assert len(count["lines"]) == 2
    record(client, counter, count, {("A-01-1", shelf["mug"]): 8,  # 2 x 300 = 600 missing
                                    ("A-01-1", shelf["plate"]): 6})

    review = client.get(f"/api/stock/counts/{count['id']}/review", headers=counter).json()
    assert [(r["sku"], r["book"], r["counted"], r["variance"], r["value_cents"],
             r["needs_approval"]) for r in review["lines"]] == [
        (shelf["mug"], 10, 8, -2, -600, False), (shelf["plate"], 6, 6, 0, 0, False)]
    assert (review["variance_units"], review["variance_value_cents"]) == (-2, -600)

    posted = client.post(f"/api/stock/counts/{count['id']}/post", headers=counter)

    assert posted.status_code == 200, posted.text
    assert posted.json()["status"] == "posted"
    [mug_line, _] = posted.json()["lines"]
    assert mug_line["adjustment_status"] == "applied"
    assert stock_of(db, shelf["mug_id"]).on_hand == 12  # 14 - 2
    with db.read_session() as session:
        movement = session.exec(select(StockMovement).where(
            StockMovement.kind == MovementKind.COUNT_CORRECTION)).one()
        adjustment = session.exec(select(StockAdjustment)).one()
        stored = sorted(line.expected for line in session.exec(select(CycleCountLine)))
    assert (movement.on_hand_delta, movement.location_id, movement.document_type,
            movement.document_id) == (-2, shelf["a01"], "cycle_count", str(count["id"]))
    assert (adjustment.reason, adjustment.cycle_count_id, adjustment.quantity_delta,
            adjustment.value_cents) == ("correction", count["id"], -2, 600)
    assert stored == [6, 10]
    again = client.post(f"/api/stock/counts/{count['id']}/post", headers=counter)
    assert error_of(again, 409)["code"] == "conflict"
    assert client.get(f"/api/stock/counts/{count['id']}/review", headers=counter).json()[
        "lines"][0]["book"] == 10


def test_large_variances_wait_for_a_second_person(client, counter, supervisor, shelf, db):
    count = start(client, counter, skus=[shelf["plate"]])
    record(client, counter, count, {("A-01-1", shelf["plate"]): 3})  # 3 x 2000 = 6000 > 5000
    review = client.get(f"/api/stock/counts/{count['id']}/review", headers=counter).json()
    assert review["lines"][0]["needs_approval"] is True

    posted = client.post(f"/api/stock/counts/{count['id']}/post", headers=counter).json()

    [line] = posted["lines"]
    assert line["adjustment_status"] == "pending_approval"
    assert stock_of(db, shelf["plate_id"]).on_hand == 6
    own = client.post(f"/api/stock/adjustments/{line['adjustment_id']}/approve",
                      headers=counter)
    assert error_of(own, 403)["details"]["reason"] == "second_person_required"
    approved = client.post(f"/api/stock/adjustments/{line['adjustment_id']}/approve",
                           headers=supervisor)
    assert approved.status_code == 200, approved.text
    assert stock_of(db, shelf["plate_id"]).on_hand == 3
    with db.read_session() as session:
        movement = session.exec(select(StockMovement).where(
            StockMovement.kind == MovementKind.COUNT_CORRECTION)).one()
    assert (movement.on_hand_delta, movement.actor) == (-3, "sue@conveyor.test")
    listed = client.get("/api/stock/adjustments", params={"cycle_count_id": count["id"]},
                        headers=counter).json()["items"]
    assert [(a["status"], a["cycle_count_id"]) for a in listed] == [("applied", count["id"])]


def test_stock_that_moves_after_counting_is_not_a_variance(client, counter, shelf, db):
    count = start(client, counter, bins=["B-01"])
    record(client, counter, count, {("B-01", shelf["mug"]): 3})  # one missing
    with db.unit_of_work() as uow:  # then a delivery lands in the bin
        receive_stock(uow=uow, variant_id=shelf["mug_id"], location_id=count_bin(db, "B-01"),
                      quantity=5, actor="test")

    review = client.get(f"/api/stock/counts/{count['id']}/review", headers=counter).json()
    assert [(r["book"], r["counted"], r["variance"]) for r in review["lines"]] == [(4, 3, -1)]
    client.post(f"/api/stock/counts/{count['id']}/post", headers=counter)
    with db.read_session() as session:
        [b01] = [s for s in session.exec(select(StockMovement).where(
            StockMovement.variant_id == shelf["mug_id"]))
                 if s.kind == MovementKind.COUNT_CORRECTION]
    assert b01.on_hand_delta == -1
    assert stock_of(db, shelf["mug_id"]).on_hand == 10 + 4 + 5 - 1


def count_bin(db: Database, code: str) -> int:
    with db.read_session() as session:
        location = session.exec(select(Location).where(Location.code == code)).one()
        assert location.id is not None
        return location.id


def test_a_variance_that_would_take_allocated_units_is_refused_and_nothing_posts(
    client, counter, shelf, db
):
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, lines=[LineRequest(shelf["plate_id"], 5)],
                      until=utcnow() + timedelta(minutes=15))
    with db.unit_of_work() as uow:
        allocate_order_stock(uow=uow, order_id=order_id)
    count = start(client, counter, bins=["A-01-1"])
    record(client, counter, count, {("A-01-1", shelf["mug"]): 9,
                                    ("A-01-1", shelf["plate"]): 2})

    refused = client.post(f"/api/stock/counts/{count['id']}/post", headers=counter)

    error = error_of(refused, 409)
    assert error["code"] == "stock_conflict"
    assert error["message"].startswith(f"{shelf['plate']} in A-01-1 (counted 2, book 6): ")
    assert "set aside for orders" in error["message"]
    assert (stock_of(db, shelf["mug_id"]).on_hand, stock_of(db, shelf["plate_id"]).on_hand) == (
        14, 6)
    with db.read_session() as session:
        assert session.exec(select(StockAdjustment)).all() == []
    sheet = client.get(f"/api/stock/counts/{count['id']}", headers=counter).json()
    assert sheet["status"] == "open"


def test_count_refusals(client, counter, shelf):
    assert field_locs(client.post("/api/stock/counts", headers=counter, json={
        "warehouse": "TST", "bins": ["Z-1", "A-01-1"], "skus": ["NO-SUCH"]})) == [
        ["bins", "0"], ["skus", "0"]]
    assert field_locs(client.post("/api/stock/counts", headers=counter,
                                  json={"warehouse": "NOPE"})) == [["warehouse"]]
    assert field_locs(client.post("/api/stock/counts", headers=counter,
                                  json={"warehouse": "TST", "bins": ["bad code!"]})) == [
        ["bins", "0"]]
    empty = client.post("/api/warehouses/TST/bins", headers=counter, json={"code": "E-1"})
    assert empty.status_code == 201
    assert error_of(client.post("/api/stock/counts", headers=counter, json={
        "warehouse": "TST", "bins": ["E-1"]}), 422)["details"]["fields"][0]["type"] == (
        "empty_scope")

    count = start(client, counter, bins=["B-01"])
    overlap = client.post("/api/stock/counts", headers=counter,
                          json={"warehouse": "TST", "skus": [shelf["mug"]]})
    assert "another open count" in error_of(overlap, 409)["message"]
    assert field_locs(client.post(f"/api/stock/counts/{count['id']}/counts", headers=counter,
                                  json={"counts": [{"line_id": 999999, "counted": 1}]})) == [
        ["counts", "0", "line_id"]]
    line_id = count["lines"][0]["line_id"]
    assert field_locs(client.post(f"/api/stock/counts/{count['id']}/counts", headers=counter,
                                  json={"counts": [{"line_id": line_id, "counted": -1}]})) == [
        ["counts", "0", "counted"]]
    assert field_locs(client.post(f"/api/stock/counts/{count['id']}/counts", headers=counter,
                                  json={"counts": [{"line_id": line_id, "counted": 1},
                                                   {"line_id": line_id, "counted": 2}]})) == [
        ["counts"]]
    assert error_of(client.get("/api/stock/counts/999999", headers=counter), 404)

    cancelled = client.post(f"/api/stock/counts/{count['id']}/cancel", headers=counter,
                            json={"reason": "wrong shelf"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert error_of(record(client, counter, count, {("B-01", shelf["mug"]): 4}), 409)
    start(client, counter, skus=[shelf["mug"]])  # free to count again
    listed = client.get("/api/stock/counts", headers=counter).json()["items"]
    assert [(c["status"], c["lines_total"]) for c in listed] == [("open", 2), ("cancelled", 1)]
    assert [c["status"] for c in client.get("/api/stock/counts", params={
        "status": "cancelled"}, headers=counter).json()["items"]] == ["cancelled"]
