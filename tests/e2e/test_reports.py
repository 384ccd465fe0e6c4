"""Margin and daily-close reports on the admin API, from orders captured and refunded through
localstripe and the balance transactions `conveyor stripe sync` copied from it."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select, update
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import create_gateway
from fulfilment import refunds
from fulfilment.reconciliation import reconcile
from fulfilment.stripe_sync import sync_stripe
from models.finance import ReconciliationItem, StripeBalanceTransaction
from models.inventory import StockItem
from models.orders import Order
from models.payments import Payment
from tests import shopping
from tests.e2e.admin_client import bearer, login
from tests.factories import make_product, make_staff

ENV = shopping.ENV


@pytest.fixture
def client(db: Database, settings: Settings):
    with TestClient(create_app(settings, db=db)) as test_client:
        yield test_client


def as_role(client: TestClient, db: Database, role: str) -> dict[str, str]:
    return bearer(login(client, make_staff(db, role)))


def set_unit_cost(db: Database, variant_id: int, cents: int) -> None:
    with db.unit_of_work() as uow:
        uow.session.execute(update(StockItem).where(col(StockItem.variant_id) == variant_id)
                            .values(unit_cost_cents=cents))


@pytest.fixture
def shop(db: Database, settings: Settings):
    """Two captured orders (one with goods on sale), one partly refunded, Stripe synced."""
    lamp = make_product(db, name="=Lamp", variants=[("Std", 4000, 10)],
                        sale=(3000, None, None))
    mug = make_product(db, name="Mug", variants=[("Std", 2500, 10)])
    set_unit_cost(db, lamp.variant_ids[0], 1200)
    set_unit_cost(db, mug.variant_ids[0], 900)
    first = shopping.bought(db, settings, [(lamp.variant_ids[0], 2), (mug.variant_ids[0], 1)],
                            email="first@example.com")
    second = shopping.bought(db, settings, [(mug.variant_ids[0], 1)], email="second@example.com")
    with db.unit_of_work() as uow:
        refund = refunds.request_refund(uow=uow, order_id=second.id, amount_cents=1000,
                                        lines=[], reason="dented", requested_by="fin@x.test",
                                        settings=settings)
    assert refunds.process_refund(db=db, gateway=create_gateway(settings), env=ENV,
                                  settings=settings, refund_id=refund.id) == "succeeded"
    sync_stripe(db=db, gateway=create_gateway(settings))
    # localstripe charges no fees; real Stripe would, so give the first charge one.
    with db.unit_of_work() as uow:
        charge = uow.session.get(Payment, first.payment_id).stripe_charge_id
        uow.session.execute(update(StripeBalanceTransaction).where(
            col(StripeBalanceTransaction.source) == charge,
            StripeBalanceTransaction.type == "charge").values(
                fee_cents=187, net_cents=StripeBalanceTransaction.amount_cents - 187))
    return first, second


def fees_of(db: Database, order: Order) -> int:
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        assert payment is not None and payment.stripe_charge_id
        return sum(session.exec(select(StripeBalanceTransaction.fee_cents).where(
            StripeBalanceTransaction.source == payment.stripe_charge_id)).all())


def span() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"start": str(today - timedelta(days=1)), "end": str(today + timedelta(days=1))}


def test_margins_per_order_product_and_day_add_up(client, db, settings, shop):
    first, second = shop
    finance = as_role(client, db, "finance")
    by_order = client.get("/api/reports/margins", params={"by": "order", **span()},
                          headers=finance).json()
    rows = {row["key"]: row for row in by_order["rows"]}
    assert set(rows) == {first.number, second.number}

    one, two = rows[first.number], rows[second.number]
    assert one["revenue_cents"] == 2 * 4000 + 2500 + first.shipping_cents
    assert one["discounts_cents"] == 2 * 1000
    assert one["cost_of_goods_cents"] == 2 * 1200 + 900
    assert one["refunds_cents"] == 0 and one["units"] == 3
    assert one["fees_cents"] == fees_of(db, first) == 187
    # The refund is given back with VAT; the margin counts it without.
    assert two["refunds_cents"] == round(1000 * 10_000 / (10_000 + second.tax_rate_bps))
    assert two["gross_margin_cents"] == (two["revenue_cents"] - two["discounts_cents"]
                                         - two["refunds_cents"] - two["fees_cents"] - 900)

    by_product = client.get("/api/reports/margins", params={"by": "product", **span()},
                            headers=finance).json()
    products = {row["key"]: row for row in by_product["rows"]}
    assert (products["=Lamp"]["orders"], products["=Lamp"]["units"]) == (1, 2)
    assert (products["Mug"]["orders"], products["Mug"]["units"]) == (2, 2)
    assert products["=Lamp"]["cost_of_goods_cents"] == 2400
    assert by_product["totals"]["orders"] == 2  # an order counts once, not once per product

    by_day = client.get("/api/reports/margins", params={"by": "day", **span()},
                        headers=finance).json()
    for name in ("revenue_cents", "discounts_cents", "refunds_cents", "fees_cents",
                 "cost_of_goods_cents", "gross_margin_cents", "orders", "units"):
        assert by_day["totals"][name] == by_order["totals"][name] == sum(
            row[name] for row in by_day["rows"])
    # Per product, shipping, refunds and fees are shared out by value: nothing lost but cents.
    assert abs(by_product["totals"]["gross_margin_cents"]
               - sum(row["gross_margin_cents"] for row in by_product["rows"])) <= 4


def test_margin_csv_export_guards_formulas(client, db, shop):
    response = client.get("/api/reports/margins", params={"by": "product", "format": "csv",
                                                          **span()},
                          headers=as_role(client, db, "finance"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {row["key"] for row in rows} == {"'=Lamp", "Mug"}
    assert rows[0]["gross_margin_cents"].lstrip("-").isdigit()


def test_chart_of_the_last_thirty_days_opens_as_svg(client, db, shop):
    response = client.get("/api/reports/margins/chart.svg", headers=as_role(client, db, "finance"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.text.startswith("<svg") and response.text.count("<rect") == 30
    assert "default-src 'none'" in response.headers["content-security-policy"]


def test_daily_close_counts_the_day_and_lists_unresolved_differences(client, db, settings,
                                                                        shop):
    first, second = shop
    finance = as_role(client, db, "finance")
    today = datetime.now(UTC).date()
    close = client.get("/api/reports/daily-close", params={"day": str(today)},
                       headers=finance).json()
    assert (close["captured_count"], close["captured_cents"]) == (
        2, first.total_cents + second.total_cents)
    assert (close["refunded_count"], close["refunded_cents"]) == (1, 1000)
    assert close["orders_placed"] == 2 and close["reconciled"] is False
    assert close["unresolved_differences"] == []

    # localstripe is shared by the whole test session: its other charges have no order here.
    with db.unit_of_work() as uow:
        run = reconcile(uow=uow, start=today, end=today, created_by="fin@x.test")
    close = client.get("/api/reports/daily-close", params={"day": str(today)},
                       headers=finance).json()
    assert close["reconciled"] is True
    with db.read_session() as session:
        open_items = session.exec(select(ReconciliationItem).where(
            ReconciliationItem.run_id == run.id, ReconciliationItem.difference != "fee_recorded",
            col(ReconciliationItem.resolved_at).is_(None))).all()
    assert {item["id"] for item in close["unresolved_differences"]} == {
        item.id for item in open_items}
    assert all(item["order_number"] not in (first.number, second.number)
               for item in close["unresolved_differences"])

    with db.unit_of_work() as uow:
        uow.session.execute(update(ReconciliationItem).where(
            col(ReconciliationItem.run_id) == run.id).values(resolved_at=datetime.now(UTC),
                                                            resolved_by="fin@x.test"))
    close = client.get("/api/reports/daily-close", params={"day": str(today)},
                       headers=finance).json()
    assert close["unresolved_differences"] == []


def test_reports_are_for_finance_and_refuse_bad_spans(client, db):
    picker = as_role(client, db, "picker")
    for path in ("/api/reports/margins", "/api/reports/margins/chart.svg",
                 "/api/reports/daily-close"):
        response = client.get(path, headers=picker)
        assert response.status_code == 403, path
        assert response.json()["error"]["code"] == "forbidden"
    finance = as_role(client, db, "finance")
    backwards = client.get("/api/reports/margins", params={"start": "2026-05-02",
                                                           "end": "2026-05-01"}, headers=finance)
    too_long = client.get("/api/reports/margins", params={"start": "2024-01-01",
                                                          "end": "2026-01-01"}, headers=finance)
    future = client.get("/api/reports/daily-close", params={"day": "2999-01-01"}, headers=finance)
    bad_day = client.get("/api/reports/daily-close", params={"day": "yesterday"}, headers=finance)
    for response in (backwards, too_long, future, bad_day):
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_input"
