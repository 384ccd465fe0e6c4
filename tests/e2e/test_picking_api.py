"""The warehouse floor over the admin API: waves, claims (raced over HTTP), scans, short
picks, packing, the packing slip, shipping; who may do what; every step audited; the handheld
page's files and their security headers."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import API, create_app
from admin.routes import warehouse
from conveyor.db import Database
from conveyor.settings import Settings
from models.audit import AuditEntry
from models.messaging import Email
from models.orders import Order, OrderStatus
from models.staff import Permission, Role, permissions_of
from tests.e2e.admin_client import bearer, login
from tests.factories import make_staff
from tests.integration.test_picking import (
    bin_,
    ledger_is_sound,
    lenient_screening,
    put,
    ready_order,
    reload,
    sku_of,
    variant,
)

WAREHOUSE_PERMISSIONS = (Permission.PICKING, Permission.SHIPPING)


@pytest.fixture
def client(db: Database, settings: Settings):
    lenient_screening(db)
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client
    ledger_is_sound(db)


def as_role(client: TestClient, db: Database, role: str, email: str | None = None
            ) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role, email=email)))


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def actions(db: Database) -> list[str]:
    with db.read_session() as session:
        return [e.action for e in session.exec(
            select(AuditEntry).where(col(AuditEntry.action).like("pick%")
                                     | col(AuditEntry.action).like("parcel.%"))
            .order_by(col(AuditEntry.id)))]


@pytest.fixture
def shop(db: Database, settings: Settings):
    """Two bins, a lamp (with barcode) and a mug; two ready orders."""
    near, far = bin_(db, "WH1", "A-01", 10), bin_(db, "WH1", "B-07", 70)
    lamp, mug = variant(db, "Desk Lamp", barcode="4006381333931"), variant(db, "Mug")
    put(db, lamp, near, 10)
    put(db, mug, far, 1)  # the book says 1
    first = ready_order(db, settings, [(lamp, 2), (mug, 1)])
    second = ready_order(db, settings, [(lamp, 1)])
    return {"lamp": sku_of(db, lamp), "mug": sku_of(db, mug), "orders": (first, second),
            "near": near}


def test_a_picker_and_a_packer_take_orders_from_wave_to_carrier(client, db, settings, shop):
    picker = as_role(client, db, "picker", email="pia@conveyor.test")
    lamp, mug = shop["lamp"], shop["mug"]
    first, second = shop["orders"]

    wave = ok(client.post("/api/picklists", json={"max_orders": 10}, headers=picker), 201)
    [summary] = wave["items"]
    assert (wave["orders"], summary["status"], summary["lines"], summary["units"]) == (
        2, "open", 2, 4)
    listed = ok(client.get("/api/picklists", params={"status": ["open"], "warehouse": "wh1"},
                           headers=picker))
    assert [p["id"] for p in listed["items"]] == [summary["id"]]
    list_id = summary["id"]
    detail = ok(client.get(f"/api/picklists/{list_id}", headers=picker))
    assert [(li["sequence"], li["bin"], li["sku"], li["barcode"], li["product_name"],
             li["quantity"], li["remaining"]) for li in detail["items"]] == [
        (1, "A-01", lamp, "4006381333931", "Desk Lamp", 3, 3),
        (2, "B-07", mug, None, "Mug", 1, 1)]
    assert sorted(detail["order_numbers"]) == sorted([first.number, second.number])

    claimed = ok(client.post(f"/api/picklists/{list_id}/claim", headers=picker))
    assert (claimed["status"], claimed["claimed_by"]) == ("claimed", "pia@conveyor.test")
    assert reload(db, first.id).status == OrderStatus.PICKING

    wrong = client.post(f"/api/picklists/{list_id}/scan", headers=picker,
                        json={"bin": "A-01", "code": mug, "quantity": 1})
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "wrong_item"
    assert "Wrong item" in wrong.json()["error"]["message"]
    assert lamp in wrong.json()["error"]["message"]
    too_many = client.post(f"/api/picklists/{list_id}/scan", headers=picker,
                           json={"bin": "A-01", "code": lamp, "quantity": 4})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "pick_refused"

    scanned = ok(client.post(f"/api/picklists/{list_id}/scan", headers=picker,
                             json={"bin": "a-01", "code": "4006381333931", "quantity": 3}))
    assert (scanned["line"]["picked"], scanned["line"]["done"], scanned["pick_list_status"]) \
        == (3, True, "claimed")
    mug_line = detail["items"][1]["id"]
    shorted = ok(client.post(f"/api/picklists/{list_id}/lines/{mug_line}/short",
                             headers=picker, json={"found": 0}))
    assert (shorted["short"], shorted["backordered"], shorted["bin_correction"],
            shorted["pick_list_status"]) == (1, {first.number: 1}, -1, "done")

    # The second order is all picked: pack and ship it.
    packed = ok(client.post(f"/api/orders/{second.number}/parcels", headers=picker,
                            json={"weight_grams": 800, "items": [{"sku": lamp, "quantity": 1}]}),
                201)
    assert packed["order_status"] == "packed"
    assert packed["items"] == [{"sku": lamp, "product_name": "Desk Lamp", "quantity": 1}]
    slip = client.get(f"/api/orders/{second.number}/packing-slip.pdf", headers=picker)
    assert slip.status_code == 200
    assert slip.headers["content-type"] == "application/pdf"
    assert slip.content.startswith(b"%PDF-")
    shipped = ok(client.post(f"/api/parcels/{packed['id']}/ship", headers=picker, json={
        "carrier": "DHL", "tracking_number": "JD014600006281230",
        "tracking_url": "https://www.dhl.com/track?id=JD014600006281230"}))
    assert (shipped["order_status"], shipped["carrier"]) == ("shipped", "DHL")
    with db.read_session() as session:
        [email] = session.exec(select(Email).where(Email.template == "order_shipped")).all()
    assert "https://www.dhl.com/track?id=JD014600006281230" in email.text_body

    # The first order waits for its backordered mug.
    state = ok(client.get(f"/api/orders/{first.number}/parcels", headers=picker))
    assert {s["sku"]: (s["picked"], s["backordered"]) for s in state["skus"]} == {
        lamp: (2, 0), mug: (0, 1)}
    ok(client.post(f"/api/orders/{first.number}/parcels", headers=picker,
                   json={"weight_grams": 900, "items": [{"sku": lamp, "quantity": 2}]}), 201)
    assert reload(db, first.id).status == OrderStatus.PICKING

    assert actions(db) == ["picklist.build", "picklist.claim", "picklist.scan",
                           "picklist.short", "parcel.pack", "parcel.ship", "parcel.pack"]
    with db.read_session() as session:
        scan_entry = session.exec(select(AuditEntry).where(
            AuditEntry.action == "picklist.scan")).one()
    assert scan_entry.actor_email == "pia@conveyor.test"
    assert scan_entry.after is not None and scan_entry.after["scanned"] == "4006381333931"


def test_two_pickers_claiming_over_http_at_once_one_gets_409(client, db, settings, shop):
    tokens = [as_role(client, db, "picker") for _ in range(4)]
    list_id = ok(client.post("/api/picklists", json={}, headers=tokens[0]), 201)["items"][0]["id"]
    barrier = threading.Barrier(len(tokens))
    statuses: list[int] = []

    def claim(headers: dict[str, str]) -> None:
        barrier.wait()
        statuses.append(client.post(f"/api/picklists/{list_id}/claim", headers=headers)
                        .status_code)

    threads = [threading.Thread(target=claim, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 409, 409, 409]


def test_a_claimed_list_is_handed_back_by_its_picker_or_by_stock_staff_and_picking_goes_on(
        client, db, settings, shop):
    # Given Pia claimed the list and picked the lamps
    pia = as_role(client, db, "picker", email="pia@conveyor.test")
    paul = as_role(client, db, "picker", email="paul@conveyor.test")
    sam = as_role(client, db, "stock", email="sam@conveyor.test")
    list_id = ok(client.post("/api/picklists", json={}, headers=pia), 201)["items"][0]["id"]
    ok(client.post(f"/api/picklists/{list_id}/claim", headers=pia))
    ok(client.post(f"/api/picklists/{list_id}/scan", headers=pia,
                   json={"bin": "A-01", "code": shop["lamp"], "quantity": 3}))

    # When another picker tries to hand it back, he may not
    refused = client.post(f"/api/picklists/{list_id}/release", headers=paul)
    assert refused.status_code == 409 and "pia@conveyor.test" in refused.text

    # When Pia hands it back, it is open again with the lamps still picked
    released = ok(client.post(f"/api/picklists/{list_id}/release", headers=pia))
    assert (released["status"], released["claimed_by"]) == ("open", "")
    assert [li["remaining"] for li in released["items"]] == [0, 1]
    assert ok(client.post(f"/api/picklists/{list_id}/release", headers=pia))["status"] == "open"

    # Then Paul claims it; stock staff may take it from him; Paul claims it again and finishes
    ok(client.post(f"/api/picklists/{list_id}/claim", headers=paul))
    assert ok(client.post(f"/api/picklists/{list_id}/release", headers=sam))["status"] == "open"
    ok(client.post(f"/api/picklists/{list_id}/claim", headers=paul))
    done = ok(client.post(f"/api/picklists/{list_id}/scan", headers=paul,
                          json={"bin": "B-07", "code": shop["mug"], "quantity": 1}))
    assert done["pick_list_status"] == "done"
    late = client.post(f"/api/picklists/{list_id}/release", headers=sam)
    assert late.status_code == 409 and "done" in late.text

    # And every hand-back is audited with who had the list
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(AuditEntry.action == "picklist.release")
                               .order_by(col(AuditEntry.id))).all()
    assert [(e.actor_email, e.before) for e in entries] == [
        ("pia@conveyor.test", {"claimed_by": "pia@conveyor.test"}),
        ("pia@conveyor.test", {"claimed_by": ""}),
        ("sam@conveyor.test", {"claimed_by": "paul@conveyor.test"})]


def test_bad_input_is_refused_with_4xx(client, db, settings, shop):
    picker = as_role(client, db, "picker")
    other = as_role(client, db, "picker")
    list_id = ok(client.post("/api/picklists", json={}, headers=picker), 201)["items"][0]["id"]
    line_id = ok(client.get(f"/api/picklists/{list_id}", headers=picker))["items"][0]["id"]
    number = shop["orders"][0].number
    cases = [
        ("POST", f"/api/picklists/{list_id}/scan", {"code": "X"}, 422),  # no line, no bin
        ("POST", f"/api/picklists/{list_id}/scan", {"line_id": line_id, "code": "X"}, 409),
        ("POST", "/api/picklists/999999/claim", None, 404),
        ("GET", "/api/picklists/0", None, 404),
        ("POST", "/api/picklists", {"max_orders": 0}, 422),
        ("POST", "/api/picklists", {"surprise": 1}, 422),
        ("POST", f"/api/picklists/{list_id}/lines/{line_id}/short", {"found": -1}, 422),
        ("POST", f"/api/orders/{number}/parcels", {"weight_grams": 0, "items": []}, 422),
        ("POST", f"/api/orders/{number}/parcels",
         {"weight_grams": 10, "items": [{"sku": shop["lamp"], "quantity": 1}]}, 409),
        ("POST", "/api/orders/CV-NOSUCH/parcels",
         {"weight_grams": 10, "items": [{"sku": "X", "quantity": 1}]}, 404),
        ("GET", "/api/orders/CV-NOSUCH/packing-slip.pdf", None, 404),
        ("POST", "/api/parcels/1/ship",
         {"carrier": "DHL", "tracking_number": "1", "tracking_url": "javascript:alert(1)"}, 422),
        ("POST", "/api/parcels/1/ship", {"carrier": "DHL", "tracking_number": "1"}, 404),
    ]
    for method, path, body, status in cases:
        response = client.request(method, path, json=body, headers=picker)
        assert response.status_code == status, (method, path, body, response.text)
        assert response.json()["error"]["message"]
    ok(client.post(f"/api/picklists/{list_id}/claim", headers=picker))
    taken = client.post(f"/api/picklists/{list_id}/claim", headers=other)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "conflict"
    assert "already" in taken.json()["error"]["message"]
    foreign = client.post(f"/api/picklists/{list_id}/scan", headers=other,
                          json={"line_id": line_id, "code": shop["lamp"]})
    assert foreign.status_code == 409


WAREHOUSE_ROUTES = warehouse.api.endpoints


def _sample(path: str) -> str:
    for name, value in {"number": "CV-NOSUCH1", "pick_list_id": "1", "line_id": "1",
                        "parcel_id": "1"}.items():
        path = path.replace("{" + name + "}", value)
    return path


@pytest.mark.parametrize("role", list(Role))
def test_each_role_may_use_the_warehouse_routes_exactly_as_its_permissions_say(
        client, db, role):
    headers = as_role(client, db, role)
    assert len(WAREHOUSE_ROUTES) == 12
    assert all(e in API.endpoints and e.access in WAREHOUSE_PERMISSIONS for e in WAREHOUSE_ROUTES)
    for endpoint in WAREHOUSE_ROUTES:
        response = client.request(endpoint.method, _sample(endpoint.path), headers=headers,
                                  json={})
        allowed = endpoint.access in permissions_of([role])
        assert (response.status_code == 403) != allowed, (
            f"{role} {endpoint.method} {endpoint.path}: {response.status_code}")
    if role in (Role.FINANCE, Role.REVIEWER):
        assert not any(e.access in permissions_of([role]) for e in WAREHOUSE_ROUTES)


def test_the_handheld_page_is_served_with_its_own_strict_policy(client):
    page = client.get("/picker")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert '<script src="/picker/static/picker.js" defer></script>' in page.text
    assert "<script>" not in page.text and "<style" not in page.text
    assert not re.search(r"\s(on[a-z]+|style)=", page.text)  # no inline handlers or styles
    script = client.get("/picker/static/picker.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "sessionStorage" in script.text and "innerHTML" not in script.text
    assert client.get("/picker/static/picker.css").headers["content-type"].startswith("text/css")
    for missing in ("/picker/static/secret.py", "/picker/static/..%2Fapp.py",
                    "/picker/static/picker.html"):
        response = client.get(missing)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_a_wave_never_exceeds_the_configured_size(db, settings):
    lenient_screening(db)
    small = settings.model_copy(update={"pick_wave_max_orders": 1})
    shelf = bin_(db, "WH1", "A-01", 10)
    cup = variant(db, "Cup")
    put(db, cup, shelf, 5)
    orders = [ready_order(db, settings, [(cup, 1)]) for _ in range(2)]
    with TestClient(create_app(small, db=db)) as client:
        headers = as_role(client, db, "stock")
        wave = ok(client.post("/api/picklists", json={"max_orders": 50}, headers=headers), 201)
    assert wave["orders"] == 1
    with db.read_session() as session:
        oldest = session.get(Order, orders[0].id)
        assert oldest is not None and oldest.status == OrderStatus.ALLOCATED
    ledger_is_sound(db)
