"""The returns desk and the support desk on the admin API, against PostgreSQL and localstripe:
a return received by stock staff and refunded by finance until it is complete, filters and
cursors, refusals, rejection; the support inbox, a conversation with its order beside it,
replies, assignment and status; every staff action audited and in the order's history."""

from __future__ import annotations

import uuid

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds, returns, support
from fulfilment.inventory import verify_ledger
from models.after_sales import ReturnRequest
from models.audit import AuditEntry
from models.inventory import MovementKind, StockMovement
from models.messaging import Email
from models.orders import Order
from tests.after_sales import ENV, lenient_screening, shipped_order
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff, stock_of


@pytest.fixture
def client(db: Database, settings: Settings):
    lenient_screening(db)
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client
    with db.read_session() as session:
        assert verify_ledger(session) == []


def as_role(client: TestClient, db: Database, role: str) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role)))


def audit_entries(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)
                                 .order_by(col(AuditEntry.id))))


def ask(db: Database, settings: Settings, order: Order, lines: list[tuple[int, int]],
        reason: str = "Does not fit") -> ReturnRequest:
    with db.unit_of_work() as uow:
        return returns.request_return(
            uow=uow, order_id=order.id, reason=reason, env=ENV, settings=settings,
            lines=[returns.ReturnLineRequest(v, q) for v, q in lines])


def shipped(db: Database, settings: Settings, *, price: int = 2000, units: int = 2,
            email: str = "ada@example.com") -> tuple[Order, int, str]:
    made = make_product(db, variants=[("Std", price, 10)])
    order = shipped_order(db, settings, [(made.variant_ids[0], units)], email=email)
    return order, made.variant_ids[0], made.skus[0]


def history(client: TestClient, db: Database, number: str) -> list[dict]:
    response = client.get(f"/api/orders/{number}", headers=as_role(client, db, "support"))
    assert response.status_code == 200
    return response.json()["history"]


def test_stock_receives_finance_refunds_and_the_return_completes(client, db, settings):
    order, variant, sku = shipped(db, settings)
    request = ask(db, settings, order, [(variant, 2)])
    stock, finance = as_role(client, db, "stock"), as_role(client, db, "finance")
    on_hand = stock_of(db, variant).on_hand

    listed = client.get("/api/returns?status=requested", headers=stock).json()
    assert [r["number"] for r in listed["items"]] == [request.number]
    assert listed["items"][0]["order_number"] == order.number
    received = client.post(f"/api/returns/{request.number}/receive", headers=stock, json={
        "lines": [{"sku": sku, "received_quantity": 2, "condition": "sellable",
                   "restock_bin": {"warehouse": "TST", "bin": "A-01-1"}}],
        "note": "box dented, items fine"})
    assert received.status_code == 200, received.text
    assert received.json()["status"] == "received"
    assert received.json()["lines"][0]["restocked_quantity"] == 2
    assert stock_of(db, variant).on_hand == on_hand + 2

    refunded = client.post(f"/api/returns/{request.number}/refund", headers=finance)
    assert refunded.status_code == 202, refunded.text
    refund = refunded.json()["refund"]
    assert refund["status"] == "processing"
    assert refund["amount_cents"] == 4000 + round(4000 * order.tax_rate_bps / 10_000)
    assert refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=uuid.UUID(refund["id"])) \
        == "succeeded"

    final = client.get(f"/api/returns/{request.number}", headers=stock).json()
    assert final["status"] == "refunded" and final["completed_at"]
    assert final["refund_id"] == refund["id"] and final["refund_status"] == "succeeded"
    assert stock_of(db, variant).on_hand == on_hand + 2  # not restocked a second time
    with db.read_session() as session:
        moves = session.exec(select(StockMovement).where(
            StockMovement.kind == MovementKind.RETURN)).all()
    assert [(m.on_hand_delta, m.actor) for m in moves] == [(2, received.json()["received_by"])]
    [receipt] = audit_entries(db, "return.receive")
    [asked] = audit_entries(db, "return.refund")
    assert receipt.target_id == request.number and receipt.after["note"] == \
        "box dented, items fine"
    assert asked.after["refund_id"] == refund["id"] and asked.actor_roles == ["finance"]
    notes = [entry["note"] for entry in history(client, db, order.number)]
    assert any(request.number in n and "arrived" in n for n in notes)
    assert any(f"Refund of return {request.number}" in n for n in notes)


def test_receipt_refusals_and_bad_bins_are_explained_and_audited(client, db, settings):
    order, variant, sku = shipped(db, settings)
    request = ask(db, settings, order, [(variant, 1)])
    stock = as_role(client, db, "stock")

    too_many = client.post(f"/api/returns/{request.number}/receive", headers=stock, json={
        "lines": [{"sku": sku, "received_quantity": 2, "condition": "sellable"}]})
    no_bin = client.post(f"/api/returns/{request.number}/receive", headers=stock, json={
        "lines": [{"sku": sku, "received_quantity": 1, "condition": "sellable",
                   "restock_bin": {"warehouse": "TST", "bin": "NOPE"}}]})
    other_sku = client.post(f"/api/returns/{request.number}/receive", headers=stock, json={
        "lines": [{"sku": "ZZZ-1", "received_quantity": 1, "condition": "sellable"}]})
    bad_condition = client.post(f"/api/returns/{request.number}/receive", headers=stock,
                                json={"lines": [{"sku": sku, "received_quantity": 1,
                                                 "condition": "shiny"}]})
    refund_too_early = client.post(f"/api/returns/{request.number}/refund",
                                   headers=as_role(client, db, "finance"))
    unknown = client.get("/api/returns/R-NOSUCH", headers=stock)

    assert too_many.status_code == 409 and too_many.json()["error"]["code"] == "return_refused"
    assert no_bin.status_code == 422
    assert no_bin.json()["error"]["details"]["fields"][0]["type"] == "no_such_bin"
    assert other_sku.status_code == 422 and bad_condition.status_code == 422
    assert refund_too_early.status_code == 409
    assert unknown.status_code == 404
    refusals = audit_entries(db, "return.receive")
    assert [e.outcome for e in refusals] == ["refused"]
    assert [e.outcome for e in audit_entries(db, "return.refund")] == ["refused"]


def test_a_rejection_is_audited_and_public_in_the_orders_history(client, db, settings):
    order, variant, _ = shipped(db, settings)
    request = ask(db, settings, order, [(variant, 1)])
    stock = as_role(client, db, "stock")

    response = client.post(f"/api/returns/{request.number}/reject", headers=stock,
                           json={"reason": "Bought more than 30 days ago elsewhere."})

    assert response.status_code == 200 and response.json()["status"] == "rejected"
    assert response.json()["rejection_reason"] == "Bought more than 30 days ago elsewhere."
    [entry] = audit_entries(db, "return.reject")
    assert entry.before == {"status": "requested"} and entry.after["status"] == "rejected"
    public = [e for e in history(client, db, order.number) if "not accepted" in e["note"]]
    assert len(public) == 1 and public[0]["public"]
    again = client.post(f"/api/returns/{request.number}/reject", headers=stock,
                        json={"reason": "twice"})
    assert again.status_code == 409


def test_the_returns_list_filters_by_order_and_pages_with_a_cursor(client, db, settings):
    first, v1, _ = shipped(db, settings, email="one@example.com")
    second, v2, _ = shipped(db, settings, email="two@example.com")
    numbers = [ask(db, settings, first, [(v1, 1)]).number,
               ask(db, settings, first, [(v1, 1)]).number,
               ask(db, settings, second, [(v2, 1)]).number]
    support_staff = as_role(client, db, "support")  # support may read returns

    page = client.get("/api/returns?limit=2", headers=support_staff).json()
    rest = client.get(f"/api/returns?limit=2&cursor={page['next_cursor']}",
                      headers=support_staff).json()
    by_order = client.get(f"/api/returns?order={first.number}", headers=support_staff).json()
    bad_cursor = client.get("/api/returns?cursor=nonsense", headers=support_staff)

    assert [r["number"] for r in page["items"] + rest["items"]] == numbers[::-1]
    assert rest["next_cursor"] is None
    assert sorted(r["number"] for r in by_order["items"]) == sorted(numbers[:2])
    assert bad_cursor.status_code == 422


def conversation(db: Database, settings: Settings, order: Order, body: str,
                 subject: str = "") -> uuid.UUID:
    with db.unit_of_work() as uow:
        return support.post_customer_message(uow=uow, order_id=order.id, subject=subject,
                                             body=body, settings=settings).thread_id


def test_the_support_desk_answers_a_customer_with_the_order_beside_the_messages(
        client, db, settings):
    order, variant, sku = shipped(db, settings)
    request = ask(db, settings, order, [(variant, 1)])
    thread_id = conversation(db, settings, order, "Where do I send it?", subject="Return")
    helper = make_staff(db, "support")
    token = bearer(login(client, helper))

    inbox = client.get("/api/support/threads?status=open", headers=token).json()
    assert [t["id"] for t in inbox["items"]] == [str(thread_id)]
    assert inbox["items"][0]["last_from_customer"] and inbox["items"][0]["messages"] == 1
    detail = client.get(f"/api/support/threads/{thread_id}", headers=token).json()
    assert detail["order"]["number"] == order.number
    assert detail["order"]["lines"][0]["sku"] == sku
    assert detail["order"]["shipments"][0]["tracking_number"] == "JD000001"
    assert [r["number"] for r in detail["order"]["returns"]] == [request.number]
    assert "payment" not in detail["order"]  # support sees no payment details

    replied = client.post(f"/api/support/threads/{thread_id}/reply", headers=token,
                          json={"body": "To our returns address, with R- on the box."})
    assert replied.status_code == 201, replied.text
    assert replied.json()["thread"]["status"] == "waiting"
    assert [m["from_customer"] for m in replied.json()["messages"]] == [True, False]
    with db.read_session() as session:
        email = session.exec(select(Email).where(Email.template == "support_reply")).one()
    assert email.to_address == order.email and "with R- on the box" in email.text_body

    assigned = client.post(f"/api/support/threads/{thread_id}/assign", headers=token,
                           json={"assignee": helper.email})
    mine = client.get("/api/support/threads?assignee=me", headers=token).json()
    closed = client.post(f"/api/support/threads/{thread_id}/status", headers=token,
                         json={"status": "closed"})
    assert assigned.status_code == 200 and assigned.json()["assigned_to"] == helper.email
    assert [t["id"] for t in mine["items"]] == [str(thread_id)]
    assert closed.json()["status"] == "closed"
    assert client.get("/api/support/threads?status=open", headers=token).json()["items"] == []

    for action in ("support.reply", "support.assign", "support.status"):
        [entry] = audit_entries(db, action)
        assert entry.actor_email == helper.email and entry.target_id == str(thread_id)
    notes = [e["note"] for e in history(client, db, order.number)]
    assert any("Reply to the customer" in n for n in notes)
    assert any(f"assigned to {helper.email}" in n for n in notes)
    assert any("set to closed" in n for n in notes)


def test_the_inbox_puts_the_longest_waiting_first_and_filters(client, db, settings):
    orders = [shipped(db, settings, email=f"c{i}@example.com")[0] for i in range(3)]
    threads = [conversation(db, settings, order, f"Question {i}")
               for i, order in enumerate(orders)]
    token = as_role(client, db, "support")
    client.post(f"/api/support/threads/{threads[0]}/reply", headers=token,
                json={"body": "Answered"})

    everything = client.get("/api/support/threads?limit=2", headers=token).json()
    rest = client.get(f"/api/support/threads?limit=2&cursor={everything['next_cursor']}",
                      headers=token).json()
    open_only = client.get("/api/support/threads?status=open", headers=token).json()
    unassigned = client.get("/api/support/threads?unassigned=true", headers=token).json()
    by_order = client.get(f"/api/support/threads?order={orders[2].number}",
                          headers=token).json()

    order_seen = [t["id"] for t in everything["items"] + rest["items"]]
    assert order_seen == [str(threads[1]), str(threads[2]), str(threads[0])]
    assert [t["id"] for t in open_only["items"]] == [str(threads[1]), str(threads[2])]
    assert len(unassigned["items"]) == 3
    assert [t["id"] for t in by_order["items"]] == [str(threads[2])]


def test_support_refusals(client, db, settings):
    order, _, _ = shipped(db, settings)
    thread_id = conversation(db, settings, order, "Hello")
    token = as_role(client, db, "support")
    picker = make_staff(db, "picker")

    blank = client.post(f"/api/support/threads/{thread_id}/reply", headers=token,
                        json={"body": "   "})
    wrong_person = client.post(f"/api/support/threads/{thread_id}/assign", headers=token,
                               json={"assignee": picker.email})
    missing = client.get(f"/api/support/threads/{uuid.uuid4()}", headers=token)
    not_a_uuid = client.get("/api/support/threads/1", headers=token)
    bad_status = client.post(f"/api/support/threads/{thread_id}/status", headers=token,
                             json={"status": "solved"})

    assert blank.status_code == 422
    assert wrong_person.status_code == 422
    assert wrong_person.json()["error"]["code"] == "message_refused"
    assert missing.status_code == 404 and not_a_uuid.status_code == 404
    assert bad_status.status_code == 422
    assert [e.outcome for e in audit_entries(db, "support.assign")] == ["refused"]
