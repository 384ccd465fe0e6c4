"""Benchmark: authorised orders through the middle office with real workers.

    .venv/bin/python bench/pipeline.py [--orders 2000] [--processes 2] [--threads 8]

Sets up its own PostgreSQL database, redis-server and localstripe, creates N orders that are
authorised at localstripe (through the real checkout services), then measures in one run:

- baseline: N no-op Dramatiq messages that each do one small PostgreSQL transaction, through
  the same worker processes;
- pipeline: the N orders released at once into the outbox relay and the workers: screening,
  capture at localstripe, allocation to bins, until every order is ready to pick.

It prints messages or orders per second, the pipeline's rate as a share of the baseline's
(aim: at least 0.3), and p50/p99 of the time from release to ready-to-pick per order. The
orders are released in one burst, so the latencies include queueing behind each other.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dramatiq
from sqlalchemy import text
from sqlmodel import col, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the project, not bench/ (whose storefront.py would shadow the package)

from bench.databases import fresh_database  # noqa: E402
from conveyor.broker import create_broker  # noqa: E402
from conveyor.db import Database  # noqa: E402
from conveyor.local_services import start_localstripe, start_redis  # noqa: E402
from conveyor.migrate import upgrade  # noqa: E402
from conveyor.settings import Settings  # noqa: E402
from conveyor.stripe_gateway import create_gateway  # noqa: E402
from conveyor.templating import create_environment  # noqa: E402
from models.base import utcnow  # noqa: E402
from models.orders import Order, OrderEvent, OrderStatus  # noqa: E402
from models.screening import DEFAULT_RULES, RuleSet  # noqa: E402
from storefront import cart as carts  # noqa: E402
from storefront import checkout  # noqa: E402
from storefront.catalogue import load_snapshot  # noqa: E402
from tests.factories import make_product  # noqa: E402
from tests.helpers import card_token, free_port, process_env  # noqa: E402

FINISHED = (OrderStatus.ALLOCATED, OrderStatus.ON_HOLD, OrderStatus.REJECTED)


def _place_and_pay(db: Database, settings: Settings, variant_ids: list[int], n: int) -> None:
    details = checkout.parse_checkout_form({
        "email": f"shopper{n}@bench{n % 50}.example", "full_name": f"Bench Shopper {n}",
        "phone": "+49 30 1234567", "address": f"Benchstrasse {n}", "city": "Berlin",
        "postal_code": "10117", "country": "DE", "shipping_method": "standard",
    }, require_payment=False).details
    assert details is not None
    with db.unit_of_work() as uow:
        cart_id = carts.create_cart(uow=uow)
        carts.set_quantity(uow=uow, cart_id=cart_id, variant_id=variant_ids[n % len(variant_ids)],
                           quantity=1 + n % 3, max_quantity=20)
    with db.read_session() as session:
        view = carts.view_cart(session, load_snapshot(session), cart_id,
                               utcnow())
    ip = f"198.51.{n // 250}.{n % 250}"
    with db.unit_of_work() as uow:
        order = checkout.place_order(uow=uow, cart=view, cart_id=cart_id, details=details,
                                     pending_order_id=None, client_ip=ip, settings=settings,
                                     now=utcnow(),
                                     device_id=uuid.uuid4().hex)
    outcome = checkout.pay_order(db=db, gateway=create_gateway(settings),
                                 env=create_environment(), settings=settings,
                                 order_id=order.id,
                                 payment_token=card_token(settings.stripe_api_base),
                                 client_ip=ip)
    assert outcome.outcome == checkout.Outcome.AUTHORIZED, outcome


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    options = parser.parse_args()
    n = options.orders
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    print(f"setting up in {work} ...", flush=True)

    redis_port, stripe_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    services = [start_redis(redis_url, work / "redis", work / "redis.log"),
                start_localstripe(stripe_port, work / "localstripe.log")]
    stripe = f"http://127.0.0.1:{stripe_port}"
    settings = Settings(var_dir=work, database_url=fresh_database("conveyor_bench_pipeline"),
                        redis_url=redis_url, secret_key="bench-" + "x" * 40,
                        stripe_secret_key="sk_test_bench", stripe_publishable_key="pk_test_bench",
                        stripe_api_base=stripe, stripe_js_url=f"{stripe}/js.stripe.com/v3/",
                        stripe_webhook_secret="whsec_bench", relay_poll_seconds=0.05,
                        payment_attempts_per_ip_per_hour=10**6,
                        payment_attempts_per_email_per_hour=10**6)
    upgrade(settings)
    db = Database.from_settings(settings, pool_size=16)
    with db.unit_of_work() as uow:  # every bench order pays with the same test card
        body = DEFAULT_RULES.model_dump(mode="json")
        body["signals"]["card_velocity"]["weight"] = 0
        uow.session.add(RuleSet(version=2, body=body, note="bench: one test card for all",
                                created_by="bench"))
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_tick (n integer NOT NULL)"))
    variants = [make_product(db, name=f"Bench item {i}", variants=[("Std", 1000 + i * 37, 10_000)])
                .variant_ids[0] for i in range(50)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: _place_and_pay(db, settings, variants, i), range(n)))
    print(f"created {n} authorised orders in {time.perf_counter() - started:.1f}s", flush=True)
    with db.engine.connect() as conn:  # fresh planner statistics, as autovacuum would give
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))

    env = process_env(settings, LOG_LEVEL="WARNING")
    worker = _start([sys.executable, "-m", "dramatiq", "bench.pipeline_worker", "--processes",
                     str(options.processes), "--threads", str(options.threads)], env,
                    work / "worker.log")
    relay: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(3)  # let the workers boot before either clock starts
        broker = create_broker(settings, set_global=False)

        def ticks() -> int:
            with db.engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM bench_tick")).scalar_one())

        t0 = time.perf_counter()
        for i in range(n):
            broker.enqueue(dramatiq.Message(queue_name="bench", actor_name="bench_noop",
                                            args=(i,), kwargs={}, options={}))
        _wait(lambda: ticks() >= n, 600, "the baseline messages")
        baseline = time.perf_counter() - t0

        released = time.perf_counter()
        released_at = utcnow()
        relay = _start([sys.executable, "-m", "conveyor.cli", "relay"], env, work / "relay.log")

        def finished() -> int:
            with db.read_session() as session:
                return int(session.exec(select(func.count()).select_from(Order).where(
                    col(Order.status).in_(FINISHED))).one())

        _wait(lambda: finished() >= n, 1800, "every order to be decided and, if approved, "
              "ready to pick")
        pipeline = time.perf_counter() - released
        with db.read_session() as session:
            done = [at for at in session.exec(select(OrderEvent.created_at).where(
                OrderEvent.to_status == OrderStatus.ALLOCATED).order_by(
                col(OrderEvent.created_at)))]
            held = session.exec(select(func.count()).select_from(Order).where(
                col(Order.status).in_((OrderStatus.ON_HOLD, OrderStatus.REJECTED)))).one()
        latencies = sorted((at - released_at).total_seconds() for at in done)
    finally:
        for process in (relay, worker):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
        for process in services:
            process.terminate()
        db.dispose()

    base_rate, pipe_rate = n / baseline, n / pipeline
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print()
    print(f"workers: {options.processes} processes x {options.threads} threads; "
          f"{n} orders; held or rejected by screening: {held}")
    print(f"{'run':<44}{'seconds':>9}{'per second':>12}")
    print(f"{'baseline: no-op messages, one PG transaction':<44}{baseline:>9.2f}{base_rate:>12.0f}")
    print(f"{'pipeline: screen, capture, allocate':<44}{pipeline:>9.2f}{pipe_rate:>12.0f}")
    print(f"pipeline / baseline: {pipe_rate / base_rate:.2f} (aim: at least 0.30)")
    print(f"release to ready-to-pick: p50 {p50:.2f}s, p99 {p99:.2f}s")


if __name__ == "__main__":
    main()
