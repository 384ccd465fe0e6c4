"""Benchmark: building pick lists (waves) for many ready orders, and the walk they save.

    .venv/bin/python bench/picking.py [--orders 10000] [--skus 5000] [--wave 200] [--no-write]

Sets up its own PostgreSQL database (dropped and made again, migrated) and fills it with bulk
inserts: 2 warehouses whose bins lie along aisles walked in a serpentine (the pick sequence),
every SKU in one bin of each warehouse, and N orders ready to pick (status `allocated`, one to
four lines of random SKUs, allocated in one warehouse, stock counters to match). Then, in the
same run:

- waves: `fulfilment.picking.build_wave` is called again and again with the wave size (200),
  each in its own transaction as the API runs it, until no order is left; it prints the time
  per wave (first, median, slowest; aim: under a second) and how many lists and lines;
- walk: for every list, the walk from the packing station (sequence 0) along its lines and
  back, as the sum of |pick-sequence jumps|; against picking the same orders one by one in
  order-number order, each from the packing station to its bins (in pick-sequence order) and
  back. Aim: batching at least halves the walk. The same figures without the trips from and
  back to the packing station are printed too.

The figures go into docs/benchmarks.md (section "Picking"), unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import secrets
import statistics
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from sqlalchemy import insert, text
from sqlmodel import col, func, select

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the project, not bench/ (whose storefront.py would shadow the package)

from bench.databases import fresh_database  # noqa: E402
from conveyor.db import Database  # noqa: E402
from conveyor.migrate import upgrade  # noqa: E402
from conveyor.settings import Settings  # noqa: E402
from fulfilment.picking import build_wave  # noqa: E402
from models.catalog import Category, Product, Variant  # noqa: E402
from models.inventory import (  # noqa: E402
    Allocation,
    BinStock,
    Location,
    StockItem,
    Warehouse,
)
from models.orders import Order, OrderLine, OrderStatus  # noqa: E402
from models.warehouse import PickListLine  # noqa: E402

DATABASE = "conveyor_bench_picking"
SECTION_TITLE = "Picking (bench/picking.py)"
AISLES = 25  # per warehouse; bins per aisle follow from the SKU count
STOCK_PER_BIN = 1000


# -- the data -----------------------------------------------------------------------------------


def serpentine(index: int, per_aisle: int) -> int:
    """The pick sequence of the index-th bin: up one aisle, down the next."""
    aisle, position = divmod(index, per_aisle)
    step = position if aisle % 2 == 0 else per_aisle - 1 - position
    return 10 + aisle * per_aisle + step


def fill(db: Database, orders: int, skus: int, seed: int) -> None:
    rng = random.Random(seed)
    per_aisle = -(-skus // AISLES)
    started = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(insert(Category.__table__), [{"slug": "bench", "name": "Bench"}])
        conn.execute(insert(Warehouse.__table__), [
            {"id": 1, "code": "NORTH", "name": "North"}, {"id": 2, "code": "SOUTH",
                                                          "name": "South"}])
        products = max(1, skus // 5)
        conn.execute(insert(Product.__table__), [
            {"id": p + 1, "slug": f"bench-{p + 1}", "name": f"Bench product {p + 1}",
             "category_id": 1} for p in range(products)])
        conn.execute(insert(Variant.__table__), [
            {"id": v + 1, "product_id": v % products + 1, "sku": f"B{v + 1:05d}",
             "name": f"Variant {v + 1}", "price_cents": 1000, "position": v // products}
            for v in range(skus)])
        # Each warehouse: bins along the aisles; every SKU in one of them, shuffled.
        bins: dict[tuple[int, int], int] = {}  # (warehouse, variant) -> location id
        locations = []
        for warehouse in (1, 2):
            order_of_skus = list(range(1, skus + 1))
            rng.shuffle(order_of_skus)
            for index, variant_id in enumerate(order_of_skus):
                location_id = len(locations) + 1
                aisle = index // per_aisle
                locations.append({
                    "id": location_id, "warehouse_id": warehouse,
                    "code": f"{aisle + 1:02d}-{index % per_aisle + 1:03d}",
                    "aisle": f"{aisle + 1:02d}", "pick_sequence": serpentine(index, per_aisle)})
                bins[(warehouse, variant_id)] = location_id
        conn.execute(insert(Location.__table__), locations)
        # Orders, oldest first by number; lines and allocations in one warehouse each.
        start = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
        order_rows, line_rows, allocation_rows = [], [], []
        allocated: dict[tuple[int, int], int] = defaultdict(int)
        for n in range(orders):
            order_id = uuid.UUID(int=rng.getrandbits(128))
            warehouse = rng.choice((1, 2))
            chosen = rng.sample(range(1, skus + 1), rng.choice((1, 1, 2, 2, 3, 4)))
            at = start + timedelta(seconds=n)
            subtotal = 0
            for variant_id in chosen:
                quantity = rng.choice((1, 1, 1, 2, 3))
                subtotal += 1000 * quantity
                line_rows.append({
                    "order_id": order_id, "variant_id": variant_id, "sku": f"B{variant_id:05d}",
                    "product_name": "Bench product", "variant_name": f"Variant {variant_id}",
                    "unit_price_cents": 1000, "quantity": quantity,
                    "line_total_cents": 1000 * quantity})
                location_id = bins[(warehouse, variant_id)]
                allocation_rows.append({
                    "order_id": order_id, "variant_id": variant_id, "location_id": location_id,
                    "quantity": quantity, "status": "allocated", "created_at": at})
                allocated[(location_id, variant_id)] += quantity
            order_rows.append({
                "id": order_id, "number": f"CV-B{n + 1:07d}", "status": OrderStatus.ALLOCATED,
                "status_token": secrets.token_urlsafe(24), "email": f"bench{n}@example.com",
                "email_domain": "example.com", "full_name": f"Bench Shopper {n}",
                "phone": "+49301234567", "address": "Benchstrasse 1", "city": "Berlin",
                "postal_code": "10117", "country": "DE", "shipping_method": "standard",
                "shipping_method_name": "Standard", "subtotal_cents": subtotal,
                "shipping_cents": 0, "tax_rate_bps": 0, "tax_cents": 0, "total_cents": subtotal,
                "created_at": at, "updated_at": at, "authorized_at": at})
        conn.execute(insert(Order.__table__), order_rows)
        conn.execute(insert(OrderLine.__table__), line_rows)
        conn.execute(insert(Allocation.__table__), allocation_rows)
        # Stock counters to match (no ledger: waves do not touch stock).
        conn.execute(insert(BinStock.__table__), [
            {"location_id": location_id, "variant_id": variant_id, "on_hand": STOCK_PER_BIN,
             "allocated": allocated[(location_id, variant_id)]}
            for (_, variant_id), location_id in bins.items()])
        per_variant: dict[int, int] = defaultdict(int)
        for (_, variant_id), units in allocated.items():
            per_variant[variant_id] += units
        conn.execute(insert(StockItem.__table__), [
            {"variant_id": v, "on_hand": 2 * STOCK_PER_BIN, "allocated": per_variant[v]}
            for v in range(1, skus + 1)])
        conn.execute(text("ANALYZE"))
    print(f"filled: {orders} orders, {len(line_rows)} lines, {skus} SKUs, {len(locations)} bins "
          f"in 2 warehouses ({time.perf_counter() - started:.1f} s)", flush=True)


# -- the measures -------------------------------------------------------------------------------


def walk_length(sequences: list[int], *, from_packing: bool) -> int:
    stops = [0, *sequences, 0] if from_packing else sequences
    return sum(abs(b - a) for a, b in pairwise(stops))


def measure(db: Database, wave: int) -> dict[str, float]:
    times: list[float] = []
    lists = 0
    while True:
        started = time.perf_counter()
        with db.unit_of_work() as uow:
            built = build_wave(uow=uow, actor="bench", max_orders=wave)
        elapsed = time.perf_counter() - started
        if not built.pick_lists:
            break
        times.append(elapsed)
        lists += len(built.pick_lists)
    with db.read_session() as session:
        sequence_of = dict(session.exec(select(Location.id, Location.pick_sequence)).all())
        per_list: dict[int, list[int]] = defaultdict(list)
        line_count = 0
        for pick_list_id, location_id in session.exec(
                select(PickListLine.pick_list_id, PickListLine.location_id)
                .order_by(col(PickListLine.pick_list_id), col(PickListLine.sequence))):
            per_list[pick_list_id].append(sequence_of[location_id])
            line_count += 1
        per_order: dict[str, list[int]] = defaultdict(list)
        for number, location_id in session.exec(
                select(Order.number, Allocation.location_id)
                .join(Allocation, col(Allocation.order_id) == Order.id)):
            per_order[number].append(sequence_of[location_id])
        units_listed = session.exec(select(func.sum(PickListLine.quantity))).one()
        units_allocated, unlisted = session.exec(
            select(func.sum(Allocation.quantity),
                   func.count(col(Allocation.id)).filter(col(Allocation.pick_list_id).is_(None)))
        ).one()
    if unlisted or units_listed != units_allocated:  # every unit on exactly one line
        raise SystemExit(f"waves lost units: {unlisted} allocations on no list, "
                         f"{units_listed} units listed of {units_allocated}")
    result: dict[str, float] = {
        "waves": len(times), "lists": lists, "lines": line_count,
        "first": times[0], "median": statistics.median(times), "max": max(times),
        "orders": len(per_order), "picks": sum(len(v) for v in per_order.values()),
    }
    for suffix, from_packing in (("", True), ("_between_bins", False)):
        result["batched" + suffix] = sum(walk_length(s, from_packing=from_packing)
                                         for s in per_list.values())
        result["one_by_one" + suffix] = sum(
            walk_length(sorted(per_order[number]), from_packing=from_packing)
            for number in sorted(per_order))
    return result


# -- the report ---------------------------------------------------------------------------------


def machine() -> str:
    cores = os.cpu_count() or 0
    return f"{cores} CPU cores, {platform.system()} {platform.release()}, Python " \
           f"{platform.python_version()}"


def report(figures: dict[str, float], args: argparse.Namespace, postgres: str) -> str:
    saved = 1 - figures["batched"] / figures["one_by_one"]
    saved_bins = 1 - figures["batched_between_bins"] / figures["one_by_one_between_bins"]
    wave_ok = figures["max"] < 1.0
    rows = [
        ("waves built", f"{figures['waves']:.0f} ({figures['lists']:.0f} pick lists, "
                        f"{figures['lines']:,.0f} lines for {figures['picks']:,.0f} "
                        "allocations)"),
        (f"time per {args.wave}-order wave: first / median / slowest",
         f"{figures['first'] * 1000:.0f} / {figures['median'] * 1000:.0f} / "
         f"{figures['max'] * 1000:.0f} ms"),
        ("walk, batched (from packing and back, per list)", f"{figures['batched']:,.0f}"),
        ("walk, one order at a time in number order (from packing and back)",
         f"{figures['one_by_one']:,.0f}"),
        ("walk saved by batching", f"{saved:.1%}"),
        ("walk between bins only: batched / one by one",
         f"{figures['batched_between_bins']:,.0f} / {figures['one_by_one_between_bins']:,.0f} "
         f"({saved_bins:.1%} saved)"),
    ]
    table = "\n".join(["| measure | figure |", "|---|---:|",
                       *(f"| {name} | {value} |" for name, value in rows)])
    verdict = (f"Aims: a {args.wave}-order wave in under a second "
               f"({'met' if wave_ok else 'not met'}: slowest {figures['max'] * 1000:.0f} ms); "
               f"batching cuts the walk by at least half "
               f"({'met' if saved >= 0.5 else 'not met'}: {saved:.1%}).")
    explanation = (
        f"**What is measured.** The script makes its own database ({DATABASE}) and fills it "
        f"with bulk inserts: {args.skus:,} SKUs, 2 warehouses of {AISLES} aisles each, every "
        "SKU in one bin of each warehouse (bins shuffled, pick sequence serpentine along the "
        f"aisles), and {args.orders:,} orders ready to pick (one to four lines of random SKUs, "
        "allocated in one warehouse chosen at random). `fulfilment.picking.build_wave` is then "
        f"called with a wave size of {args.wave}, each call in its own transaction (commit "
        "included in the time, as `POST /api/picklists` runs it), until every order is on a "
        "list: each wave gives one list per warehouse, lines merged per bin and SKU and sorted "
        "by pick sequence. The walk of a list is the sum of the pick-sequence jumps from the "
        "packing station (sequence 0) along its lines and back; the baseline takes the same "
        "orders one at a time in order-number order, each from the packing station to its "
        "bins in pick-sequence order and back. The last row leaves out the trips from and back "
        "to the packing station, for both. Pick sequence stands in for distance: one unit is "
        "one bin along the serpentine.")
    paragraphs = [
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {machine()}, {postgres}; "
        f"seed {args.seed}.",
    ]
    return "\n\n".join([
        f"## {SECTION_TITLE}",
        "Command: `.venv/bin/python bench/picking.py`",
        *(textwrap.fill(p, width=100, break_on_hyphens=False) for p in paragraphs),
        table, textwrap.fill(verdict, width=100, break_on_hyphens=False),
        textwrap.fill(explanation, width=100, break_on_hyphens=False),
    ]) + "\n"


def write_report(path: Path, section: str) -> None:
    """Replace this benchmark's section of `path` (or add it), leaving the others as they are."""
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^## {re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: section + "\n", existing, count=1).rstrip() + "\n"
    else:
        updated = existing.rstrip() + "\n\n" + section
    path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--skus", type=int, default=5_000)
    parser.add_argument("--wave", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the figures only")
    args = parser.parse_args()
    if min(args.orders, args.skus, args.wave) < 1:
        parser.error("--orders, --skus and --wave must be positive")
    settings = Settings(var_dir=ROOT / "var" / "bench", database_url=fresh_database(DATABASE),
                        secret_key="bench-" + "x" * 40)
    upgrade(settings)
    db = Database.from_settings(settings, pool_size=2)
    try:
        fill(db, args.orders, args.skus, args.seed)
        with db.engine.connect() as conn:
            postgres = "PostgreSQL " + str(conn.execute(text("SHOW server_version")).scalar())
        figures = measure(db, args.wave)
    finally:
        db.dispose()
    section = report(figures, args, postgres)
    print(section)
    if not args.no_write:
        write_report(args.output, section)
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
