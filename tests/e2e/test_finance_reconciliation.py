"""Reconciliation runs and closed days on the admin API: a run's totals per class, its items by
class, resolving one (once, audited), closing a day with and without unresolved differences."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from models.audit import AuditEntry
from models.base import utcnow
from models.finance import ClosedPeriod, DifferenceClass, StripeBalanceTransaction
from tests.e2e.admin_client import bearer, login
from tests.factories import make_staff


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


@pytest.fixture
def finance(client: TestClient, db: Database) -> dict[str, str]:
    return bearer(login(client, make_staff(db, "finance", email="fin@conveyor.test")))


def stray_charge(db: Database, bt_id: str, at: datetime, amount: int = 999) -> None:
    """Money Stripe says it moved that no order of ours explains."""
    with db.unit_of_work() as uow:
        uow.session.add(StripeBalanceTransaction(
            id=bt_id, type="charge", source=f"ch_{bt_id}", amount_cents=amount, fee_cents=30,
            net_cents=amount - 30, currency="EUR", created=at))


def audit_of(db: Database, action: str) -> list[AuditEntry]:
    with db.read_session() as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_run_counts_each_class_and_its_items_can_be_filtered_paged_and_resolved(
    client, db, finance
):
    yesterday = utcnow().date() - timedelta(days=1)
    noon = datetime.combine(yesterday, time(12), UTC)
    stray_charge(db, "txn_a", noon)
    stray_charge(db, "txn_b", noon + timedelta(hours=1), amount=500)

    response = client.post("/api/reconciliation/runs", headers=finance,
                           json={"start": yesterday.isoformat(), "end": yesterday.isoformat()})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["totals"][DifferenceClass.MISSING_IN_SHOP] == {"items": 2, "cents": 1499}
    assert run["totals"][DifferenceClass.AMOUNT_MISMATCH] == {"items": 0, "cents": 0}
    assert (run["differences"], run["unresolved_differences"]) == (2, 2)
    assert run["created_by"] == "fin@conveyor.test"
    [entry] = audit_of(db, "reconciliation.run")
    assert entry.target_id == str(run["id"])

    listed = client.get("/api/reconciliation/runs", headers=finance).json()
    assert [r["id"] for r in listed["items"]] == [run["id"]]

    detail = client.get(f"/api/reconciliation/runs/{run['id']}", headers=finance,
                        params={"difference": ["missing_in_shop"], "limit": 1})
    assert detail.status_code == 200, detail.text
    first = detail.json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = client.get(f"/api/reconciliation/runs/{run['id']}", headers=finance, params={
        "difference": "missing_in_shop", "limit": 1, "cursor": first["next_cursor"]}).json()
    items = first["items"] + second["items"]
    assert {i["balance_transaction_id"] for i in items} == {"txn_a", "txn_b"}
    assert second["next_cursor"] is None
    assert client.get(f"/api/reconciliation/runs/{run['id']}", headers=finance, params={
        "difference": "duplicate"}).json()["items"] == []

    item_id = items[0]["id"]
    resolved = client.post(f"/api/reconciliation/items/{item_id}/resolve", headers=finance,
                           json={"note": "a test charge made by hand at Stripe"})
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolved_by"] == "fin@conveyor.test"
    again = client.post(f"/api/reconciliation/items/{item_id}/resolve", headers=finance,
                        json={"note": "twice"})
    assert again.status_code == 409
    [entry] = audit_of(db, "reconciliation.resolve")
    assert entry.after["note"] == "a test charge made by hand at Stripe"
    open_items = client.get(f"/api/reconciliation/runs/{run['id']}", headers=finance,
                            params={"resolved": "false"}).json()
    assert [i["id"] for i in open_items["items"]] != [item_id]
    assert open_items["unresolved_differences"] == 1


@pytest.mark.parametrize(("body", "status"), [
    ({"start": "2026-02-10", "end": "2026-02-01"}, 422),
    ({"start": "2024-01-01", "end": "2026-01-01"}, 422),
    ({"start": "2026-02-30", "end": "2026-03-01"}, 422),
    ({"start": "9999-12-31", "end": "9999-12-31"}, 422),
    ({"start": "2026-01-01"}, 422),
    ({"start": "2026-01-01", "end": "2026-01-01", "grace": 3}, 422),
    ({"start": "0001-01-01", "end": "0001-01-01"}, 201),
    ({"start": "9999-12-30", "end": "9999-12-30"}, 201),
])
def test_run_periods_are_checked(client, finance, body, status):
    response = client.post("/api/reconciliation/runs", headers=finance, json=body)
    assert response.status_code == status, response.text


def test_bad_run_and_item_ids_and_cursors_are_404_or_422(client, finance):
    assert client.get("/api/reconciliation/runs/999", headers=finance).status_code == 404
    assert client.get("/api/reconciliation/runs/abc", headers=finance).status_code == 404
    assert client.get("/api/reconciliation/runs/0", headers=finance).status_code == 404
    assert client.post("/api/reconciliation/items/999/resolve", headers=finance,
                       json={"note": "nothing"}).status_code == 404
    assert client.post("/api/reconciliation/items/1/resolve", headers=finance,
                       json={"note": " "}).status_code == 422
    for cursor in ("x", "eyJ2IjogLTEsICJrIjogInJ1biJ9", "e30"):
        assert client.get("/api/reconciliation/runs", headers=finance,
                          params={"cursor": cursor}).status_code == 422
    assert client.get("/api/reconciliation/runs/1", headers=finance,
                      params={"difference": "nonsense"}).status_code == 422


def test_closing_a_day_says_what_is_unresolved_and_is_done_once(client, db, finance):
    today = utcnow().date()
    day, quiet_day = today - timedelta(days=2), today - timedelta(days=1)
    stray_charge(db, "txn_close", datetime.combine(day, time(9), UTC))
    run = client.post("/api/reconciliation/runs", headers=finance, json={
        "start": day.isoformat(), "end": quiet_day.isoformat()}).json()

    closed = client.post(f"/api/periods/{day.isoformat()}/close", headers=finance,
                         json={"note": "card totals checked"})
    assert closed.status_code == 201, closed.text
    result = closed.json()
    assert result["reconciliation_run_id"] == run["id"]
    assert result["unresolved_differences"] == 1 and len(result["unresolved_item_ids"]) == 1
    assert "unresolved" in result["warning"]

    # The other day of the same run has no difference of its own.
    clean = client.post(f"/api/periods/{quiet_day.isoformat()}/close", headers=finance,
                        json={}).json()
    assert (clean["unresolved_differences"], clean["warning"]) == (0, None)

    never = (today - timedelta(days=40)).isoformat()
    unreconciled = client.post(f"/api/periods/{never}/close", headers=finance, json={}).json()
    assert unreconciled["reconciliation_run_id"] is None
    assert "without being reconciled" in unreconciled["warning"]

    twice = client.post(f"/api/periods/{day.isoformat()}/close", headers=finance, json={})
    assert twice.status_code == 409 and "already closed" in twice.json()["error"]["message"]
    not_over = client.post(f"/api/periods/{today.isoformat()}/close", headers=finance,
                           json={})
    assert not_over.status_code == 409 and "not ended" in not_over.json()["error"]["message"]
    assert client.post("/api/periods/2026-02-30/close", headers=finance,
                       json={}).status_code == 404
    assert client.post(f"/api/periods/{never}/close", headers=finance,
                       json={"note": "x" * 501}).status_code == 422

    listed = client.get("/api/periods", headers=finance).json()
    assert [p["day"] for p in listed["items"]] == [quiet_day.isoformat(), day.isoformat(),
                                                   never]
    page = client.get("/api/periods", headers=finance, params={"limit": 2}).json()
    rest = client.get("/api/periods", headers=finance,
                      params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [p["day"] for p in rest["items"]] == [never]
    ranged = client.get("/api/periods", headers=finance, params={
        "day_from": day.isoformat(), "day_to": day.isoformat()}).json()
    assert [p["day"] for p in ranged["items"]] == [day.isoformat()]
    with db.read_session() as session:
        assert len(session.exec(select(ClosedPeriod)).all()) == 3
    entries = audit_of(db, "period.close")
    assert sorted(e.target_id for e in entries) == sorted(
        [day.isoformat(), quiet_day.isoformat(), never])
    by_day: dict[str, Any] = {e.target_id: e.after for e in entries}
    assert by_day[day.isoformat()]["unresolved_differences"] == 1
