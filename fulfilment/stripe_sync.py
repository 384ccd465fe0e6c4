"""`conveyor stripe sync`: copies of what Stripe moved (charges, refunds, balance
transactions, payouts), pulled since the last run, for reconciliation.

Stripe lists newest first. A walk goes from the newest object down to the newest one stored
by the last finished walk. Every page is stored as it arrives (upserts by Stripe's id, so
storing an object twice changes nothing), and the cursor notes where the walk is: a walk that
is interrupted goes on from there next time, and only a finished walk moves the boundary. So
a sync can be stopped at any moment and run again, and it never misses or doubles anything.

After the walks, each payout not yet tied to its balance transactions is tied to them
(oldest payout first), so reconciliation can check that they add up to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import SQLModel, col, select

from conveyor.db import Database
from conveyor.stripe_gateway import StripeGateway
from models.base import utcnow
from models.finance import (
    StripeBalanceTransaction,
    StripeCharge,
    StripePayout,
    StripeRefund,
    SyncCursor,
)

KINDS = ("charges", "refunds", "balance_transactions", "payouts")
Progress = Callable[[str, int], None]  # (kind, objects stored so far in this run)


def _when(timestamp: Any) -> datetime | None:
    return datetime.fromtimestamp(int(timestamp), UTC) if timestamp else None


def _row(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """A Stripe object as the columns of its table."""
    currency = str(item.get("currency") or "").upper()
    if kind == "charges":
        intent = item.get("payment_intent")
        return {"id": item["id"], "payment_intent_id": intent if isinstance(intent, str)
                else None, "amount_cents": int(item.get("amount") or 0),
                "amount_captured_cents": int(item.get("amount_captured")
                                             or (item.get("amount") if item.get("captured")
                                                 else 0) or 0),
                "amount_refunded_cents": int(item.get("amount_refunded") or 0),
                "currency": currency, "status": str(item.get("status") or ""),
                "captured": bool(item.get("captured")), "created": _when(item.get("created"))}
    if kind == "refunds":
        return {"id": item["id"], "charge_id": str(item.get("charge") or ""),
                "amount_cents": int(item.get("amount") or 0), "currency": currency,
                "status": str(item.get("status") or ""), "created": _when(item.get("created"))}
    if kind == "balance_transactions":
        amount, fee = int(item.get("amount") or 0), int(item.get("fee") or 0)
        source = item.get("source")
        return {"id": item["id"], "type": str(item.get("type") or ""),
                "source": source if isinstance(source, str) else str((source or {}).get("id", "")),
                "amount_cents": amount, "fee_cents": fee,
                "net_cents": int(item["net"]) if item.get("net") is not None else amount - fee,
                "currency": currency, "created": _when(item.get("created")),
                "available_on": _when(item.get("available_on"))}
    return {"id": item["id"], "amount_cents": int(item.get("amount") or 0),
            "currency": currency, "status": str(item.get("status") or ""),
            "created": _when(item.get("created")),
            "arrival_date": _when(item.get("arrival_date"))}


TABLES: dict[str, type[SQLModel]] = {
    "charges": StripeCharge, "refunds": StripeRefund,
    "balance_transactions": StripeBalanceTransaction, "payouts": StripePayout,
}


def _upsert(db: Database, kind: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = TABLES[kind].__table__  # type: ignore[attr-defined]
    dialect = postgresql if db.dialect == "postgresql" else sqlite
    statement = dialect.insert(table).values(rows)
    # Stripe's id is the key; a newer copy replaces the older (a charge gets refunded...).
    keep = [c.name for c in table.columns if c.name not in ("id", "payout_id")]
    statement = statement.on_conflict_do_update(
        index_elements=["id"], set_={name: statement.excluded[name] for name in keep})
    with db.unit_of_work() as uow:
        uow.session.execute(statement)


@dataclass
class SyncReport:
    stored: dict[str, int] = field(default_factory=dict)
    payouts_tied: int = 0


def sync_kind(*, db: Database, gateway: StripeGateway, kind: str,
              progress: Progress | None = None, page_size: int = 100,
              max_pages: int | None = None) -> int:
    """Walk one kind of object from Stripe (see the module docstring); how many were stored.
    `max_pages` stops early, as an interruption would (the next call goes on from there).

    The walk ends at the first object strictly older than the last finished walk's newest:
    objects created in the same second may be listed in any order, so those are read again
    (storing is idempotent) rather than risk stopping before one of them."""
    with db.unit_of_work() as uow:
        cursor = uow.session.get(SyncCursor, kind) or SyncCursor(object_type=kind)
        uow.session.add(cursor)
    boundary = cursor.newest_created if cursor.newest_id else None
    starting_after = cursor.resume_after_id or None
    top_id, top_created = cursor.walk_top_id, cursor.walk_top_created
    stored = pages = 0
    while True:
        items, more = gateway.list_page(kind, starting_after=starting_after, limit=page_size)
        if not top_id and items:  # a fresh walk: where the next one will stop
            top_id, top_created = items[0]["id"], int(items[0].get("created") or 0)
        fresh = []
        for item in items:
            if boundary is not None and int(item.get("created") or 0) < boundary:
                more = False
                break
            fresh.append(item)
        _upsert(db, kind, [_row(kind, item) for item in fresh])
        stored += len(fresh)
        pages += 1
        if progress:
            progress(kind, stored)
        starting_after = items[-1]["id"] if items else None
        finished = not more or not items
        with db.unit_of_work() as uow:
            row = uow.session.get(SyncCursor, kind, with_for_update=True)
            assert row is not None
            if finished:
                if top_id:
                    row.newest_id = top_id
                    row.newest_created = max(top_created, row.newest_created)
                row.walk_top_id, row.walk_top_created, row.resume_after_id = "", 0, ""
            else:
                row.walk_top_id, row.walk_top_created = top_id, top_created
                row.resume_after_id = starting_after or ""
            row.updated_at = utcnow()
        if finished or (max_pages is not None and pages >= max_pages):
            return stored


def tie_payouts(*, db: Database, gateway: StripeGateway) -> int:
    """Tie each payout not yet tied to the balance transactions it paid out."""
    with db.read_session() as session:
        tied = set(session.exec(select(StripeBalanceTransaction.payout_id).where(
            col(StripeBalanceTransaction.payout_id).is_not(None))))
        payouts = [p for p in session.exec(select(StripePayout).order_by(
            col(StripePayout.created), col(StripePayout.id))) if p.id not in tied]
    count = 0
    for payout in payouts:
        with db.read_session() as session:
            unassigned = [{"id": t.id, "type": t.type,
                           "created": int(t.created.timestamp())}
                          for t in session.exec(select(StripeBalanceTransaction).where(
                              col(StripeBalanceTransaction.payout_id).is_(None),
                              col(StripeBalanceTransaction.type).in_(("charge", "payment",
                                                                      "refund",
                                                                      "adjustment"))))]
        ids = gateway.payout_transaction_ids(
            {"id": payout.id, "created": int(payout.created.timestamp())}, unassigned)
        if ids:
            with db.unit_of_work() as uow:
                uow.session.execute(update(StripeBalanceTransaction)
                                    .where(col(StripeBalanceTransaction.id).in_(ids))
                                    .values(payout_id=payout.id))
            count += 1
    return count


def sync_stripe(*, db: Database, gateway: StripeGateway,
                progress: Progress | None = None) -> SyncReport:
    report = SyncReport()
    for kind in KINDS:
        report.stored[kind] = sync_kind(db=db, gateway=gateway, kind=kind, progress=progress)
    report.payouts_tied = tie_payouts(db=db, gateway=gateway)
    return report
