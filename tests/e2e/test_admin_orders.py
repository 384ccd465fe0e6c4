"""The order desk on the admin API: lists, filters, sorting, cursors, one order in full, payments,
notes, cancellation and CSV export, against PostgreSQL and localstripe."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import col, select, update
from starlette.testclient import TestClient

from admin import orders as desk
from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from models.audit import AuditEntry
from models.inventory import Reservation, ReservationStatus
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderEvent, OrderStatus
from storefront import checkout
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import MadeProduct, make_pending_order, make_product, make_staff, stock_of
from tests.helpers import CARD_DECLINED, wait_for

DAY = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SOME_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "admin")))


def as_role(client: TestClient, db: Database, role: str) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role)))


def set_order(db: Database, order_id: uuid.UUID, **values: Any) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(update(Order).where(col(Order.id) == order_id).values(**values))


def an_order(db: Database, *, created_at: datetime, total_cents: int = 1000,
             email: str = "shopper@example.com", status: str = OrderStatus.PENDING_PAYMENT,
             **values: Any) -> str:
    """A bare order as of `created_at`; returns its number."""
    order_id = make_pending_order(db, email=email, total_cents=total_cents)
    set_order(db, order_id, created_at=created_at, status=status, **values)
    with db.read_session() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order.number


def numbers(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["number"] for item in response.json()["items"]]


def audit_entries(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)
                                 .order_by(col(AuditEntry.id))))


def paid_order(db: Database, settings: Settings, *,
               declined_first: bool = False) -> tuple[Order, MadeProduct]:
    """An order placed and authorised through the storefront's services: two lines (2 and 1
    units of 6 in stock), optionally after a declined first card."""
    product = make_product(db, name="Desk Lamp", variants=[("Blue", 2490, 6), ("Red", 1990, 6)])
    blue, red = product.variant_ids
    cart_id, view = shopping.cart(db, [(blue, 2), (red, 1)])
    order = shopping.place(db, settings, cart_id, view)
    if declined_first:
        declined = shopping.pay(db, settings, order.id, CARD_DECLINED)
        assert declined.outcome == checkout.Outcome.DECLINED
        order = shopping.place(db, settings, cart_id, view, pending=order.id)
    assert shopping.pay(db, settings, order.id).outcome == checkout.Outcome.AUTHORIZED
    with db.read_session() as session:
        paid = session.get(Order, order.id)
        assert paid is not None and paid.status == OrderStatus.AUTHORIZED
        return paid, product


# -- lists and filters --------------------------------------------------------------------------


@pytest.fixture
def five_orders(db: Database) -> dict[str, str]:
    """A to E, a day apart from DAY on, with growing totals; B and D share an email."""
    specs = {
        "A": (1000, "a@example.com", OrderStatus.PENDING_PAYMENT),
        "B": (2500, "B@Example.com", OrderStatus.AUTHORIZED),
        "C": (5000, "c@example.com", OrderStatus.CANCELLED),
        "D": (7500, "b@example.com", OrderStatus.SHIPPED),
        "E": (12000, "e@example.com", OrderStatus.AUTHORIZED),
    }
    return {key: an_order(db, created_at=DAY + timedelta(days=i), total_cents=total,
                          email=email, status=status)
            for i, (key, (total, email, status)) in enumerate(specs.items())}


@pytest.mark.parametrize(("params", "expected"), [
    ({}, "EDCBA"),
    ({"status": "authorized"}, "EB"),
    ({"status": ["authorized", "cancelled"]}, "ECB"),
    ({"created_from": "2026-03-02T10:00:00Z"}, "EDCB"),  # inclusive
    ({"created_from": "2026-03-02T11:00:00+02:00"}, "EDCB"),  # 09:00 UTC: the offset counts
    ({"created_to": "2026-03-03T10:00:00+00:00"}, "BA"),  # exclusive
    ({"created_from": "2026-03-02T00:00:00Z", "created_to": "2026-03-04T00:00:00Z"}, "CB"),
    ({"email": " b@EXAMPLE.com "}, "DB"),  # trimmed, any case
    ({"email": "nobody@example.com"}, ""),
    ({"total_min_cents": 2500, "total_max_cents": 7500}, "DCB"),  # both inclusive
    ({"total_min_cents": 5001}, "ED"),
    ({"total_max_cents": 999}, ""),
    ({"status": "authorized", "total_min_cents": 3000}, "E"),
    ({"created_from": "0001-01-01T00:00:00Z", "created_to": "9999-12-31T23:59:59Z"}, "EDCBA"),
    ({"total_max_cents": 2_147_483_647}, "EDCBA"),  # the largest total a column holds
])
def test_each_filter_narrows_the_list(client, admin, five_orders, params, expected):
    response = client.get("/api/orders", params=params, headers=admin)
    assert numbers(response) == [five_orders[key] for key in expected]
    assert response.json()["next_cursor"] is None


def test_the_number_filter_finds_one_order_whatever_the_case(client, admin, five_orders):
    wanted = five_orders["C"]
    response = client.get("/api/orders", params={"number": f" {wanted.lower()}"},
                          headers=admin)
    assert response.status_code == 422  # a space is not part of any order number
    assert numbers(client.get("/api/orders", params={"number": wanted.lower()},
                              headers=admin)) == [wanted]


def test_list_items_summarise_each_order(client, admin, db):
    number = an_order(db, created_at=DAY, total_cents=4200, email="ada@example.com",
                      status=OrderStatus.AUTHORIZED, authorized_at=DAY + timedelta(minutes=1))
    [item] = client.get("/api/orders", headers=admin).json()["items"]
    assert item == {
        "number": number, "status": "authorized", "created_at": "2026-03-01T10:00:00Z",
        "authorized_at": "2026-03-01T10:01:00Z", "email": "ada@example.com",
        "full_name": "Test Shopper", "country": "DE", "total_cents": 4200, "currency": "EUR",
    }


@pytest.fixture
def shuffled_orders(db: Database) -> list[dict[str, Any]]:
    """Seven orders whose creation times and totals are in neither creation nor number order,
    with ties in both so that the id has to break them."""
    minutes = [30, 10, 50, 10, 20, 60, 40]
    totals = [3000, 1000, 2000, 2000, 5000, 1000, 2000]
    made = []
    for minute, total in zip(minutes, totals, strict=True):
        created = DAY + timedelta(minutes=minute)
        number = an_order(db, created_at=created, total_cents=total)
        made.append({"number": number, "created_at": created, "total_cents": total})
    with db.read_session() as session:
        ids = {o.number: o.id for o in session.exec(select(Order))}
    for order in made:
        order["id"] = ids[order["number"]]
    return made


def expected_order(orders: list[dict[str, Any]], sort: str) -> list[str]:
    key = sort.lstrip("-")
    ranked = sorted(orders, key=lambda o: (o[key], o["id"]), reverse=sort.startswith("-"))
    return [o["number"] for o in ranked]


@pytest.mark.parametrize("sort", ["created_at", "-created_at", "total_cents", "-total_cents",
                                  "number", "-number"])
def test_sorting_works_both_ways_with_ties_broken_by_id(client, admin, shuffled_orders, sort):
    response = client.get("/api/orders", params={"sort": sort}, headers=admin)
    assert numbers(response) == expected_order(shuffled_orders, sort)


def test_the_newest_orders_come_first_by_default(client, admin, shuffled_orders):
    assert numbers(client.get("/api/orders", headers=admin)) == expected_order(
        shuffled_orders, "-created_at")


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "total_cents", "-total_cents",
                                  "number", "-number"])
def test_cursor_pages_give_every_order_exactly_once_in_order(client, admin, shuffled_orders,
                                                               sort):
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        params: dict[str, Any] = {"sort": sort, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/orders", params=params, headers=admin)
        seen += numbers(page)
        sizes.append(len(page.json()["items"]))
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == expected_order(shuffled_orders, sort)


def test_an_order_arriving_between_pages_neither_repeats_nor_skips_rows(
    client, admin, db, shuffled_orders
):
    first = client.get("/api/orders", params={"limit": 3}, headers=admin).json()
    newest = an_order(db, created_at=DAY + timedelta(days=1))
    rest: list[str] = []
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/api/orders", params={"limit": 3, "cursor": cursor},
                          headers=admin).json()
        rest += [item["number"] for item in page["items"]]
        cursor = page["next_cursor"]
    listed = [item["number"] for item in first["items"]] + rest
    assert listed == expected_order(shuffled_orders, "-created_at")
    assert newest not in listed


def _cursor(raw: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")


CREATED = "2026-03-01T10:00:00+00:00"


@pytest.mark.parametrize(("sort", "cursor"), [
    pytest.param("-created_at", "garbage!", id="not-base64"),
    pytest.param("-created_at", "not-base64-json", id="not-json"),
    pytest.param("-created_at", _cursor([1, 2, 3]), id="a-list"),
    pytest.param("-created_at", _cursor("-created_at"), id="a-string"),
    pytest.param("-created_at", _cursor({"s": "-created_at", "v": CREATED}), id="no-id"),
    pytest.param("-created_at", _cursor({"s": "-created_at", "v": "yesterday", "i": SOME_ID}),
                 id="bad-time"),
    pytest.param("-created_at", _cursor({"s": "-created_at", "v": None, "i": SOME_ID}),
                 id="null-time"),
    pytest.param("-created_at", _cursor({"s": "-created_at", "v": "2026-03-01T10:00:00",
                                         "i": SOME_ID}), id="naive-time"),
    pytest.param("-created_at", _cursor({"s": "-created_at", "v": CREATED, "i": "not-a-uuid"}),
                 id="bad-id"),
    pytest.param("-created_at", _cursor({"s": "-created_at", "v": CREATED, "i": 5}),
                 id="number-id"),
    pytest.param("-total_cents", _cursor({"s": "-total_cents", "v": "lots", "i": SOME_ID}),
                 id="text-total"),
    pytest.param("-total_cents", _cursor({"s": "-total_cents", "v": float("inf"),
                                          "i": SOME_ID}), id="infinite-total"),
    pytest.param("-total_cents", _cursor({"s": "total_cents", "v": 100, "i": SOME_ID}),
                 id="other-sort"),
])
def test_a_cursor_that_is_not_valid_for_the_list_is_refused_with_422(client, admin, sort,
                                                                     cursor):
    response = client.get("/api/orders", params={"cursor": cursor, "sort": sort},
                          headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_cursor"
    assert "start again" in error["message"]


def test_a_cursor_of_one_sort_is_refused_for_another(client, admin, shuffled_orders):
    page = client.get("/api/orders", params={"sort": "total_cents", "limit": 2}, headers=admin)
    cursor = page.json()["next_cursor"]
    assert cursor
    response = client.get("/api/orders", params={"sort": "-total_cents", "cursor": cursor},
                          headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(("params", "field"), [  # every problem is named by its field
    ({"created_from": "2026-03-01T10:00:00"}, "created_from"),  # naive: which timezone?
    ({"created_to": "2026-03-01T10:00:00.5"}, "created_to"),
    ({"created_from": "last tuesday"}, "created_from"),
    ({"status": "lost"}, "status"),
    ({"sort": "email"}, "sort"),
    ({"limit": 0}, "limit"),
    ({"limit": 201}, "limit"),
    ({"total_min_cents": -1}, "total_min_cents"),
    ({"total_min_cents": 2**31}, "total_min_cents"),  # beyond any total: not a server error
    ({"total_max_cents": 10**25}, "total_max_cents"),
    ({"created_from": "0001-01-01T00:00:00+14:00"}, "created_from"),  # before UTC's first
    ({"created_to": "9999-12-31T23:59:59-14:00"}, "created_to"),  # after the last
    ({"number": "CV-1;DROP"}, "number"),
    ({"format": "xml"}, "format"),
    ({"colour": "red"}, "colour"),  # unknown parameters are refused, not ignored
])
def test_bad_query_parameters_give_422_with_field_details(client, admin, params, field):
    response = client.get("/api/orders", params=params, headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    fields = error["details"]["fields"]
    assert [f["loc"][:1] for f in fields] == [[field]]


def test_naive_datetimes_are_refused_with_a_hint_about_the_offset(client, admin):
    response = client.get("/api/orders", params={"created_from": "2026-03-01T10:00:00"},
                          headers=admin)
    assert response.status_code == 422
    [problem] = response.json()["error"]["details"]["fields"]
    assert "UTC offset" in problem["message"]


# -- one order ----------------------------------------------------------------------------------


def test_the_detail_of_an_authorised_order_shows_everything_around_it(client, admin, db,
                                                                      settings):
    order, product = paid_order(db, settings, declined_first=True)
    blue, red = product.variant_ids

    response = client.get(f"/api/orders/{order.number.lower()}", headers=admin)

    assert response.status_code == 200, response.text
    detail = response.json()
    assert (detail["number"], detail["status"]) == (order.number, "authorized")
    assert detail["authorized_at"] is not None and detail["reservation_expires_at"] is None
    assert detail["shipping_method"] == order.shipping_method_name
    assert detail["customer"] == {"email": "ada@example.com", "full_name": "Ada Lovelace",
                                  "phone": order.phone}
    assert detail["shipping_address"] == {
        "full_name": "Ada Lovelace", "address": "Unter den Linden 1", "city": "Berlin",
        "postal_code": "10117", "country": "DE"}
    assert detail["totals"] == {
        "currency": "EUR", "subtotal_cents": 2 * 2490 + 1990, "discount_code": None,
        "discount_cents": 0, "shipping_cents": order.shipping_cents,
        "tax_rate_bps": order.tax_rate_bps, "tax_cents": order.tax_cents,
        "total_cents": order.total_cents}
    assert order.total_cents == (order.subtotal_cents - order.discount_cents
                                 + order.shipping_cents + order.tax_cents)
    lines = {line["variant_id"]: line for line in detail["lines"]}
    assert lines[blue] == {
        "variant_id": blue, "sku": product.skus[0], "product_name": "Desk Lamp",
        "variant_name": "Blue", "unit_price_cents": 2490, "quantity": 2, "line_total_cents": 4980,
        "discount_cents": 0}
    assert (lines[red]["quantity"], lines[red]["line_total_cents"]) == (1, 1990)

    payment = detail["payment"]
    assert payment["status"] == "authorized" and payment["attempts"] == 2
    assert (payment["card_brand"], payment["card_last4"]) == ("Visa", "4242")
    assert (payment["amount_cents"], payment["captured_cents"]) == (order.total_cents, 0)

    stock = {line["variant_id"]: line for line in detail["stock"]}
    assert stock[blue] | {"reservation_expires_at": None} == {
        "variant_id": blue, "sku": product.skus[0], "reserved_for_order": 2,
        "reservation_status": "live", "reservation_expires_at": None,
        "on_hand": 6, "allocated": 0, "reserved": 2, "available": 4}
    assert (stock[red]["reserved_for_order"], stock[red]["available"]) == (1, 5)
    assert stock[red]["reservation_expires_at"] is not None

    history = detail["history"]
    assert [(e["from_status"], e["to_status"]) for e in history] == [
        (None, "pending_payment"), (None, None), ("pending_payment", "authorized")]
    placed, declined, authorised = history
    assert placed["public"] and placed["note"] == "Order placed."
    assert not declined["public"] and "declined" in declined["note"]  # internal entries too
    assert authorised["public"] and authorised["actor"] == "stripe"
    assert [e["at"] for e in history] == sorted(e["at"] for e in history)


def test_payments_lists_every_attempt_with_stripe_ids_for_finance_but_not_for_stock(
    client, db, settings
):
    order, _ = paid_order(db, settings, declined_first=True)
    finance = as_role(client, db, "finance")

    response = client.get(f"/api/orders/{order.number}/payments", headers=finance)

    assert response.status_code == 200, response.text
    first, second = response.json()["items"]
    assert (first["attempt"], first["status"], first["pays_order"]) == (1, "failed", False)
    assert first["failure_code"]
    assert (second["attempt"], second["status"], second["pays_order"]) == (
        2, "authorized", True)
    assert second["amount_cents"] == order.total_cents and second["card_last4"] == "4242"
    assert second["id"] == str(order.payment_id)
    for attempt in (first, second):
        assert attempt["stripe_payment_intent_id"].startswith("pi_")
    assert first["stripe_payment_intent_id"] != second["stripe_payment_intent_id"]
    assert "client_ip" not in second and "email" not in second

    refused = client.get(f"/api/orders/{order.number}/payments",
                         headers=as_role(client, db, "stock"))
    assert refused.status_code == 403
    assert refused.json()["error"] == {"code": "forbidden",
                                       "message": "Your role does not allow this.",
                                       "details": {"needs": "payments:read"}}


def test_an_order_without_payments_has_no_payment_state(client, admin, db):
    number = an_order(db, created_at=DAY)
    detail = client.get(f"/api/orders/{number}", headers=admin).json()
    assert detail["payment"] is None and detail["lines"] == [] and detail["stock"] == []
    assert client.get(f"/api/orders/{number}/payments", headers=admin).json() == {"items": []}


# -- notes --------------------------------------------------------------------------------------


def test_a_note_goes_into_the_history_as_internal_and_is_audited(client, db):
    number = an_order(db, created_at=DAY, status=OrderStatus.AUTHORIZED)
    staff = make_staff(db, "stock")
    headers = bearer(login(client, staff))

    response = client.post(f"/api/orders/{number}/notes",
                           json={"text": "  Customer called: leave at the back door.  "},
                           headers=headers)

    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["note"] == "Customer called: leave at the back door."
    assert (entry["public"], entry["actor"], entry["to_status"]) == (False, staff.email, None)
    history = client.get(f"/api/orders/{number}", headers=headers).json()["history"]
    assert history[-1] == entry
    [audited] = audit_entries(db, "order.note")
    assert (audited.actor_email, audited.target_type, audited.target_id) == (
        staff.email, "order", number)
    assert audited.after == {"note": "Customer called: leave at the back door."}


@pytest.mark.parametrize("body", [{"text": ""}, {"text": "x" * 4001}, {"note": "hi"},
                                  {"text": "hi", "public": True}])
def test_a_note_must_be_some_text_and_nothing_else(client, admin, db, body):
    number = an_order(db, created_at=DAY)
    response = client.post(f"/api/orders/{number}/notes", json=body, headers=admin)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert audit_entries(db, "order.note") == []


# -- cancellation -------------------------------------------------------------------------------


def test_cancelling_an_authorised_order_releases_stock_voids_and_tells_the_customer(
    client, admin, db, settings
):
    order, product = paid_order(db, settings)
    blue, red = product.variant_ids
    assert (stock_of(db, blue).reserved, stock_of(db, red).reserved) == (2, 1)

    response = client.post(f"/api/orders/{order.number}/cancel",
                           json={"reason": "Customer changed their mind"}, headers=admin)

    assert response.status_code == 200, response.text
    assert response.json() == {"number": order.number, "previous_status": "authorized",
                               "status": "cancelled", "units_released": 3, "voids_queued": 1,
                               "refund_required": False}
    assert (stock_of(db, blue).reserved, stock_of(db, red).reserved) == (0, 0)
    assert (stock_of(db, blue).on_hand, stock_of(db, red).on_hand) == (6, 6)
    with db.read_session() as session:
        cancelled = session.get(Order, order.id)
        assert cancelled is not None and cancelled.status == OrderStatus.CANCELLED
        reservations = session.exec(select(Reservation).where(
            Reservation.order_id == order.id)).all()
        assert {r.status for r in reservations} == {ReservationStatus.RELEASED}
        voids = session.exec(select(OutboxMessage).where(
            OutboxMessage.actor_name == "void_payment")).all()
        assert [v.args for v in voids] == [[str(order.payment_id)]]
        [email] = session.exec(select(Email).where(Email.template == "order_cancelled")).all()
        assert email.to_address == "ada@example.com" and email.order_id == order.id
        assert order.number in email.subject and order.status_token in email.text_body
    [audited] = audit_entries(db, "order.cancel")
    assert audited.target_id == order.number
    assert audited.before == {"status": "authorized"}
    assert audited.after is not None and audited.after["status"] == "cancelled"
    assert audited.after["reason"] == "Customer changed their mind"
    history = client.get(f"/api/orders/{order.number}", headers=admin).json()["history"]
    assert (history[-1]["from_status"], history[-1]["to_status"], history[-1]["note"]) == (
        "authorized", "cancelled", "Customer changed their mind")

    again = client.post(f"/api/orders/{order.number}/cancel",
                        json={"reason": "Customer changed their mind"}, headers=admin)

    assert again.status_code == 409
    assert again.json() == {"error": {
        "code": "illegal_transition", "message": "An order that is cancelled cannot be "
        "cancelled.", "details": {"status": "cancelled"}}}
    with db.read_session() as session:
        assert len(session.exec(select(OutboxMessage).where(
            OutboxMessage.actor_name == "void_payment")).all()) == 1
        assert len(session.exec(select(Email).where(
            Email.template == "order_cancelled")).all()) == 1
    assert len(audit_entries(db, "order.cancel")) == 1


def test_cancelling_an_unpaid_order_releases_its_stock_and_sends_no_email(
    client, admin, db, settings
):
    variant = make_product(db, variants=[("One", 1500, 4)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, 3)])
    order = shopping.place(db, settings, cart_id, view)
    assert stock_of(db, variant).reserved == 3

    response = client.post(f"/api/orders/{order.number}/cancel",
                           json={"reason": "Duplicate order"}, headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["previous_status"], body["units_released"], body["voids_queued"]) == (
        "pending_payment", 3, 0)
    assert stock_of(db, variant).reserved == 0
    with db.read_session() as session:
        assert session.exec(select(Email)).all() == []
        assert session.exec(select(OutboxMessage).where(
            OutboxMessage.actor_name == "void_payment")).all() == []


def test_two_staff_cancelling_the_same_order_at_once_cancel_it_once(client, admin, db,
                                                                   settings):
    order, _ = paid_order(db, settings)
    second_admin = as_role(client, db, "admin")

    def waiting_for_the_order_lock() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar_one())

    with db.engine.connect() as holder, holder.begin():
        # Both requests read the order, then queue up behind this lock on its row.
        holder.execute(text("SELECT id FROM orders WHERE id = :id FOR UPDATE"),
                       {"id": order.id})
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = [pool.submit(client.post, f"/api/orders/{order.number}/cancel",
                                   json={"reason": "Asked twice"}, headers=headers)
                       for headers in (admin, second_admin)]
            wait_for(lambda: waiting_for_the_order_lock() == 2, timeout=20,
                     what="both cancellations to wait for the order's lock")
            holder.commit()
            codes = sorted(answer.result().status_code for answer in answers)

    assert codes == [200, 409]
    with db.read_session() as session:
        assert len(session.exec(select(OutboxMessage).where(
            OutboxMessage.actor_name == "void_payment")).all()) == 1
        assert len(session.exec(select(Email).where(
            Email.template == "order_cancelled")).all()) == 1
        events = session.exec(select(OrderEvent).where(
            OrderEvent.order_id == order.id, OrderEvent.to_status == "cancelled")).all()
        assert len(events) == 1
    assert len(audit_entries(db, "order.cancel")) == 1


@pytest.mark.parametrize("status", [OrderStatus.SHIPPED, OrderStatus.PACKED,
                                    OrderStatus.EXPIRED, OrderStatus.REJECTED])
def test_orders_that_shipped_or_ended_cannot_be_cancelled(client, admin, db, status):
    number = an_order(db, created_at=DAY, status=status)
    response = client.post(f"/api/orders/{number}/cancel", json={"reason": "Too late now"},
                           headers=admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    assert response.json()["error"]["details"] == {"status": status}
    assert audit_entries(db, "order.cancel") == []


def test_a_cancellation_needs_a_reason(client, admin, db):
    number = an_order(db, created_at=DAY)
    for body in ({}, {"reason": "no"}, {"reason": "ok then", "notify": False}):
        response = client.post(f"/api/orders/{number}/cancel", json=body, headers=admin)
        assert response.status_code == 422, body
    with db.read_session() as session:
        assert session.exec(select(Order)).one().status == OrderStatus.PENDING_PAYMENT


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("GET", "", None),
    ("GET", "/payments", None),
    ("POST", "/notes", {"text": "Hello?"}),
    ("POST", "/cancel", {"reason": "Nobody ordered this"}),
])
def test_an_unknown_order_number_gives_404_in_the_error_shape(client, admin, method, suffix,
                                                              body):
    response = client.request(method, f"/api/orders/CV-NOSUCH1{suffix}", json=body,
                              headers=admin)
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found",
                                         "message": "No order CV-NOSUCH1.", "details": {}}}


# -- CSV export ---------------------------------------------------------------------------------


def read_csv(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="orders-')
    assert disposition.endswith('.csv"')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == desk.CSV_COLUMNS
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


@pytest.mark.parametrize("ask", [{"headers": {"accept": "text/csv"}, "params": {}},
                                 {"headers": {}, "params": {"format": "csv"}}])
def test_csv_export_has_a_header_and_one_row_per_matching_order(client, admin, db,
                                                                five_orders, ask):
    params = {"status": ["authorized", "shipped"], "limit": 1, "sort": "total_cents",
              **ask["params"]}
    response = client.get("/api/orders", params=params, headers={**admin, **ask["headers"]})

    rows = read_csv(response)
    assert [row["number"] for row in rows] == [five_orders[key] for key in "BDE"]
    first = rows[0]
    assert (first["status"], first["email"], first["total_cents"], first["currency"]) == (
        "authorized", "B@Example.com", "2500", "EUR")
    assert first["created_at"] == "2026-03-02T10:00:00+00:00"
    assert first["phone"] == "'+49301234567"  # leading '+' neutralised like '='
    [audited] = audit_entries(db, "orders.export")
    assert audited.after is not None
    assert audited.after["filter"]["status"] == ["authorized", "shipped"]


def test_csv_export_neutralises_formulas_in_customer_data(client, admin, db):
    number = an_order(db, created_at=DAY, full_name='=HYPERLINK("http://evil.test","Win")',
                      city="@SUM(1+1)", address="-2+3", email="plain@example.com")

    [row] = read_csv(client.get("/api/orders?format=csv", headers=admin))

    assert row["number"] == number
    assert row["full_name"] == '\'=HYPERLINK("http://evil.test","Win")'
    assert (row["city"], row["address"]) == ("'@SUM(1+1)", "'-2+3")
    assert row["email"] == "plain@example.com"


def test_csv_export_of_nothing_is_just_the_header(client, admin, db, five_orders):
    response = client.get("/api/orders", params={"format": "csv", "email": "no@one.test"},
                          headers=admin)
    assert read_csv(response) == []


def test_export_reads_a_batch_at_a_time_and_still_gives_every_order_once(db, shuffled_orders):
    chunks = list(desk.export_csv(db, desk.OrderFilter(sort="total_cents"), batch=2))
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert len(chunks) == 1 + 4  # the header, then four batches of at most two
    assert [row[0] for row in rows[1:]] == expected_order(shuffled_orders, "total_cents")


def test_finance_may_export_but_a_reviewer_is_refused_and_that_is_audited(client, db,
                                                                         five_orders):
    finance = as_role(client, db, "finance")
    assert len(read_csv(client.get("/api/orders?format=csv", headers=finance))) == 5

    reviewer_staff = make_staff(db, "reviewer")
    reviewer = bearer(login(client, reviewer_staff))
    assert client.get("/api/orders", headers=reviewer).status_code == 200  # may list
    for ask in ({"params": {"format": "csv"}}, {"headers": {"accept": "text/csv"}}):
        response = client.get("/api/orders", params=ask.get("params"),
                              headers={**reviewer, **ask.get("headers", {})})
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == {"code": "forbidden",
                                            "message": "Your role does not allow this.",
                                            "details": {"needs": "orders:export"}}

    denied = audit_entries(db, "access.denied")
    assert len(denied) == 2
    assert all(e.actor_email == reviewer_staff.email and e.outcome == "denied"
               and e.target_id == "GET /api/orders" and e.after == {"needs": "orders:export"}
               for e in denied)
    assert len(audit_entries(db, "orders.export")) == 1  # finance's alone


def test_stock_staff_cannot_export_either(client, db, five_orders):
    response = client.get("/api/orders?format=csv", headers=as_role(client, db, "stock"))
    assert response.status_code == 403
