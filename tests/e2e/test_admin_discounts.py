"""The discount desk on the admin API: create, edit, pause and resume, list, usage report; every
change audited; only admins may use it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from fulfilment.discounts import DiscountRefused
from models.audit import AuditEntry
from models.staff import Role
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "admin", email="boss@conveyor.test")))


def entries(db: Database) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(
            AuditEntry.target_type == "discount_code").order_by(col(AuditEntry.id))))


def create(client: TestClient, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"code": "spring-25", "kind": "percent", "value": 2500}
    payload.update(body)
    response = client.post("/api/discounts", json=payload, headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_an_admin_creates_edits_pauses_and_resumes_a_code_and_each_step_is_audited(
    client, admin, db
):
    made = make_product(db, category="Lamps", variants=[("Brass", 4000, 5)])
    created = create(client, admin, description="Spring sale", min_spend_cents=5000,
                     usage_limit=100, per_customer_limit=1, product_ids=[made.product_id],
                     starts_at="2026-03-01T00:00:00+01:00", ends_at="2026-04-01T00:00:00Z")
    assert created["code"] == "SPRING-25" and created["created_by"] == "boss@conveyor.test"
    assert created["starts_at"].startswith("2026-02-28T23:00:00")
    assert created["usage"] == {"uses": 0, "awaiting_payment": 0, "released": 0,
                                "customers": 0, "discount_cents": 0, "revenue_cents": 0,
                                "remaining": 100}

    patched = client.patch("/api/discounts/spring-25", headers=admin,
                           json={"value": 3000, "usage_limit": None, "ends_at": None})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["value"], patched.json()["usage_limit"],
            patched.json()["ends_at"]) == (3000, None, None)
    assert patched.json()["usage"]["remaining"] is None

    paused = client.post("/api/discounts/SPRING-25/pause", headers=admin)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    listed = client.get("/api/discounts", params={"paused": "true"}, headers=admin).json()
    assert [c["code"] for c in listed["items"]] == ["SPRING-25"]
    resumed = client.post("/api/discounts/SPRING-25/resume", headers=admin)
    assert resumed.json()["paused"] is False
    assert client.get("/api/discounts", params={"paused": "true"},
                      headers=admin).json()["items"] == []

    found = entries(db)
    assert [e.action for e in found] == ["discount.create", "discount.update",
                                         "discount.pause", "discount.resume"]
    assert all(e.actor_email == "boss@conveyor.test" and e.target_id == "SPRING-25"
               and e.outcome == "ok" for e in found)
    assert (found[1].before["value"], found[1].after["value"]) == (2500, 3000)
    assert (found[1].before["usage_limit"], found[1].after["usage_limit"]) == (100, None)


def test_bad_settings_get_the_one_error_shape_and_change_nothing(client, admin, db):
    create(client, admin, code="TEN")
    cases = [
        ({"code": "ten", "kind": "fixed", "value": 100}, 409, "conflict"),
        ({"code": "HUGE", "kind": "percent", "value": 10_001}, 422, "invalid_input"),
        ({"code": "BAD CODE", "kind": "fixed", "value": 100}, 422, "invalid_input"),
        ({"code": "LATE", "kind": "fixed", "value": 100, "starts_at": "2026-05-01T00:00:00Z",
          "ends_at": "2026-04-01T00:00:00Z"}, 422, "invalid_input"),
        ({"code": "NOPRODUCT", "kind": "fixed", "value": 100, "product_ids": [999]}, 422,
         "invalid_discount"),
        ({"code": "EXTRA", "kind": "fixed", "value": 100, "surprise": 1}, 422,
         "invalid_input"),
    ]
    for body, status, code in cases:
        response = client.post("/api/discounts", json=body, headers=admin)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["code"] == code, body
    switch = client.patch("/api/discounts/TEN", json={"kind": "fixed", "value": 20_000},
                          headers=admin)
    assert switch.status_code == 200  # 200 € off is a fine fixed amount
    too_much = client.patch("/api/discounts/TEN", json={"kind": "percent"}, headers=admin)
    assert too_much.status_code == 422
    assert too_much.json()["error"]["code"] == "invalid_discount"
    assert client.patch("/api/discounts/TEN", json={}, headers=admin).status_code == 422
    assert client.get("/api/discounts/NOSUCH", headers=admin).status_code == 404
    listed = client.get("/api/discounts", headers=admin).json()["items"]
    assert [(c["code"], c["kind"], c["value"]) for c in listed] == [("TEN", "fixed", 20_000)]
    assert [e.action for e in entries(db)] == ["discount.create", "discount.update"]


def test_the_usage_report_counts_uses_customers_discount_and_revenue(
    client, admin, db, settings
):
    lamp = make_product(db, variants=[("Brass", 4000, 20)]).variant_ids[0]
    create(client, admin, code="TENOFF", kind="fixed", value=1000, usage_limit=5)
    first = shopping.bought(db, settings, [(lamp, 1)], email="ada@example.com",
                            discount_code="tenoff")
    second = shopping.bought(db, settings, [(lamp, 2)], email="bo@example.com",
                             discount_code="TENOFF")
    cart_id, view = shopping.cart(db, [(lamp, 1)])
    waiting = shopping.place(db, settings, cart_id, view,
                             details=shopping.details_for("Ada@example.com",
                                                          discount_code="TENOFF"))

    report = client.get("/api/discounts/TENOFF", headers=admin).json()["usage"]
    assert report == {
        "uses": 3, "awaiting_payment": 1, "released": 0, "customers": 2,
        "discount_cents": 3000,
        "revenue_cents": first.total_cents + second.total_cents + waiting.total_cents,
        "remaining": 2,
    }
    order = client.get(f"/api/orders/{second.number}", headers=admin).json()
    assert (order["totals"]["discount_code"], order["totals"]["discount_cents"]) == (
        "TENOFF", 1000)
    assert [line["discount_cents"] for line in order["lines"]] == [1000]


def test_a_paused_code_is_refused_at_checkout(client, admin, db, settings):
    mug = make_product(db, variants=[("Std", 1000, 5)]).variant_ids[0]
    create(client, admin, code="HOLD")
    assert client.post("/api/discounts/HOLD/pause", headers=admin).status_code == 200
    cart_id, view = shopping.cart(db, [(mug, 1)])
    with pytest.raises(DiscountRefused, match="cannot be used at the moment"):
        shopping.place(db, settings, cart_id, view,
                       details=shopping.details_for("ada@example.com", discount_code="hold"))


@pytest.mark.parametrize("role", [r for r in Role if r != Role.ADMIN])
def test_only_admins_manage_discount_codes(client, db, role):
    token = bearer(login(client, make_staff(db, role)))
    for method, path in (("GET", "/api/discounts"), ("POST", "/api/discounts"),
                         ("GET", "/api/discounts/X"), ("PATCH", "/api/discounts/X"),
                         ("POST", "/api/discounts/X/pause"),
                         ("POST", "/api/discounts/X/resume")):
        response = client.request(method, path, headers=token, json={})
        assert response.status_code == 403, (role, method, path)
        assert response.json()["error"]["details"] == {"needs": "discounts:manage"}
