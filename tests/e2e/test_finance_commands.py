"""The finance commands as an operator runs them (`conveyor stripe sync`, `conveyor reconcile`),
and the relay's scheduled Stripe sync carried out by a real worker."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta

from sqlmodel import func, select
from starlette.testclient import TestClient

from admin.app import create_app
from conveyor.db import Database
from conveyor.messages import queue_of
from conveyor.relay import Job, scheduled_jobs
from conveyor.settings import PROJECT_ROOT, Settings
from fulfilment import refunds
from models.audit import AuditEntry
from models.finance import (
    Refund,
    RefundStatus,
    StripeBalanceTransaction,
    StripeCharge,
    StripeRefund,
)
from models.payments import Payment
from tests.e2e.admin_client import bearer, login
from tests.e2e.test_finance_desk import captured_order, process
from tests.factories import make_staff
from tests.helpers import conveyor_command, process_env, wait_for


def conveyor(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(conveyor_command(*args), env=process_env(settings), cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=300, check=False)


def empty_localstripe(localstripe: str) -> None:
    """localstripe keeps every object of the session: start from its empty store."""
    urllib.request.urlopen(urllib.request.Request(f"{localstripe}/_config/data",
                                                  method="DELETE"), timeout=10)


def count(db: Database, model: type) -> int:
    with db.read_session() as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def test_stripe_sync_then_reconcile_exits_0_and_1_once_something_is_off(
    db, settings, localstripe
):
    empty_localstripe(localstripe)
    order, _, _ = captured_order(db, settings)
    with db.unit_of_work() as uow:
        refund = refunds.request_refund(uow=uow, order_id=order.id, amount_cents=800, lines=[],
                                        reason="goodwill", requested_by="fin",
                                        settings=settings)
    assert process(db, settings, str(refund.id)) == "succeeded"

    synced = conveyor(settings, "stripe", "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
        charge = session.get(StripeCharge, payment.stripe_charge_id)
        stored_refund = session.exec(select(StripeRefund)).one()
    assert charge is not None and charge.amount_captured_cents == order.total_cents
    assert stored_refund.amount_cents == 800
    transactions = count(db, StripeBalanceTransaction)
    assert transactions >= 2
    assert f"balance_transactions: {transactions} stored" in synced.stdout
    assert "charges: 1 stored" in synced.stdout and "payouts: 0 stored" in synced.stdout
    again = conveyor(settings, "stripe", "sync")  # nothing new: nothing doubled
    assert again.returncode == 0 and count(db, StripeBalanceTransaction) == transactions

    today = datetime.now(UTC).date().isoformat()
    clean = conveyor(settings, "reconcile", "--from", today, "--to", today)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "missing_in_shop" in clean.stdout and "differences (fees aside): 0" in clean.stdout
    assert "matched: 2" in clean.stdout  # the charge and the refund

    with db.unit_of_work() as uow:  # a charge at Stripe that no order made
        uow.session.add(StripeBalanceTransaction(
            id="txn_stray", type="charge", source="ch_stray", amount_cents=999, fee_cents=0,
            net_cents=999, currency="EUR", created=datetime.now(UTC)))
    off = conveyor(settings, "reconcile", "--from", today, "--to", today)
    assert off.returncode == 1, off.stdout + off.stderr
    [line] = [row for row in off.stdout.splitlines() if "missing_in_shop" in row]
    assert re.findall(r"\d+", line) == ["1", "999"]  # items, cents
    with db.read_session() as session:
        runs = session.exec(select(AuditEntry).where(
            AuditEntry.action == "reconciliation.run")).all()
    assert len(runs) == 2 and all(e.actor_email.startswith("cli:") for e in runs)


def test_reconcile_refuses_dates_it_cannot_read(settings):
    bad = conveyor(settings, "reconcile", "--from", "2026-13-01", "--to", "2026-12-01")
    assert bad.returncode == 2 and "--from" in bad.stderr
    backwards = conveyor(settings, "reconcile", "--from", "2026-02-02", "--to", "2026-02-01")
    assert backwards.returncode == 2 and "before" in backwards.stderr


def test_the_relay_schedules_the_stripe_sync_on_the_maintenance_queue(settings):
    hourly = settings.model_copy(update={"stripe_sync_interval_seconds": 1800})
    jobs = {job.actor_name: job for job in scheduled_jobs(hourly)}
    assert jobs["sync_stripe"] == Job("sync_stripe", 1800)
    assert queue_of("sync_stripe") == "maintenance"
    declared = subprocess.run(
        [sys.executable, "-c", "import dramatiq\n"
         "from dramatiq.brokers.stub import StubBroker\n"
         "dramatiq.set_broker(StubBroker())\n"
         "from fulfilment import actors\n"
         "print(actors.sync_stripe.queue_name, actors.sync_stripe.options['max_retries'])"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert declared.stdout.split() == ["maintenance", "0"]


def test_a_real_relay_and_worker_sync_stripe_and_make_the_refund_asked_on_the_api(
    db, settings, start_pipeline
):
    order, _, _ = captured_order(db, settings)
    with TestClient(create_app(settings, db=db)) as client:
        finance = bearer(login(client, make_staff(db, "finance")))
        asked = client.post(f"/api/orders/{order.number}/refunds", headers=finance,
                            json={"amount_cents": 600, "reason": "late delivery"})
    assert asked.status_code == 202, asked.text
    with db.read_session() as session:
        charge_id = session.get(Payment, order.payment_id).stripe_charge_id

    start_pipeline(settings)  # the relay sends its scheduled jobs once at start

    def refunded() -> bool:
        with db.read_session() as session:
            return session.exec(select(Refund)).one().status == RefundStatus.SUCCEEDED

    def charge_copied() -> bool:
        with db.read_session() as session:
            return session.get(StripeCharge, charge_id) is not None

    wait_for(refunded, timeout=90, what="the worker to make the refund")
    wait_for(charge_copied, timeout=90, what="the scheduled Stripe sync")
    with db.read_session() as session:
        payment = session.get(Payment, order.payment_id)
    assert payment.refunded_cents == 600
    assert datetime.now(UTC) - timedelta(minutes=10) < payment.updated_at
