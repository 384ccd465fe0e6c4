"""Benchmark: reconciling a month of Stripe balance transactions against the shop's payments.

    .venv/bin/python bench/reconcile.py [--transactions 1000000] [--repeat 3]

Sets up its own PostgreSQL database (migrated like production), generates N captured orders
with their payments and N matching charge balance transactions over 30 days (each day paid out
by one payout), plus a few deliberate differences (a stray charge, an altered amount, an order
Stripe never saw), then measures in the same run:

- baseline: one `SELECT count(*)` joining balance transactions to payments on the charge id,
  the matching key;
- reconcile: `fulfilment.reconciliation.reconcile` over the 30 days, which classifies every
  difference and stores the run with its items.

Each is run `--repeat` times and the best time kept. It prints both times, rows per second,
the ratio (aim: reconciliation within 3x of the join) and what the run found.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the project, not bench/

from bench.databases import ADMIN_URL, database_url, fresh_database  # noqa: E402
from conveyor.db import Database  # noqa: E402
from conveyor.migrate import upgrade  # noqa: E402
from conveyor.settings import Settings  # noqa: E402
from fulfilment.reconciliation import reconcile  # noqa: E402

START = date(2026, 10, 1)
DAYS = 30
BASELINE = """SELECT count(*) FROM stripe_balance_transaction bt
              JOIN payment p ON p.stripe_charge_id = bt.source"""

# One row per n: an order captured at `at`, its payment, its charge at Stripe a second later.
GENERATE = [
    """CREATE TEMPORARY TABLE gen AS
       SELECT n, 1000 + (n * 7919) % 20000 AS cents,
              timestamptz '{start}' + ((n * 2591) % ({days} * 86400)) * interval '1 second' AS at
       FROM generate_series(1::bigint, {n}) AS n""",
    """INSERT INTO orders (id, number, status, status_token, email, email_domain, full_name,
           phone, address, city, postal_code, country, shipping_method, shipping_method_name,
           currency, subtotal_cents, shipping_cents, tax_rate_bps, tax_cents, total_cents,
           client_ip, device_id, payment_attempts, created_at, updated_at, authorized_at)
       SELECT md5('o' || n)::uuid, 'CV-B' || lpad(n::text, 9, '0'), 'shipped', md5('t' || n),
              'b' || n || '@bench.example', 'bench.example', 'Bench Shopper', '+4930123456',
              'Benchstrasse 1', 'Berlin', '10117', 'DE', 'standard', 'Standard delivery', 'EUR',
              cents, 0, 0, 0, cents, '192.0.2.1', '', 1, at, at, at
       FROM gen""",
    """INSERT INTO payment (id, order_id, attempt, status, stripe_payment_intent_id,
           stripe_charge_id, amount_cents, currency, captured_cents, refunded_cents,
           disputed_cents, failure_code, failure_message, card_brand, card_last4,
           card_fingerprint, card_country, cvc_check, postal_check, risk_level, client_ip,
           email, captured_at, created_at, updated_at)
       SELECT md5('p' || n)::uuid, md5('o' || n)::uuid, 1, 'captured', 'pi_b' || n,
              'ch_b' || n, cents, 'EUR', cents, 0, 0, '', '', 'visa', '4242', 'fp', 'DE', 'pass',
              'pass', 'normal', '192.0.2.1', 'b' || n || '@bench.example', at, at, at
       FROM gen""",
    "UPDATE orders SET payment_id = md5('p' || substr(number, 5)::int)::uuid",
    """INSERT INTO stripe_balance_transaction (id, type, source, amount_cents, fee_cents,
           net_cents, currency, created, available_on, payout_id, synced_at)
       SELECT 'txn_b' || n, 'charge', 'ch_b' || n, cents, cents * 14 / 1000 + 25,
              cents - (cents * 14 / 1000 + 25), 'eur', at + interval '1 second',
              at + interval '2 days', 'po_b' || to_char(at, 'YYYYMMDD'), now()
       FROM gen""",
    """INSERT INTO stripe_payout (id, amount_cents, currency, status, created, arrival_date,
           synced_at)
       SELECT payout_id, sum(net_cents), 'eur', 'paid', max(created), max(created), now()
       FROM stripe_balance_transaction GROUP BY payout_id""",
    # The differences a real month might hold: one of each kind, found once each.
    """INSERT INTO stripe_balance_transaction (id, type, source, amount_cents, fee_cents,
           net_cents, currency, created, synced_at)
       VALUES ('txn_stray', 'charge', 'ch_stray', 5000, 95, 4905, 'eur',
               timestamptz '{start}' + interval '3 days', now())""",
    "UPDATE stripe_balance_transaction SET amount_cents = amount_cents + 1 WHERE id = 'txn_b7'",
    "DELETE FROM stripe_balance_transaction WHERE id = 'txn_b11'",
]


def _row_count(name: str) -> int:
    engine = create_engine(make_url(ADMIN_URL).set(database=name))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(*) FROM stripe_balance_transaction")).scalar_one())
    except Exception:  # no such database or table yet: generate
        return -1
    finally:
        engine.dispose()


def _best(repeat: int, run: object) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the database of the last run if it holds as many rows")
    options = parser.parse_args()
    n = options.transactions
    name = "conveyor_bench_reconcile"
    reused = options.reuse and _row_count(name) == n
    url = database_url(name)
    settings = Settings(database_url=url if reused else fresh_database(name),
                        secret_key="bench-" + "x" * 40)
    upgrade(settings)
    db = Database.from_settings(settings)
    if not reused:
        started = time.perf_counter()
        with db.engine.begin() as conn:
            for statement in GENERATE:
                conn.execute(text(statement.format(n=n, start=START.isoformat(), days=DAYS)))
        print(f"generated {n:,} orders, payments and balance transactions in "
              f"{time.perf_counter() - started:.1f}s", flush=True)
    with db.engine.begin() as conn:  # only this run's results
        conn.execute(text("DELETE FROM reconciliation_item"))
        conn.execute(text("DELETE FROM reconciliation_run"))
    with db.engine.connect() as conn:  # fresh planner statistics, as autovacuum would give
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))

    def baseline() -> None:
        with db.engine.connect() as conn:
            assert conn.execute(text(BASELINE)).scalar_one() == n - 1

    runs = []

    def reconciliation() -> None:
        with db.unit_of_work() as uow:
            run = reconcile(uow=uow, start=START, end=START + timedelta(days=DAYS - 1),
                            created_by="bench")
            runs.append((run.matched, run.totals))

    base = _best(options.repeat, baseline)
    real = _best(options.repeat, reconciliation)
    matched, totals = runs[-1]
    db.dispose()
    print()
    print(f"{n:,} balance transactions over {DAYS} days; best of {options.repeat}")
    print(f"{'run':<48}{'seconds':>9}{'rows per second':>17}")
    print(f"{'baseline: count(*) join on the charge id':<48}{base:>9.2f}{n / base:>17,.0f}")
    print(f"{'reconcile: classify, store the run and items':<48}{real:>9.2f}{n / real:>17,.0f}")
    print(f"reconcile / baseline: {real / base:.2f}x the time (aim: at most 3x)")
    print(f"matched {matched:,}; differences: "
          + ", ".join(f"{kind} {value['items']:,}" for kind, value in sorted(totals.items())))


if __name__ == "__main__":
    main()
