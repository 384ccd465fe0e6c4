"""The finance desk on the admin API, against PostgreSQL and localstripe: the payments ledger
(filters, cursor, CSV), one order's ledger, refunds (amounts, lines back into a bin, the second
person above the limit, refusals), disputes, documents as PDF and the customer's own link."""

from __future__ import annotations

import csv
import io
import re
import uuid
import zlib
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import col, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds
from fulfilment.inventory import verify_ledger
from models.audit import AuditEntry
from models.base import utcnow
from models.finance import ClosedPeriod, Dispute, FinanceDocument, Refund, RefundStatus
from models.orders import Order
from models.payments import Payment, PaymentStatus
from models.screening import DEFAULT_RULES, RuleSet
from storefront.app import create_app as create_storefront
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_pending_order, make_product, make_staff, stock_of

ENV = shopping.ENV


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture
def finance(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "finance")))


def as_role(client: TestClient, db: Database, role: str) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role)))


def one_test_card(db: Database) -> None:
    """Every test order pays with the same test card: no velocity signal for that."""
    body = DEFAULT_RULES.model_dump(mode="json")
    body["signals"]["card_velocity"]["weight"] = 0
    with db.unit_of_work() as uow:
        uow.session.add(RuleSet(version=2, body=body, note="one test card", created_by="t"))


def captured_order(db: Database, settings: Settings, *, units: int = 2, price: int = 4000,
                   email: str = "ada@example.com") -> tuple[Order, int, str]:
    """An order paid, screened and captured at localstripe: (order, variant id, SKU)."""
    made = make_product(db, variants=[("Std", price, 10)])
    fresh = shopping.bought(db, settings, [(made.variant_ids[0], units)], email=email)
    return fresh, made.variant_ids[0], made.skus[0]


def process(db: Database, settings: Settings, refund_id: str) -> str:
    """What the `process_refund` actor does."""
    return refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=uuid.UUID(refund_id))


def audit_entries(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)
                                 .order_by(col(AuditEntry.id))))


def pdf_text(pdf: bytes) -> bytes:
    """The PDF with its compressed streams inflated, so the text drawn in it can be found."""
    parts = [pdf]
    for match in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            parts.append(zlib.decompressobj().decompress(match.group(1)))
        except zlib.error:
            continue
    return b"\n".join(parts)


def refund(client: TestClient, headers: dict[str, str], number: str, **body: Any) -> Any:
    return client.post(f"/api/orders/{number}/refunds", headers=headers,
                       json={"reason": "customer asked", **body})


# -- The payments ledger --------------------------------------------------------------------------


def test_the_ledger_lists_payments_with_their_amounts_ids_and_refunds_and_filters_them(
    client, db, settings, finance
):
    one_test_card(db)
    first, _, _ = captured_order(db, settings, email="first@example.com")
    second, _, _ = captured_order(db, settings, email="second@example.com")
    make_pending_order(db)  # no payment: not in the ledger
    given = refund(client, finance, first.number, amount_cents=1500)
    assert given.status_code == 202, given.text
    assert process(db, settings, given.json()["id"]) == "succeeded"

    page = client.get("/api/payments", headers=finance)
    assert page.status_code == 200, page.text
    rows = {row["order_number"]: row for row in page.json()["items"]}
    assert set(rows) == {first.number, second.number}
    row = rows[first.number]
    with db.read_session() as session:
        payment = session.get(Payment, first.payment_id)
    assert (row["authorized_cents"], row["captured_cents"], row["refunded_cents"],
            row["disputed_cents"]) == (first.total_cents, first.total_cents, 1500, 0)
    assert row["status"] == PaymentStatus.PARTIALLY_REFUNDED and row["pays_order"]
    assert row["stripe_payment_intent_id"] == payment.stripe_payment_intent_id
    assert row["stripe_charge_id"] == payment.stripe_charge_id and row["stripe_charge_id"]
    assert row["refund_ids"] == [given.json()["id"]] and row["dispute_ids"] == []
    assert rows[second.number]["refund_ids"] == []

    def numbers(**params: Any) -> list[str]:
        response = client.get("/api/payments", headers=finance, params=params)
        assert response.status_code == 200, response.text
        return [r["order_number"] for r in response.json()["items"]]

    assert numbers(has_refunds="true") == [first.number]
    assert numbers(has_refunds="false") == [second.number]
    assert numbers(has_disputes="true") == []
    assert numbers(order=second.number.lower()) == [second.number]
    assert numbers(email="FIRST@example.com") == [first.number]
    assert numbers(status=["captured"]) == [second.number]
    assert set(numbers(status=["captured", "partially_refunded"])) == {first.number,
                                                                         second.number}
    now = utcnow()
    assert set(numbers(captured_from=(now - timedelta(hours=1)).isoformat())) == {
        first.number, second.number}
    assert numbers(captured_to=(now - timedelta(hours=1)).isoformat()) == []
    assert numbers(created_from=(now + timedelta(minutes=5)).isoformat()) == []

    # One at a time, newest first, with the cursor: each once.
    seen, cursor = [], None
    while True:
        response = client.get("/api/payments", headers=finance,
                              params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        body = response.json()
        seen += [r["order_number"] for r in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [second.number, first.number]


def test_the_ledger_exports_as_csv_and_the_export_is_audited(client, db, settings, finance):
    order, _, _ = captured_order(db, settings)
    given = refund(client, finance, order.number, amount_cents=700).json()

    by_format = client.get("/api/payments", headers=finance, params={"format": "csv"})
    by_accept = client.get("/api/payments", headers={**finance, "accept": "text/csv"})
    for response in (by_format, by_accept):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(by_format.text)))
    assert len(rows) == 1
    assert rows[0]["order_number"] == order.number
    assert rows[0]["captured_cents"] == str(order.total_cents)
    assert rows[0]["refund_ids"] == given["id"]
    assert rows[0]["pays_order"] == "true"
    assert len(audit_entries(db, "payments.export")) == 2

    bad = client.get("/api/payments", headers=finance, params={"format": "csv",
                                                                "cursor": "nonsense"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


def test_one_orders_ledger_has_its_payments_refunds_disputes_and_documents(
    client, db, settings, finance
):
    order, _, _ = captured_order(db, settings)
    given = refund(client, finance, order.number, amount_cents=1000).json()
    process(db, settings, given["id"])
    with db.unit_of_work() as uow:
        uow.session.add(Dispute(id="dp_ledger_1", payment_id=order.payment_id,
                                order_id=order.id, charge_id="ch_x", amount_cents=500,
                                status="needs_response", reason="fraudulent"))

    response = client.get(f"/api/orders/{order.number.lower()}/ledger", headers=finance)
    assert response.status_code == 200, response.text
    ledger = response.json()
    assert ledger["number"] == order.number
    assert (ledger["captured_cents"], ledger["refunded_cents"]) == (order.total_cents, 1000)
    assert ledger["refundable_cents"] == order.total_cents - 1000
    assert [p["payment_id"] for p in ledger["payments"]] == [str(order.payment_id)]
    [made] = ledger["refunds"]
    assert made["status"] == RefundStatus.SUCCEEDED and made["stripe_refund_id"]
    assert made["credit_note_number"].startswith("CN-")
    assert [d["id"] for d in ledger["disputes"]] == ["dp_ledger_1"]
    kinds = sorted(d["kind"] for d in ledger["documents"])
    assert kinds == ["credit_note", "invoice"]
    assert client.get("/api/orders/CV-NOSUCH/ledger", headers=finance).status_code == 404


def test_disputes_are_listed_with_filters(client, db, settings, finance):
    order_id = make_pending_order(db)
    with db.read_session() as session:
        number = session.get(Order, order_id).number
    now = utcnow()
    with db.unit_of_work() as uow:
        uow.session.add(Dispute(id="dp_open", order_id=order_id, charge_id="ch_1",
                                amount_cents=900, status="needs_response",
                                created_at=now - timedelta(days=2)))
        uow.session.add(Dispute(id="dp_won", charge_id="ch_2", amount_cents=300,
                                status="won", outcome="won", created_at=now))

    def ids(**params: Any) -> list[str]:
        response = client.get("/api/disputes", headers=finance, params=params)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["items"]]

    assert ids() == ["dp_won", "dp_open"]
    assert ids(open="true") == ["dp_open"]
    assert ids(open="false") == ["dp_won"]
    assert ids(status=["won", "lost"]) == ["dp_won"]
    assert ids(order=number) == ["dp_open"]
    assert ids(created_from=(now - timedelta(days=1)).isoformat()) == ["dp_won"]
    first = client.get("/api/disputes", headers=finance, params={"limit": 1}).json()
    assert client.get("/api/disputes", headers=finance, params={
        "limit": 1, "cursor": first["next_cursor"]}).json()["items"][0]["id"] == "dp_open"
    listed = client.get("/api/disputes", headers=finance).json()["items"]
    assert listed[0]["order_number"] is None and listed[1]["order_number"] == number


# -- Refunds --------------------------------------------------------------------------------------


def test_a_refund_of_lines_puts_the_units_back_into_the_bin_and_the_ledger_stays_true(
    client, db, settings, finance
):
    order, variant, sku = captured_order(db, settings, units=2)
    before = stock_of(db, variant).on_hand

    response = refund(client, finance, order.number, reason="returned unopened",
                      lines=[{"sku": sku.lower(), "quantity": 1,
                              "restock_bin": {"warehouse": "tst", "bin": "a-01-1"}}])
    assert response.status_code == 202, response.text
    made = response.json()
    assert made["status"] == RefundStatus.PROCESSING
    assert made["amount_cents"] == 4000 + round(4000 * order.tax_rate_bps / 10_000)
    assert made["lines"] == [{"sku": sku, "variant_id": variant, "quantity": 1,
                              "restock_bin": {"warehouse": "TST", "bin": "A-01-1"}}]
    assert process(db, settings, made["id"]) == "succeeded"

    assert stock_of(db, variant).on_hand == before + 1
    with db.read_session() as session:
        assert verify_ledger(session) == []
    done = client.get(f"/api/refunds/{made['id']}", headers=finance).json()
    assert done["status"] == RefundStatus.SUCCEEDED and done["credit_note_number"]
    [entry] = audit_entries(db, "refund.request")
    assert entry.target_id == made["id"] and entry.after["order"] == order.number
    assert entry.after["lines"][0]["restock_bin"] == {"warehouse": "TST", "bin": "A-01-1"}

    # The other unit can still go back, but not two.
    again = refund(client, finance, order.number, lines=[{"sku": sku, "quantity": 2}])
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "refund_refused"
    assert again.json()["error"]["details"]["refundable_quantity"] == 1


def test_never_more_than_was_captured_and_refusals_are_audited(client, db, settings, finance):
    order, _, _ = captured_order(db, settings)
    over = refund(client, finance, order.number, amount_cents=order.total_cents + 1)
    assert over.status_code == 409
    error = over.json()["error"]
    assert error["code"] == "refund_refused"
    assert error["details"]["refundable_cents"] == order.total_cents
    assert f"At most {order.total_cents} cents" in error["message"]
    [refused] = audit_entries(db, "refund.request")
    assert refused.outcome == "refused" and refused.target_id == order.number

    everything = refund(client, finance, order.number)  # no amount, no lines: all of it
    assert everything.status_code == 202
    assert everything.json()["amount_cents"] == order.total_cents
    assert refund(client, finance, order.number, amount_cents=1).status_code == 409

    unpaid = make_pending_order(db)
    with db.read_session() as session:
        number = session.get(Order, unpaid).number
    not_captured = refund(client, finance, number, amount_cents=100)
    assert not_captured.status_code == 409
    assert "captured" in not_captured.json()["error"]["message"]


def test_a_large_refund_needs_a_second_finance_user(db, settings):
    strict = settings.model_copy(update={"refund_approval_cents": 1000})
    with TestClient(create_app(strict, db=db)) as client:
        alice = bearer(login(client, make_staff(db, "finance", email="alice@conveyor.test")))
        bob = bearer(login(client, make_staff(db, "finance", email="bob@conveyor.test")))
        order, _, _ = captured_order(db, settings)

        asked = refund(client, alice, order.number, amount_cents=5000)
        assert asked.status_code == 202
        made = asked.json()
        assert made["status"] == RefundStatus.PENDING_APPROVAL
        assert process(db, settings, made["id"]) == "nothing to do"  # not before approval
        waiting = client.get("/api/refunds", headers=bob,
                             params={"status": "pending_approval"}).json()["items"]
        assert [r["id"] for r in waiting] == [made["id"]]

        own = client.post(f"/api/refunds/{made['id']}/approve", headers=alice)
        assert own.status_code == 409
        assert "second person" in own.json()["error"]["message"]
        [denied] = audit_entries(db, "refund.approve")
        assert denied.outcome == "denied" and denied.actor_email == "alice@conveyor.test"

        approved = client.post(f"/api/refunds/{made['id']}/approve", headers=bob)
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == RefundStatus.PROCESSING
        assert approved.json()["decided_by"] == "bob@conveyor.test"
        assert process(db, settings, made["id"]) == "succeeded"
        again = client.post(f"/api/refunds/{made['id']}/approve", headers=bob)
        assert again.status_code == 409 and "not waiting" in again.json()["error"]["message"]

        # A second large one, rejected with a reason.
        other = refund(client, alice, order.number, amount_cents=2000).json()
        no_reason = client.post(f"/api/refunds/{other['id']}/reject", headers=bob, json={})
        assert no_reason.status_code == 422
        rejected = client.post(f"/api/refunds/{other['id']}/reject", headers=bob,
                               json={"reason": "goodwill already given"})
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        assert process(db, settings, other["id"]) == "nothing to do"
    outcomes = [(e.actor_email, e.outcome) for e in audit_entries(db, "refund.approve")]
    assert outcomes == [("alice@conveyor.test", "denied"), ("bob@conveyor.test", "ok"),
                        ("bob@conveyor.test", "refused")]
    [rejection] = audit_entries(db, "refund.reject")
    assert rejection.after["reason"] == "goodwill already given"
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
    assert payment.refunded_cents == 5000


def test_a_refund_on_a_closed_day_is_refused(client, db, settings, finance):
    order, _, _ = captured_order(db, settings)
    with db.unit_of_work() as uow:
        uow.session.add(ClosedPeriod(day=utcnow().date(), closed_by="test"))
    response = refund(client, finance, order.number, amount_cents=100)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "period_closed"
    with db.read_session() as session:
        assert session.exec(select(Refund)).all() == []


@pytest.mark.parametrize("body", [
    {"amount_cents": 0},
    {"amount_cents": -5},
    {"amount_cents": 2**31},
    {"amount_cents": "ten"},
    {"reason": ""},
    {"reason": "   "},
    {"reason": "x" * 501},
    {"lines": [{"sku": "T-1", "quantity": 0}]},
    {"lines": [{"sku": "=cmd()", "quantity": 1}]},
    {"lines": [{"sku": "T-1", "quantity": 1}, {"sku": "t-1", "quantity": 1}]},
    {"lines": [{"sku": "T-1", "quantity": 1, "restock_bin": {"warehouse": "TST"}}]},
    {"lines": "all"},
    {"surprise": True},
])
def test_bad_refund_input_is_refused_with_422(client, db, settings, finance, body):
    order_id = make_pending_order(db)
    with db.read_session() as session:
        number = session.get(Order, order_id).number
    response = client.post(f"/api/orders/{number}/refunds", headers=finance,
                           json={"reason": "customer asked", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"


def test_skus_and_bins_that_are_not_there_are_named_in_the_422(client, db, settings, finance):
    order, _, sku = captured_order(db, settings)
    response = refund(client, finance, order.number, lines=[
        {"sku": "NOPE-1", "quantity": 1},
        {"sku": sku, "quantity": 1, "restock_bin": {"warehouse": "TST", "bin": "Z-99"}}])
    assert response.status_code == 422
    fields = response.json()["error"]["details"]["fields"]
    assert [f["loc"] for f in fields] == [["body", "lines", "0", "sku"],
                                          ["body", "lines", "1", "restock_bin"]]
    assert refund(client, finance, "CV-NOSUCH", amount_cents=100).status_code == 404
    assert client.post("/api/refunds/not-a-uuid/approve", headers=finance).status_code == 404
    assert client.post(f"/api/refunds/{uuid.uuid4()}/approve",
                       headers=finance).status_code == 404
    assert client.get(f"/api/refunds/{uuid.uuid4()}", headers=finance).status_code == 404
    assert client.get("/api/refunds", headers=finance,
                      params={"cursor": "e30"}).status_code == 422
    with db.read_session() as session:
        assert session.exec(select(Refund)).all() == []


def test_refunds_are_listed_newest_first_by_order_and_status(client, db, settings, finance):
    one_test_card(db)
    first, _, _ = captured_order(db, settings, email="one@example.com")
    second, _, _ = captured_order(db, settings, email="two@example.com")
    a = refund(client, finance, first.number, amount_cents=100).json()
    b = refund(client, finance, second.number, amount_cents=200).json()
    process(db, settings, a["id"])

    def ids(**params: Any) -> list[str]:
        response = client.get("/api/refunds", headers=finance, params=params)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["items"]]

    assert ids() == [b["id"], a["id"]]
    assert ids(order=first.number) == [a["id"]]
    assert ids(status=["succeeded"]) == [a["id"]]
    assert ids(status=["processing", "pending_approval"]) == [b["id"]]
    page = client.get("/api/refunds", headers=finance, params={"limit": 1}).json()
    assert ids(limit=1, cursor=page["next_cursor"]) == [a["id"]]


# -- Roles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["stock", "picker", "reviewer"])
def test_other_roles_cannot_use_the_finance_desk(client, db, role):
    headers = as_role(client, db, role)
    some = uuid.uuid4()
    calls = [
        ("GET", "/api/payments", None), ("GET", "/api/orders/CV-1/ledger", None),
        ("POST", "/api/orders/CV-1/refunds", {"reason": "abc"}), ("GET", "/api/refunds", None),
        ("POST", f"/api/refunds/{some}/approve", None),
        ("POST", f"/api/refunds/{some}/reject", {"reason": "abc"}),
        ("GET", "/api/disputes", None),
        ("POST", "/api/reconciliation/runs", {"start": "2026-01-01", "end": "2026-01-02"}),
        ("GET", "/api/reconciliation/runs", None), ("GET", "/api/periods", None),
        ("POST", "/api/periods/2026-01-01/close", {"note": "x"}),
        ("POST", "/api/reconciliation/items/1/resolve", {"note": "abc"}),
        ("GET", "/api/documents", None), ("GET", f"/api/documents/{some}.pdf", None),
    ]
    for method, path, body in calls:
        response = client.request(method, path, headers=headers, json=body)
        assert response.status_code == 403, f"{role} {method} {path}: {response.status_code}"
    assert len(audit_entries(db, "access.denied")) == len(calls)


def test_finance_and_admin_may_refund_and_manage_but_finance_reads_payments(client, db):
    for role in ("finance", "admin"):
        headers = as_role(client, db, role)
        assert client.get("/api/reconciliation/runs", headers=headers).status_code == 200
        assert client.get("/api/periods", headers=headers).status_code == 200
        assert client.post("/api/orders/CV-NOSUCH/refunds", headers=headers,
                           json={"reason": "abc"}).status_code == 404


# -- Documents ------------------------------------------------------------------------------------


def test_invoices_and_credit_notes_are_listed_and_rendered_as_pdf(client, db, settings, finance):
    order, _, _ = captured_order(db, settings)
    process(db, settings, refund(client, finance, order.number, amount_cents=1234).json()["id"])

    listed = client.get("/api/documents", headers=finance, params={"order": order.number})
    assert listed.status_code == 200, listed.text
    documents = {d["kind"]: d for d in listed.json()["items"]}
    assert set(documents) == {"invoice", "credit_note"}
    invoice, note = documents["invoice"], documents["credit_note"]
    assert invoice["amount_cents"] == order.total_cents and note["amount_cents"] == 1234
    assert [d["kind"] for d in client.get("/api/documents", headers=finance, params={
        "kind": "credit_note"}).json()["items"]] == ["credit_note"]
    assert client.get("/api/documents", headers=finance,
                      params={"order": "CV-OTHER"}).json()["items"] == []

    for document in (invoice, note):
        pdf = client.get(document["pdf_path"], headers=finance)
        assert pdf.status_code == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert document["number"] in pdf.headers["content-disposition"]
        assert pdf.content.startswith(b"%PDF-")
        text = pdf_text(pdf.content)
        assert document["number"].encode() in text
        assert order.number.encode() in text
    assert b"12.34" in pdf_text(client.get(note["pdf_path"], headers=finance).content)
    assert client.get(f"/api/documents/{uuid.uuid4()}.pdf", headers=finance).status_code == 404
    assert client.get("/api/documents/nonsense.pdf", headers=finance).status_code == 404


def test_the_customer_gets_the_pdf_by_the_documents_own_link_only(db, settings):
    order, _, _ = captured_order(db, settings)
    with db.read_session() as session:
        invoice = session.exec(select(FinanceDocument).where(
            FinanceDocument.order_id == order.id)).one()
    with TestClient(create_storefront(settings, db=db),
                    base_url="http://127.0.0.1:8000") as shop:
        page = shop.get(f"/orders/{order.status_token}")  # the order status page links it
        assert page.status_code == 200
        assert f'href="/documents/{invoice.access_token}"' in page.text
        assert f"Invoice {invoice.number}" in page.text
        response = shop.get(f"/documents/{invoice.access_token}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pdf"
        assert response.headers["cache-control"] == "no-store"
        assert "noindex" in response.headers["x-robots-tag"]
        assert response.headers["referrer-policy"] == "no-referrer"
        assert invoice.number.encode() in pdf_text(response.content)
        for wrong in (invoice.access_token[:-1] + ("A" if invoice.access_token[-1] != "A"
                                                   else "B"),
                      "short", "x" * 200, invoice.number):
            assert shop.get(f"/documents/{wrong}").status_code == 404
