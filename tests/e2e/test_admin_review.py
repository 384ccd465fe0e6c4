"""The middle office on the admin API: the review queue, reviewers' decisions, the screening
rules and the pipeline, against PostgreSQL, Redis and localstripe."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from sqlmodel import col, select, update
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.messages import QUEUES
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from conveyor.templating import create_environment
from fulfilment.payments import capture_order_payment
from fulfilment.screening import screen_order
from models.audit import AuditEntry
from models.base import utcnow
from models.messaging import Email, OutboxMessage
from models.orders import Order, OrderStatus
from models.screening import DEFAULT_RULES, Screening
from storefront import checkout
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff, stock_of

ENV = create_environment()
DAY = timedelta(days=1)


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


def as_role(client: TestClient, db: Database, role: str) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role)))


@pytest.fixture
def admin(client: TestClient, db: Database) -> dict[str, str]:
    return as_role(client, db, "admin")


@pytest.fixture
def reviewer(client: TestClient, db: Database) -> dict[str, str]:
    return as_role(client, db, "reviewer")


def screened_order(db: Database, settings: Settings, *, email: str = "ada@example.com",
                   variant: int | None = None, quantity: int = 1) -> Order:
    """An order placed, authorised at localstripe and screened by the rules in force.

    With the default rules and the test card (issued in the US, parcel to Germany), an address
    at mailinator.com scores 45 and goes to review; an ordinary one is approved."""
    if variant is None:
        variant = make_product(db, variants=[("One", 2500, 10)]).variant_ids[0]
    cart_id, view = shopping.cart(db, [(variant, quantity)])
    with db.unit_of_work() as uow:
        placed = checkout.place_order(
            uow=uow, cart=view, cart_id=cart_id, details=replace(shopping.DETAILS, email=email),
            pending_order_id=None, client_ip="192.0.2.10", settings=settings, now=utcnow())
    assert shopping.pay(db, settings, placed.id).outcome == checkout.Outcome.AUTHORIZED
    with db.unit_of_work() as uow:
        assert screen_order(uow=uow, order_id=placed.id, env=ENV, settings=settings)
    return reload(db, placed.id)


def held_order(db: Database, settings: Settings, **kwargs: Any) -> Order:
    order = screened_order(db, settings, email=f"{uuid.uuid4().hex[:8]}@mailinator.com",
                           **kwargs)
    assert order.status == OrderStatus.ON_HOLD
    return order


def reload(db: Database, order_id: uuid.UUID) -> Order:
    with db.read_session() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order


def screening_of(db: Database, order_id: uuid.UUID) -> Screening:
    with db.read_session() as session:
        return session.exec(select(Screening).where(Screening.order_id == order_id)).one()


def set_screened_at(db: Database, order_id: uuid.UUID, at: datetime) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(update(Screening).where(col(Screening.order_id) == order_id)
                            .values(screened_at=at))


def set_authorized_at(db: Database, order_id: uuid.UUID, at: datetime) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(update(Order).where(col(Order.id) == order_id)
                            .values(authorized_at=at))


def outbox(db: Database, actor: str) -> list[list[Any]]:
    with db.read_session() as session:
        return [m.args for m in session.exec(
            select(OutboxMessage).where(OutboxMessage.actor_name == actor)
            .order_by(col(OutboxMessage.id)))]


def audit_entries(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)
                                 .order_by(col(AuditEntry.id))))


def queue(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get("/api/review-queue", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- the review queue -------------------------------------------------------------------------


def test_the_review_queue_lists_orders_on_hold_oldest_first_with_their_reasons(
    client, reviewer, db, settings
):
    newer = held_order(db, settings)
    older = held_order(db, settings)
    approved = screened_order(db, settings)
    assert approved.status == OrderStatus.APPROVED
    now = utcnow()
    set_screened_at(db, newer.id, now - timedelta(minutes=30))
    set_screened_at(db, older.id, now - timedelta(minutes=90))

    body = queue(client, reviewer)

    assert [item["number"] for item in body["items"]] == [older.number, newer.number]
    assert (body["overdue"], body["authorizations_expiring"]) == (0, 0)
    first = body["items"][0]
    assert (first["email"], first["total_cents"], first["currency"]) == (
        older.email, older.total_cents, "EUR")
    assert (first["score"], first["rule_set_version"]) == (45, 1)
    assert {s["code"]: s["weight"] for s in first["signals"]} == {
        "disposable_email": 35, "country_mismatch": 10}
    assert all(s["reason"] and "facts" in s for s in first["signals"])
    assert first["quality_issues"] == []
    assert 89 <= first["age_minutes"] <= 91
    assert body["items"][1]["age_minutes"] in (29, 30, 31)
    held_since = parse_time(first["held_since"])
    assert parse_time(first["review_deadline"]) == held_since + timedelta(
        hours=settings.review_deadline_hours)
    assert first["overdue"] is False and first["authorization_expiring"] is False
    assert parse_time(first["authorization_expires_at"]) == parse_time(
        first["authorized_at"]) + timedelta(days=7)


def test_the_queue_shows_quality_issues_of_an_order_held_for_them(client, reviewer, db,
                                                                  settings):
    product = make_product(db, variants=[("Kept", 1000, 5)])
    order = screened_order(db, settings, variant=product.variant_ids[0])
    assert order.status == OrderStatus.APPROVED  # a second one just like it is a duplicate
    duplicate = screened_order(db, settings, variant=product.variant_ids[0])

    [item] = queue(client, reviewer)["items"]

    assert item["number"] == duplicate.number
    assert [i["code"] for i in item["quality_issues"]] == ["duplicate_order"]
    assert item["quality_issues"][0]["facts"] == {"other_order": order.number}


def test_orders_held_too_long_are_overdue_and_old_authorisations_are_expiring(
    client, reviewer, db, settings
):
    late, expiring, fine = (held_order(db, settings) for _ in range(3))
    now = utcnow()
    deadline = timedelta(hours=settings.review_deadline_hours)
    warn_from = timedelta(days=7) - timedelta(hours=settings.authorization_warning_hours)
    set_screened_at(db, late.id, now - deadline - timedelta(minutes=5))
    set_screened_at(db, expiring.id, now - timedelta(minutes=2))
    set_screened_at(db, fine.id, now - deadline + timedelta(minutes=30))
    set_authorized_at(db, late.id, now - deadline - timedelta(minutes=6))
    set_authorized_at(db, expiring.id, now - warn_from - timedelta(minutes=10))
    set_authorized_at(db, fine.id, now - warn_from + timedelta(minutes=30))

    body = queue(client, reviewer)

    items = {item["number"]: item for item in body["items"]}
    assert [item["number"] for item in body["items"]] == [late.number, fine.number,
                                                          expiring.number]
    assert (items[late.number]["overdue"], items[late.number]["authorization_expiring"]) == (
        True, False)
    assert (items[expiring.number]["overdue"],
            items[expiring.number]["authorization_expiring"]) == (False, True)
    assert (items[fine.number]["overdue"], items[fine.number]["authorization_expiring"]) == (
        False, False)
    assert (body["overdue"], body["authorizations_expiring"]) == (1, 1)


# -- decisions --------------------------------------------------------------------------------


def test_a_reviewer_approves_an_order_on_hold_and_its_capture_is_queued(client, db, settings):
    order = held_order(db, settings)
    staff = make_staff(db, "reviewer")
    headers = bearer(login(client, staff))

    response = client.post(f"/api/orders/{order.number}/approve",
                           json={"reason": "  Called the customer; all fine.  "},
                           headers=headers)

    assert response.status_code == 200, response.text
    assert response.json() == {"number": order.number, "status": "approved"}
    assert reload(db, order.id).status == OrderStatus.APPROVED
    assert outbox(db, "capture_payment") == [[str(order.id)]]
    screening = screening_of(db, order.id)
    assert (screening.decision, screening.decided_by, screening.decision_reason) == (
        "review", staff.email, "Called the customer; all fine.")
    assert screening.decided_at is not None
    [audited] = audit_entries(db, "order.review_approve")
    assert (audited.actor_email, audited.target_type, audited.target_id) == (
        staff.email, "order", order.number)
    assert audited.before == {"status": "on_hold"}
    assert audited.after == {"status": "approved", "reason": "Called the customer; all fine."}
    assert queue(client, headers)["items"] == []
    history = client.get(f"/api/orders/{order.number}", headers=headers).json()["history"]
    assert (history[-1]["from_status"], history[-1]["to_status"], history[-1]["actor"]) == (
        "on_hold", "approved", staff.email)


def test_a_reviewer_rejects_an_order_voids_it_releases_stock_and_tells_the_customer(
    client, reviewer, db, settings
):
    variant = make_product(db, variants=[("One", 2500, 5)]).variant_ids[0]
    order = held_order(db, settings, variant=variant, quantity=2)
    assert stock_of(db, variant).reserved == 2

    response = client.post(f"/api/orders/{order.number.lower()}/reject",
                           json={"reason": "Address does not exist"}, headers=reviewer)

    assert response.status_code == 200, response.text
    assert response.json() == {"number": order.number, "status": "rejected"}
    assert reload(db, order.id).status == OrderStatus.REJECTED
    assert outbox(db, "void_payment") == [[str(order.payment_id)]]
    assert outbox(db, "capture_payment") == []
    assert (stock_of(db, variant).reserved, stock_of(db, variant).on_hand) == (0, 5)
    with db.read_session() as session:
        [mail] = session.exec(select(Email).where(Email.template == "order_cancelled")).all()
    assert (mail.order_id, mail.to_address) == (order.id, order.email)
    assert screening_of(db, order.id).decision_reason == "Address does not exist"
    [audited] = audit_entries(db, "order.review_reject")
    assert audited.after == {"status": "rejected", "reason": "Address does not exist"}


@pytest.mark.parametrize(("first", "second"), [("approve", "approve"), ("approve", "reject"),
                                               ("reject", "approve"), ("reject", "reject")])
def test_a_second_decision_on_the_same_order_is_refused_with_409(client, reviewer, db,
                                                                 settings, first, second):
    order = held_order(db, settings)
    done = client.post(f"/api/orders/{order.number}/{first}", json={"reason": "First look"},
                       headers=reviewer)
    assert done.status_code == 200, done.text
    status = done.json()["status"]

    again = client.post(f"/api/orders/{order.number}/{second}",
                        json={"reason": "Second look"}, headers=reviewer)

    assert again.status_code == 409
    assert again.json() == {"error": {
        "code": "illegal_transition",
        "message": f"Only an order on hold can be decided; this one is {status}.",
        "details": {"status": status}}}
    assert screening_of(db, order.id).decision_reason == "First look"
    assert len(outbox(db, "capture_payment")) + len(outbox(db, "void_payment")) == 1
    assert len(audit_entries(db, f"order.review_{first}")) == 1
    assert len(audit_entries(db, "order.review_approve")
               + audit_entries(db, "order.review_reject")) == 1


def test_an_order_that_was_never_held_cannot_be_decided(client, reviewer, db, settings):
    order = screened_order(db, settings)  # approved by the rules
    response = client.post(f"/api/orders/{order.number}/reject", json={"reason": "Hmm, no"},
                           headers=reviewer)
    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"status": "approved"}
    unknown = client.post("/api/orders/CV-NOSUCH1/approve", json={"reason": "Looks fine"},
                          headers=reviewer)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_a_decision_needs_a_reason_and_nothing_else(client, reviewer, db, settings, decision):
    order = held_order(db, settings)
    for body in ({}, {"reason": ""}, {"reason": "ok"}, {"reason": "   "}, {"reason": "x" * 1001},
                 {"reason": "Looks fine", "notify": False}):
        response = client.post(f"/api/orders/{order.number}/{decision}", json=body,
                               headers=reviewer)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_input"
    assert reload(db, order.id).status == OrderStatus.ON_HOLD
    assert screening_of(db, order.id).decided_by == ""
    assert audit_entries(db, f"order.review_{decision}") == []


@pytest.mark.parametrize("role", ["stock", "finance", "picker"])
def test_other_roles_may_neither_see_the_queue_nor_decide(client, db, settings, role):
    order = held_order(db, settings)
    headers = as_role(client, db, role)
    forbidden = {"code": "forbidden", "message": "Your role does not allow this.",
                 "details": {"needs": "orders:review"}}

    listed = client.get("/api/review-queue", headers=headers)
    assert (listed.status_code, listed.json()) == (403, {"error": forbidden})
    for decision in ("approve", "reject"):
        response = client.post(f"/api/orders/{order.number}/{decision}",
                               json={"reason": "Let me through"}, headers=headers)
        assert response.status_code == 403
        assert response.json() == {"error": forbidden}
    assert reload(db, order.id).status == OrderStatus.ON_HOLD


def test_the_order_detail_shows_the_screening_and_later_the_allocations(
    client, reviewer, db, settings
):
    product = make_product(db, variants=[("One", 2500, 5)])
    order = held_order(db, settings, variant=product.variant_ids[0], quantity=2)

    detail = client.get(f"/api/orders/{order.number}", headers=reviewer).json()

    screening = detail["screening"]
    assert (screening["decision"], screening["score"], screening["rule_set_version"]) == (
        "review", 45, 1)
    assert {s["code"] for s in screening["signals"]} == {"disposable_email",
                                                         "country_mismatch"}
    assert (screening["decided_by"], screening["decided_at"]) == ("", None)
    assert detail["allocations"] == []

    assert client.post(f"/api/orders/{order.number}/approve", json={"reason": "Known buyer"},
                       headers=reviewer).status_code == 200
    assert capture_order_payment(db=db, gateway=create_gateway(settings), env=ENV,
                                 settings=settings, order_id=order.id) == "captured"

    detail = client.get(f"/api/orders/{order.number}", headers=reviewer).json()
    assert detail["status"] == "allocated"
    assert detail["allocations"] == [{
        "sku": product.skus[0], "variant_id": product.variant_ids[0], "warehouse": "TST",
        "bin": "A-01-1", "quantity": 2, "status": "allocated"}]
    assert detail["screening"]["decided_by"] != ""
    assert detail["screening"]["decision_reason"] == "Known buyer"
    assert detail["payment"]["captured_cents"] == order.total_cents


# -- rules ------------------------------------------------------------------------------------


def rules_body(**thresholds: int) -> dict[str, Any]:
    body = DEFAULT_RULES.model_dump(mode="json")
    body["thresholds"].update(thresholds)
    return body


def test_a_reviewer_reads_the_rules_but_may_not_change_them(client, reviewer, db):
    response = client.get("/api/screening/rules", headers=reviewer)

    assert response.status_code == 200, response.text
    [version] = response.json()["items"]
    assert (version["version"], version["note"], version["created_by"]) == (
        1, "defaults", "test")
    assert version["body"] == DEFAULT_RULES.model_dump(mode="json")

    refused = client.post("/api/screening/rules",
                          json={"body": rules_body(review=10), "note": "Stricter"},
                          headers=reviewer)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == {"needs": "screening:write"}
    for role in ("stock", "picker"):
        assert client.get("/api/screening/rules",
                          headers=as_role(client, db, role)).status_code == 403
    assert audit_entries(db, "screening.rules_change") == []


def test_an_admin_puts_a_new_rule_set_in_force_and_screening_uses_it(client, admin, db,
                                                                     settings):
    assert screened_order(db, settings).status == OrderStatus.APPROVED  # 15 < 40

    response = client.post("/api/screening/rules",
                           json={"body": rules_body(review=10), "note": " Stricter for now "},
                           headers=admin)

    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["version"], created["note"]) == (2, "Stricter for now")
    assert created["body"]["thresholds"] == {"review": 10, "reject": 80}
    listed = client.get("/api/screening/rules", headers=admin).json()["items"]
    assert [v["version"] for v in listed] == [2, 1]
    [audited] = audit_entries(db, "screening.rules_change")
    assert (audited.target_type, audited.target_id) == ("rule_set", "2")
    assert audited.before == DEFAULT_RULES.model_dump(mode="json")
    assert audited.after == rules_body(review=10)
    assert audited.actor_email == created["created_by"]

    order = screened_order(db, settings, email="bob@example.org")  # 15 again, now >= 10
    assert order.status == OrderStatus.ON_HOLD
    screening = screening_of(db, order.id)
    assert (screening.rule_set_version, screening.score, screening.decision) == (
        2, 15, "review")


def _without_signal(code: str) -> dict[str, Any]:
    body = rules_body()
    del body["signals"][code]
    return body


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = rules_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize("payload", [
    pytest.param({"body": _without_signal("card_velocity"), "note": "Fewer"}, id="missing"),
    pytest.param({"body": _with(("signals", "made_up"), {"weight": 5}), "note": "More"},
                 id="unknown-signal"),
    pytest.param({"body": rules_body(review=90, reject=80), "note": "Upside down"},
                 id="review-above-reject"),
    pytest.param({"body": _with(("thresholds", "hold"), 50), "note": "Extra"},
                 id="unknown-threshold"),
    pytest.param({"body": _with(("signals", "ip_velocity", "colour"), "red"), "note": "Extra"},
                 id="unknown-signal-field"),
    pytest.param({"body": _with(("extra",), 1), "note": "Extra"}, id="unknown-body-field"),
    pytest.param({"body": rules_body(), "note": "Fine", "active": True}, id="unknown-field"),
    pytest.param({"body": _with(("signals", "ip_velocity", "window_hours"), None),
                  "note": "No window"}, id="velocity-without-window"),
    pytest.param({"body": _with(("signals", "sku_quantity", "weight"), 101), "note": "Heavy"},
                 id="weight-over-100"),
    pytest.param({"body": rules_body(review=-1), "note": "Negative"}, id="negative"),
    pytest.param({"body": rules_body()}, id="no-note"),
    pytest.param({"body": rules_body(), "note": "    "}, id="blank-note"),
])
def test_an_invalid_rule_set_is_refused_with_422(client, admin, db, payload):
    response = client.post("/api/screening/rules", json=payload, headers=admin)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert response.json()["error"]["details"]["fields"]
    assert [v["version"] for v in client.get("/api/screening/rules",
                                              headers=admin).json()["items"]] == [1]
    assert audit_entries(db, "screening.rules_change") == []


# -- the pipeline -----------------------------------------------------------------------------


def test_the_pipeline_shows_queues_and_the_outbox_to_an_admin_only(client, admin, db,
                                                                    settings, clean_redis):
    assert settings.redis_url == clean_redis
    held_order(db, settings)  # screen_order, deliver_email: nothing relayed in this test
    with db.read_session() as session:
        unpublished = len(session.exec(select(OutboxMessage).where(
            col(OutboxMessage.published_at).is_(None))).all())
    assert unpublished >= 2
    waiting = redis.Redis.from_url(clean_redis)
    stamp = int((utcnow() - timedelta(seconds=30)).timestamp() * 1000)
    waiting.rpush("dramatiq:capture", "m-1")
    waiting.hset("dramatiq:capture.msgs", "m-1", json.dumps({"message_timestamp": stamp}))

    response = client.get("/api/pipeline", headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["redis_reachable"] is True
    queues = {q["queue"]: q for q in body["queues"]}
    assert list(queues) == list(QUEUES)
    assert (queues["capture"]["waiting"], queues["capture"]["dead"]) == (1, 0)
    assert 29 <= queues["capture"]["oldest_waiting_seconds"] < 120
    assert queues["screening"] == {"queue": "screening", "waiting": 0, "delayed": 0, "dead": 0,
                                   "oldest_waiting_seconds": None}
    assert body["outbox"]["unpublished"] == unpublished
    assert body["outbox"]["oldest_seconds"] >= 0

    for role in ("picker", "reviewer"):
        refused = client.get("/api/pipeline", headers=as_role(client, db, role))
        assert refused.status_code == 403
        assert refused.json()["error"]["details"] == {"needs": "pipeline:read"}


def test_the_pipeline_says_so_when_redis_cannot_be_reached(db, settings):
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(unreachable, db=db)) as client:
        admin = as_role(client, db, "admin")
        response = client.get("/api/pipeline", headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["redis_reachable"], body["queues"]) == (False, [])
    assert body["outbox"] == {"unpublished": 0, "oldest_seconds": None}
