"""Customer files and the segments report on the admin API, against PostgreSQL and localstripe:
orders bought, captured, refunded, picked, packed and shipped through the real services."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select, update
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds
from fulfilment.payments import capture_order_payment
from fulfilment.screening import screen_order
from models.after_sales import (
    ReturnLine,
    ReturnRequest,
    ReturnStatus,
    SupportThread,
    ThreadStatus,
)
from models.audit import AuditEntry
from models.customers import Customer, CustomerFileRef
from models.orders import Order, OrderLine
from models.payments import Payment
from models.screening import DEFAULT_RULES, RuleSet, Screening
from models.staff import Role
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_pending_order, make_product, make_staff
from tests.integration.test_packing import pack
from tests.integration.test_picking import build, claim, pick_everything
from tests.integration.test_shipping import ship

ENV = shopping.ENV
NO_SUCH_REF = "g" + "0" * 32
DOMAIN = "buyers.example.com"


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


def as_role(client: TestClient, db: Database, role: str) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role)))


def search(client: TestClient, headers: dict[str, str], **params: object) -> dict:
    response = client.get("/api/customers", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def open_file(client: TestClient, headers: dict[str, str], ref: str) -> dict:
    response = client.get(f"/api/customers/{ref}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def refund(db: Database, settings: Settings, order: Order, cents: int) -> None:
    with db.unit_of_work() as uow:
        made = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=cents, lines=[],
                                      reason="dented", requested_by="fin@x.test",
                                      settings=settings)
    assert refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=made.id) == "succeeded"


def captured(db: Database, order: Order) -> int:
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        assert payment is not None
        return payment.captured_cents


def make_account(db: Database, email: str, *, name: str = "Account Holder",
                 verified: bool = True, marketing: bool = False,
                 deleted: bool = False) -> Customer:
    now = datetime.now(UTC)
    with db.unit_of_work() as uow:
        account = Customer(email=email, full_name=name, password_hash="x",
                           email_verified_at=now if verified else None,
                           marketing_emails=marketing, deleted_at=now if deleted else None)
        uow.session.add(account)
    return account


@pytest.fixture(autouse=True)
def approving_screening(db: Database) -> None:
    """The default signals and weights, with thresholds no order reaches: these tests buy
    several similar orders per customer and need them captured, signals still recorded."""
    body = DEFAULT_RULES.model_dump(mode="json")
    body["thresholds"] = {"review": 100, "reject": 101}
    with db.unit_of_work() as uow:
        uow.session.add(RuleSet(version=2, body=body, note="customer file tests",
                                created_by="test"))


def ship_everything(db: Database, settings: Settings, order: Order) -> None:
    """Pick, pack in one parcel and ship an allocated order (the only one ready to pick)."""
    [pick_list] = build(db)
    assert pick_list.id is not None
    claim(db, pick_list.id)
    pick_everything(db, pick_list.id)
    with db.read_session() as session:
        lines = session.exec(select(OrderLine).where(OrderLine.order_id == order.id)).all()
    parcel = pack(db, order.id, [(line.sku, line.quantity) for line in lines]).parcel
    assert parcel.id is not None
    ship(db, settings, parcel.id, f"JD{uuid.uuid4().hex[:8]}")


# -- Files ----------------------------------------------------------------------------------------


def test_a_guest_file_shows_orders_and_lifetime_value_after_a_partial_refund(
        client, db, settings):
    # Given a guest with two captured orders, the second partly refunded
    mug = make_product(db, name="Mug", variants=[("Std", 2500, 10)])
    first = shopping.bought(db, settings, [(mug.variant_ids[0], 1)], email="Guest@example.com")
    second = shopping.bought(db, settings, [(mug.variant_ids[0], 2)], email="guest@example.com")
    refund(db, settings, second, 1000)
    support = as_role(client, db, Role.SUPPORT)

    # When support searches for the email (any case) and opens the file
    page = search(client, support, q="GUEST@example")
    [row] = page["items"]
    file = open_file(client, support, row["ref"])

    # Then the file is the guest's, addressed by an opaque ref, with the money right
    value = captured(db, first) + captured(db, second) - 1000
    assert row["ref"].startswith("g") and "@" not in row["ref"]
    assert row["account_id"] is None and row["email"] == "guest@example.com"
    assert row["orders"] == 2 and row["lifetime_value_cents"] == value
    assert row["last_order_at"] == second.created_at.isoformat().replace("+00:00", "Z") \
        or datetime.fromisoformat(row["last_order_at"]) == second.created_at
    assert file["ref"] == row["ref"] and file["account"] is None
    assert file["name"] == "Ada Lovelace"
    assert file["figures"]["orders"] == 2
    assert file["figures"]["lifetime_value_cents"] == value
    assert file["figures"]["average_order_cents"] == round(value / 2)
    assert file["figures"]["refunds"] == 1 and file["figures"]["refunded_cents"] == 1000
    assert [(o["number"], o["payment_status"], o["refunded_cents"]) for o in file["orders"]] \
        == [(second.number, "partially_refunded", 1000), (first.number, "captured", 0)]
    assert [o["total_cents"] for o in file["orders"]] == [second.total_cents, first.total_cents]
    # and the ref was remembered under the lower-cased email only
    with db.read_session() as session:
        assert session.get(CustomerFileRef, row["ref"]).email == "guest@example.com"


def test_an_account_file_shows_the_account_and_every_order_joined_to_it(client, db, settings):
    # Given a guest order under the account's email, and one joined to the account although
    # placed under an older address
    mug = make_product(db, name="Mug", variants=[("Std", 2500, 10)])
    account = make_account(db, "Ada@Example.com", name="Ada L.", marketing=True)
    guest = shopping.bought(db, settings, [(mug.variant_ids[0], 1)], email="ada@example.com")
    older = shopping.bought(db, settings, [(mug.variant_ids[0], 1)], email="old@example.org")
    with db.unit_of_work() as uow:
        uow.session.execute(update(Order).where(col(Order.id) == older.id)
                            .values(customer_id=account.id))
    finance = as_role(client, db, Role.FINANCE)

    # When finance finds the account by name
    [row] = search(client, finance, q="ada l.")["items"]
    file = open_file(client, finance, row["ref"])

    # Then the file is the account's, with both orders and nothing left under the old email
    assert row["ref"] == str(account.id) and row["account_id"] == str(account.id)
    assert row["name"] == "Ada L." and row["orders"] == 2
    assert file["account"]["id"] == str(account.id)
    assert file["account"]["email_verified"] is True
    assert file["account"]["marketing_emails"] is True
    assert file["email"] == "ada@example.com"
    assert {o["number"] for o in file["orders"]} == {guest.number, older.number}
    assert file["figures"]["lifetime_value_cents"] == captured(db, guest) + captured(db, older)
    assert search(client, finance, q="old@example.org")["items"][0]["ref"] == str(account.id)


def test_an_account_without_orders_has_a_file_and_an_erased_one_has_none(client, db):
    # Given a fresh account and an erased one, whose order stays joined to its blank row
    fresh = make_account(db, "new@example.com", name="Nina New")
    gone = make_account(db, "", deleted=True)
    kept = make_pending_order(db, email="gone@example.com")
    with db.unit_of_work() as uow:
        uow.session.execute(update(Order).where(col(Order.id) == kept)
                            .values(customer_id=gone.id))
    reviewer = as_role(client, db, Role.REVIEWER)

    # When a reviewer looks for them
    rows = search(client, reviewer, q="example.com")["items"]

    # Then only the live account is there, with no orders
    assert [(r["ref"], r["orders"], r["lifetime_value_cents"], r["last_order_at"])
            for r in rows] == [(str(fresh.id), 0, 0, None)]
    assert search(client, reviewer, q="gone@")["items"] == []
    file = open_file(client, reviewer, str(fresh.id))
    assert file["orders"] == [] and file["figures"]["average_order_cents"] is None
    assert file["figures"]["returns_rate"] is None
    for ref in (str(gone.id), str(uuid.uuid4()), NO_SUCH_REF, "ada@example.com", "g123"):
        response = client.get(f"/api/customers/{ref}", headers=reviewer)
        assert response.status_code == 404, ref
        assert response.json()["error"]["code"] == "not_found"


def test_a_guest_ref_stays_stable_and_is_refused_with_another_secret(client, db, settings):
    # Given a guest found once
    make_pending_order(db, email="stable@example.com")
    support = as_role(client, db, Role.SUPPORT)
    ref = search(client, support, q="stable@")["items"][0]["ref"]

    # When the search runs again, and when the shop's secret changes
    again = search(client, support, q="stable@")["items"][0]["ref"]
    other = Settings(**{**settings.model_dump(), "secret_key": "another secret, rotated"})
    assert other.session_secret != settings.session_secret
    with TestClient(create_app(other, db=db)) as rotated:
        refused = rotated.get(f"/api/customers/{ref}", headers=support)
        renewed = search(rotated, support, q="stable@")["items"][0]["ref"]
        reopened = rotated.get(f"/api/customers/{renewed}", headers=support)

    # Then the ref does not move; an old ref no longer leads anywhere, the new one does
    assert again == ref
    assert refused.status_code == 404
    assert renewed != ref and reopened.status_code == 200
    assert reopened.json()["figures"]["orders"] == 0 and reopened.json()["orders_total"] == 1


def test_the_returns_rate_is_units_returned_over_units_shipped(client, db, settings):
    # Given a shipped order of 4 units, a return of 1 unit, a rejected and a cancelled one
    mug = make_product(db, name="Mug", variants=[("Std", 2500, 10)])
    lamp = make_product(db, name="Lamp", variants=[("Std", 4000, 10)])
    order = shopping.bought(db, settings, [(mug.variant_ids[0], 3), (lamp.variant_ids[0], 1)],
                            email="returner@example.com")
    ship_everything(db, settings, order)
    with db.unit_of_work() as uow:
        for n, (status, variant, quantity) in enumerate([
                (ReturnStatus.REQUESTED, mug, 1), (ReturnStatus.REJECTED, mug, 2),
                (ReturnStatus.CANCELLED, lamp, 1)]):
            request = ReturnRequest(number=f"RT-{uuid.uuid4().hex[:8]}{n}", order_id=order.id,
                                    status=status, reason="too small")
            uow.session.add(request)
            uow.flush()
            uow.session.add(ReturnLine(return_id=request.id, variant_id=variant.variant_ids[0],
                                       sku=variant.skus[0], quantity=quantity))
        uow.session.add(SupportThread(order_id=order.id, subject="Where is my refund?"))
        uow.session.add(SupportThread(order_id=order.id, subject="Thanks",
                                      status=ThreadStatus.CLOSED))
    support = as_role(client, db, Role.SUPPORT)

    # When support opens the file
    [row] = search(client, support, q="returner")["items"]
    file = open_file(client, support, row["ref"])

    # Then only the return still standing counts: 1 of 4 shipped units
    figures = file["figures"]
    assert (figures["units_shipped"], figures["units_returned"], figures["returns"]) == (4, 1, 1)
    assert figures["returns_rate"] == 0.25
    assert (file["support_threads"], file["open_support_threads"]) == (2, 1)
    assert file["orders"][0]["status"] == "shipped"


def test_screening_decisions_and_signals_are_listed_per_order_oldest_first(client, db, settings):
    # Given two approved orders of one customer, the second large enough to raise a signal,
    # then a stricter rule set that holds the third for a reviewer, who approves it
    mug = make_product(db, name="Mug", variants=[("Std", 900, 20)])
    first = shopping.bought(db, settings, [(mug.variant_ids[0], 1)], email="screened@example.com")
    second = shopping.bought(db, settings, [(mug.variant_ids[0], 6)],
                             email="screened@example.com")
    strict = DEFAULT_RULES.model_dump(mode="json")
    strict["thresholds"] = {"review": 0, "reject": 101}
    with db.unit_of_work() as uow:
        uow.session.add(RuleSet(version=3, body=strict, note="hold everything", created_by="t"))
    cart_id, view = shopping.cart(db, [(mug.variant_ids[0], 1)])
    third = shopping.place(db, settings, cart_id, view,
                           details=shopping.details_for("screened@example.com"))
    shopping.pay(db, settings, third.id)
    with db.unit_of_work() as uow:
        screen_order(uow=uow, order_id=third.id, env=ENV, settings=settings)
    reviewer_staff = make_staff(db, Role.REVIEWER)
    reviewer = bearer(login(client, reviewer_staff))
    decided = client.post(f"/api/orders/{third.number}/approve", headers=reviewer,
                          json={"reason": "Known customer, third order"})
    assert decided.status_code == 200, decided.text

    # When a reviewer opens the file
    [row] = search(client, reviewer, q="screened@")["items"]
    history = open_file(client, reviewer, row["ref"])["screenings"]

    # Then each order's screening is there as stored, in the order they were made
    with db.read_session() as session:
        stored = {s.order_id: s for s in session.exec(select(Screening))}
    assert [h["order_number"] for h in history] == [first.number, second.number, third.number]
    for entry, order in zip(history, (first, second, third), strict=True):
        screening = stored[order.id]
        assert entry["decision"] == screening.decision
        assert entry["score"] == screening.score
        assert entry["rule_set_version"] == screening.rule_set_version
        assert [(s["code"], s["weight"], s["reason"]) for s in entry["signals"]] == \
            [(s["code"], s["weight"], s["reason"]) for s in screening.signals]
    assert [(h["decision"], h["rule_set_version"], h["decided_by"]) for h in history] == [
        ("approve", 2, ""), ("approve", 2, ""), ("review", 3, reviewer_staff.email)]
    assert history[2]["decision_reason"] == "Known customer, third order"
    assert "sku_quantity" in {s["code"] for s in history[1]["signals"]}
    assert "sku_quantity" not in {s["code"] for s in history[0]["signals"]}


def test_notes_are_kept_newest_first_and_audited_by_ref_without_their_text(client, db):
    # Given a guest's file
    make_pending_order(db, email="noted@example.com")
    staff = make_staff(db, Role.SUPPORT)
    support = bearer(login(client, staff))
    ref = search(client, support, q="noted@")["items"][0]["ref"]

    # When support writes two notes (and a blank one)
    made = [client.post(f"/api/customers/{ref}/notes", headers=support, json={"text": text})
            for text in ("Called about the parcel; lives at Hauptstr. 5", "  Prefers email  ")]
    blank = client.post(f"/api/customers/{ref}/notes", headers=support, json={"text": "   "})
    nowhere = client.post(f"/api/customers/{NO_SUCH_REF}/notes", headers=support,
                          json={"text": "lost"})

    # Then the file shows them newest first with their author, and each is audited by ref
    assert [r.status_code for r in made] == [201, 201]
    assert blank.status_code == 422 and nowhere.status_code == 404
    notes = open_file(client, support, ref)["notes"]
    assert [(n["text"], n["author"]) for n in notes] == [
        ("Prefers email", staff.email),
        ("Called about the parcel; lives at Hauptstr. 5", staff.email)]
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(AuditEntry.action == "customer.note")
                               .order_by(col(AuditEntry.id))).all()
    assert [(e.target_type, e.target_id, e.after, e.actor_email, e.outcome) for e in entries] == [
        ("customer", ref, {"note_id": made[0].json()["id"]}, staff.email, "ok"),
        ("customer", ref, {"note_id": made[1].json()["id"]}, staff.email, "ok")]
    assert all("noted@" not in str(e.after) and "Hauptstr" not in str(e.after)
               for e in entries)


# -- Search and pagination ------------------------------------------------------------------------


def test_search_pages_through_every_customer_once_in_sort_order(client, db, settings):
    # Given three buyers with different lifetime values and six accounts with none (ties)
    mug = make_product(db, name="Mug", variants=[("Std", 1000, 30)])
    buyers = [shopping.bought(db, settings, [(mug.variant_ids[0], n)],
                              email=f"b{n}@{DOMAIN}") for n in (2, 1, 3)]
    accounts = [make_account(db, f"acct{n}@{DOMAIN}", name=f"Holder {n}") for n in range(6)]
    finance = as_role(client, db, Role.FINANCE)

    def walk(sort: str) -> list[dict]:
        rows, cursor, pages = [], None, 0
        while True:
            params = {"q": "buyers.example", "sort": sort, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = search(client, finance, **params)
            rows += page["items"]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                return rows
            assert pages < 20

    # When staff page through by lifetime value, both ways, and by last order
    richest_first = walk("-lifetime_value")
    poorest_first = walk("lifetime_value")
    latest_first = walk("-last_order")

    # Then every customer appears exactly once, in order
    everyone = {f"b{n}@{DOMAIN}" for n in (1, 2, 3)} | {a.email for a in accounts}
    for rows in (richest_first, poorest_first, latest_first):
        assert sorted(r["email"] for r in rows) == sorted(everyone)
    values = [r["lifetime_value_cents"] for r in richest_first]
    assert values == sorted(values, reverse=True)
    assert [r["email"] for r in richest_first[:3]] == [f"b{n}@{DOMAIN}" for n in (3, 2, 1)]
    assert [r["lifetime_value_cents"] for r in poorest_first] == sorted(values)
    assert [r["email"] for r in latest_first[:3]] == [o.email for o in reversed(buyers)]
    assert all(r["last_order_at"] is None for r in latest_first[3:])


def test_search_matches_fragments_literally_and_refuses_bad_cursors(client, db):
    make_pending_order(db, email="under_score@example.com")
    make_pending_order(db, email="underscore@example.com")
    support = as_role(client, db, Role.SUPPORT)

    assert [r["email"] for r in search(client, support, q="under_")["items"]] == \
        ["under_score@example.com"]
    assert search(client, support, q="%")["items"] == []
    assert len(search(client, support, q="TEST SHOPPER")["items"]) == 2
    bad = client.get("/api/customers", params={"cursor": "not-a-cursor"}, headers=support)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"
    for forged in ({"s": "-lifetime_value", "v": 10**30, "t": "x"},
                   {"s": "-last_order", "v": "yesterday", "t": "x"},
                   {"s": "-last_order", "v": "2026-01-01T00:00:00", "t": "x"},
                   {"s": "-lifetime_value", "v": 5, "t": "x" * 41}):
        cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
        answer = client.get("/api/customers", headers=support,
                            params={"cursor": cursor, "sort": forged["s"]})
        assert answer.status_code == 422, forged
    first = search(client, support, limit=1, sort="-lifetime_value")
    other_sort = client.get("/api/customers", headers=support,
                            params={"cursor": first["next_cursor"], "sort": "last_order"})
    assert other_sort.status_code == 422


# -- Segments -------------------------------------------------------------------------------------


def band(total_cents: int) -> str:
    """The documented bands, by hand."""
    euros = total_cents / 100
    if euros < 25:
        return "under 25"
    if euros < 50:
        return "25-50"
    if euros < 100:
        return "50-100"
    if euros < 250:
        return "100-250"
    return "250+"


def test_the_segments_report_splits_sales_as_computed_by_hand(client, db, settings):
    # Given a returning customer (a sale captured 10 days ago, one today), a new customer with
    # two orders today across two categories (one shipped to Austria), and an unpaid order
    lamp = make_product(db, name="Lamp", category="Lighting", variants=[("Std", 8000, 10)])
    mug = make_product(db, name="Mug", category="Kitchen", variants=[("Std", 1200, 20)])
    old = shopping.bought(db, settings, [(mug.variant_ids[0], 1)], email="back@example.com")
    back = shopping.bought(db, settings, [(mug.variant_ids[0], 2)], email="Back@example.com")
    with db.unit_of_work() as uow:
        uow.session.execute(update(Payment).where(col(Payment.id) == old.payment_id)
                            .values(captured_at=datetime.now(UTC) - timedelta(days=10)))
    new_1 = shopping.bought(db, settings, [(lamp.variant_ids[0], 3), (mug.variant_ids[0], 1)],
                            email="first@example.com")
    cart_id, view = shopping.cart(db, [(mug.variant_ids[0], 1)])
    austria = shopping.details_for("first@example.com", country="AT", city="Wien",
                                   postal_code="1010")
    new_2 = shopping.place(db, settings, cart_id, view, details=austria)
    shopping.pay(db, settings, new_2.id)
    with db.unit_of_work() as uow:
        screen_order(uow=uow, order_id=new_2.id, env=ENV, settings=settings)
    assert capture_order_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                 settings=settings, order_id=new_2.id) == "captured"
    make_pending_order(db, email="unpaid@example.com", total_cents=99_999)
    with db.read_session() as session:
        new_2 = session.get(Order, new_2.id)
    today = datetime.now(UTC).date()
    period = {"start": (today - timedelta(days=2)).isoformat(), "end": today.isoformat()}
    reviewer = as_role(client, db, Role.REVIEWER)

    # When the report is read for the last three days
    response = client.get("/api/reports/segments", params=period, headers=reviewer)

    # Then every figure is what the hand computes
    assert response.status_code == 200, response.text
    report = response.json()
    b, n1, n2 = captured(db, back), captured(db, new_1), captured(db, new_2)

    def row(segment, customers, orders, revenue, units=None):
        return {"segment": segment, "customers": customers, "orders": orders,
                "revenue_cents": revenue, "units": units}

    assert report["total"] == row("all", 2, 3, b + n1 + n2)
    assert report["new_vs_returning"] == [row("new", 1, 2, n1 + n2), row("returning", 1, 1, b)]
    assert sorted(report["by_country"], key=lambda r: r["segment"]) == [
        row("AT", 1, 1, n2), row("DE", 2, 2, b + n1)]
    expected_bands: dict[str, dict] = {label: row(label, 0, 0, 0) for label in (
        "under 25", "25-50", "50-100", "100-250", "250+")}
    for email, order, revenue in (("back", back, b), ("first", new_1, n1),
                                  ("first", new_2, n2)):
        entry = expected_bands[band(order.total_cents)]
        entry["orders"] += 1
        entry["revenue_cents"] += revenue
        entry.setdefault("who", set()).add(email)
    for entry in expected_bands.values():
        entry["customers"] = len(entry.pop("who", set()))
    assert report["by_value_band"] == list(expected_bands.values())
    with db.read_session() as session:
        lines = {(line.order_id, line.variant_id): line for line in session.exec(
            select(OrderLine).where(col(OrderLine.order_id).in_([back.id, new_1.id, new_2.id])))}
    lamp_cents = lines[(new_1.id, lamp.variant_ids[0])].line_total_cents
    mug_cents = sum(line.line_total_cents for (o, v), line in lines.items()
                    if v == mug.variant_ids[0])
    assert report["by_category"] == sorted([row("Lighting", 1, 1, lamp_cents, 3),
                                            row("Kitchen", 2, 3, mug_cents, 4)],
                                           key=lambda r: -r["revenue_cents"])
    assert report["category_mix"] == [row("one category", 1, 1, b),
                                      row("several categories", 1, 2, n1 + n2)]

    # And the CSV says the same
    download = client.get("/api/reports/segments", params={**period, "format": "csv"},
                          headers=reviewer)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(download.text)))
    assert list(table[0]) == ["section", "segment", "customers", "orders", "units",
                              "revenue_cents"]
    assert {(r["section"], r["segment"]): int(r["revenue_cents"]) for r in table} == {
        **{("total", "all"): b + n1 + n2},
        **{("new_vs_returning", r["segment"]): r["revenue_cents"]
           for r in report["new_vs_returning"]},
        **{("country", r["segment"]): r["revenue_cents"] for r in report["by_country"]},
        **{("value_band", r["segment"]): r["revenue_cents"] for r in report["by_value_band"]},
        **{("category", r["segment"]): r["revenue_cents"] for r in report["by_category"]},
        **{("category_mix", r["segment"]): r["revenue_cents"] for r in report["category_mix"]},
    }
    assert {r["segment"]: r["units"] for r in table if r["section"] == "category"} == \
        {"Lighting": "3", "Kitchen": "4"}

    # And a period before any sale is empty, and a reversed one is refused
    empty = client.get("/api/reports/segments", headers=reviewer,
                       params={"start": "2020-01-01", "end": "2020-01-31"}).json()
    assert empty["total"] == row("all", 0, 0, 0) and empty["by_country"] == []
    reversed_period = client.get("/api/reports/segments", headers=reviewer,
                                 params={"start": period["end"], "end": period["start"]})
    assert reversed_period.status_code == 422


# -- Permissions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.SUPPORT, Role.FINANCE, Role.REVIEWER, Role.ADMIN])
def test_support_finance_reviewers_and_admins_read_files_and_write_notes(client, db, role):
    make_pending_order(db, email="reader@example.com")
    headers = as_role(client, db, role)
    ref = search(client, headers, q="reader@")["items"][0]["ref"]
    assert client.get(f"/api/customers/{ref}", headers=headers).status_code == 200
    assert client.get("/api/reports/segments", headers=headers).status_code == 200
    assert client.post(f"/api/customers/{ref}/notes", headers=headers,
                       json={"text": "ok"}).status_code == 201


@pytest.mark.parametrize("role", [Role.PICKER, Role.STOCK])
def test_pickers_and_stock_staff_cannot_see_customer_files(client, db, role):
    make_pending_order(db, email="private@example.com")
    ref = search(client, as_role(client, db, Role.SUPPORT), q="private@")["items"][0]["ref"]
    headers = as_role(client, db, role)
    denied = [client.get("/api/customers", headers=headers),
              client.get(f"/api/customers/{ref}", headers=headers),
              client.post(f"/api/customers/{ref}/notes", headers=headers, json={"text": "x"}),
              client.get("/api/reports/segments", headers=headers)]
    assert [r.status_code for r in denied] == [403, 403, 403, 403]
    with db.read_session() as session:
        entries = session.exec(select(AuditEntry).where(
            AuditEntry.action == "access.denied", AuditEntry.outcome == "denied")).all()
    assert len([e for e in entries if role.value in e.actor_roles]) == 4
