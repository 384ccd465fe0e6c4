"""Customer files and segments on SQLite (what `conveyor run` uses): the same queries (keyset
rows, windowed names, the ref upsert, grouped segments) must work there too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import col, update
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.migrate import upgrade
from conveyor.settings import Settings
from models.customers import Customer
from models.orders import Order
from models.payments import Payment, PaymentStatus
from models.staff import Role
from tests.e2e.admin_client import bearer, login
from tests.factories import make_pending_order, make_staff


def capture(db: Database, order_id, cents: int, refunded: int = 0) -> None:
    """What a capture leaves behind, written directly (no Stripe on this test's SQLite)."""
    now = datetime.now(UTC)
    with db.unit_of_work() as uow:
        payment = Payment(order_id=order_id, attempt=1, amount_cents=cents, captured_cents=cents,
                          refunded_cents=refunded, status=PaymentStatus.CAPTURED,
                          captured_at=now)
        uow.session.add(payment)
        uow.flush()
        uow.session.execute(update(Order).where(col(Order.id) == order_id).values(
            payment_id=payment.id, authorized_at=now, status="allocated"))


def test_files_search_notes_and_segments_work_on_sqlite(tmp_path: Path):
    # Given a migrated SQLite shop with an account, a paying guest and an unpaid one
    settings = Settings(var_dir=tmp_path)
    upgrade(settings)
    db = Database.from_settings(settings)
    with db.unit_of_work() as uow:
        uow.session.add(Customer(email="holder@example.com", full_name="Hold Er"))
    paid = make_pending_order(db, email="Payer@example.com", total_cents=6000)
    capture(db, paid, 6000, refunded=500)
    make_pending_order(db, email="waiting@example.com")
    staff = make_staff(db, Role.SUPPORT)

    with TestClient(create_app(settings, db=db)) as client:
        headers = bearer(login(client, staff))

        # When support pages through every customer, one at a time, both ways
        seen: dict[str, list[str]] = {}
        for sort in ("-last_order", "last_order", "-lifetime_value", "lifetime_value"):
            cursor, rows = None, []
            while True:
                params = {"sort": sort, "limit": 1, **({"cursor": cursor} if cursor else {})}
                page = client.get("/api/customers", params=params, headers=headers).json()
                rows += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            seen[sort] = [r["email"] for r in rows]
        [payer] = client.get("/api/customers", params={"q": "PAYER"},
                             headers=headers).json()["items"]
        note = client.post(f"/api/customers/{payer['ref']}/notes", headers=headers,
                           json={"text": "Asked about VAT."})
        file = client.get(f"/api/customers/{payer['ref']}", headers=headers).json()
        report = client.get("/api/reports/segments", headers=headers).json()
        download = client.get("/api/reports/segments", params={"format": "csv"},
                              headers=headers)

    # Then the figures are those of PostgreSQL
    assert seen["-last_order"][0] == "payer@example.com"
    assert seen["-lifetime_value"][0] == "payer@example.com"
    assert seen["lifetime_value"][-1] == "payer@example.com"
    for emails in seen.values():
        assert sorted(emails) == ["holder@example.com", "payer@example.com",
                                  "waiting@example.com"]
    assert payer["lifetime_value_cents"] == 5500 and payer["orders"] == 1
    assert note.status_code == 201
    assert file["figures"]["lifetime_value_cents"] == 5500
    assert file["notes"][0]["text"] == "Asked about VAT."
    assert report["total"] == {"segment": "all", "customers": 1, "orders": 1,
                               "revenue_cents": 6000, "units": None}
    assert report["new_vs_returning"][0]["customers"] == 1
    assert [r["orders"] for r in report["by_value_band"]] == [0, 0, 1, 0, 0]
    assert download.status_code == 200 and "value_band,50-100,1,1,,6000" in download.text
