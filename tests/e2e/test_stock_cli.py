"""`conveyor stock import|export|verify` run as the command they are, against the test's
PostgreSQL: every row checked before anything is applied, line numbers for bad rows, one
transaction, a lossless round trip, and the ledger check failing on a broken counter."""

from __future__ import annotations

import subprocess

import pytest
from sqlalchemy import text
from sqlmodel import col, func, select

from conveyor.db import Database
from conveyor.settings import PROJECT_ROOT, Settings
from fulfilment.inventory import verify_ledger
from models.audit import AuditEntry
from models.inventory import BinStock, Location, MovementKind, StockItem, StockMovement, Warehouse
from tests.factories import make_product, stock_of
from tests.helpers import conveyor_command, process_env

HEADER = "warehouse,bin,zone,aisle,shelf,pick_sequence,sku,quantity,unit_cost_cents\n"


@pytest.fixture(autouse=True)
def ledger_stays_exact(db: Database):
    yield
    with db.read_session() as session:
        assert verify_ledger(session) == []


def stock_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(conveyor_command("stock", *args), env=process_env(settings),
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def snapshot(db: Database) -> tuple[int, int, int, list[tuple[int, int, int]]]:
    with db.read_session() as session:
        return (session.exec(select(func.count()).select_from(Location)).one(),
                session.exec(select(func.count()).select_from(StockMovement)).one(),
                session.exec(select(func.count()).select_from(AuditEntry)).one(),
                [(i.variant_id, i.on_hand, i.unit_cost_cents) for i in session.exec(
                    select(StockItem).order_by(col(StockItem.variant_id)))])


def test_a_file_with_bad_rows_names_each_line_and_changes_nothing(settings, db, tmp_path):
    made = make_product(db, variants=[("Std", 1000, 10), ("Big", 1000, 0)])
    sku, big = made.skus
    before = snapshot(db)
    path = tmp_path / "stock.csv"
    path.write_text(
        HEADER
        + f"TST,A-01-1,A,01,1,10,{sku},12,450\n"  # 2: fine
        + f"TST,C-01-1,C,01,1,30,{big},5,\n"  # 3: fine (a new bin)
        + "TST,C-01-2,C,01,2,31,NO-SUCH,1,\n"  # 4: unknown SKU
        + f"NOPE,A-1,,,,1,{sku},1,\n"  # 5: unknown warehouse
        + f"TST,C-01-3,C,01,3,xx,{sku},-4,\n"  # 6: two bad numbers
        + "TST,PACK,,,,0,,,\n"  # 7: the packing location
        + f"TST,A-01-1,A,01,1,10,{sku},3,450\n"  # 8: the same bin and SKU again
        + f'"TST","C-01-1","C","01","1","30","{big}","5"\n'  # 9: a column missing
    )

    result = stock_cli(settings, "import", str(path))

    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: line")]
    assert [e.split(":")[1].strip() for e in errors] == [
        "line 4", "line 5", "line 6", "line 6", "line 7", "line 8", "line 9"]
    assert "no SKU NO-SUCH" in errors[0] and "no warehouse NOPE" in errors[1]
    assert "pick_sequence must be a whole number" in errors[2]
    assert "quantity must be between 0" in errors[3]
    assert "packing location" in errors[4] and "on line 2 already" in errors[5]
    assert "expected 9 columns, found 8" in errors[6]
    assert "7 problem(s)" in result.stderr and "nothing was imported" in result.stderr
    assert snapshot(db) == before


def test_an_import_makes_bins_and_sets_quantities_through_the_ledger(settings, db, tmp_path):
    made = make_product(db, variants=[("Std", 1000, 10), ("Big", 1000, 0)])
    sku, big = made.skus
    path = tmp_path / "stock.csv"
    path.write_text(HEADER
                    + f"TST,A-01-1,A,01,1,10,{sku},7,450\n"  # 10 -> 7, cost set
                    + f"TST,c-01-1,C,01,1,30,{big},5,\n"  # a new bin with 5
                    + "TST,C-01-2,C,01,2,31,,,\n"  # an empty bin
                    + f"EAST,E-1,E,,,1,{big},2,\n")  # a new warehouse

    refused = stock_cli(settings, "import", str(path))
    assert refused.returncode == 1 and "--create-warehouses" in refused.stderr
    dry = stock_cli(settings, "import", str(path), "--create-warehouses", "--dry-run")
    assert dry.returncode == 0 and "nothing changed" in dry.stdout
    result = stock_cli(settings, "import", str(path), "--create-warehouses")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 warehouse(s) and 3 bin(s) made" in result.stdout
    assert "3 quantity(ies) set (+7 / -3 units), 1 unit cost(s) set" in result.stdout
    assert (stock_of(db, made.variant_ids[0]).on_hand,
            stock_of(db, made.variant_ids[0]).unit_cost_cents) == (7, 450)
    assert stock_of(db, made.variant_ids[1]).on_hand == 7
    with db.read_session() as session:
        bins = {(w.code, loc.code): (loc.zone, loc.aisle, loc.shelf, loc.pick_sequence)
                for loc, w in session.exec(select(Location, Warehouse).join(
                    Warehouse, col(Warehouse.id) == Location.warehouse_id))}
        kinds = sorted((m.kind, m.on_hand_delta, m.document_type) for m in session.exec(
            select(StockMovement).where(StockMovement.document_type == "stock_import")))
        [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == "stock.import"))
    assert bins[("TST", "C-01-1")] == ("C", "01", "1", 30)
    assert bins[("TST", "A-01-1")] == ("A", "01", "1", 10)  # updated from the file
    assert ("TST", "C-01-2") in bins and ("EAST", "E-1") in bins
    assert kinds == [(MovementKind.ADJUSTMENT, -3, "stock_import"),
                     (MovementKind.RECEIPT, 2, "stock_import"),
                     (MovementKind.RECEIPT, 5, "stock_import")]
    assert entry.actor_email.startswith("cli:")
    assert entry.before is not None and entry.after is not None
    assert entry.before["unit_cost_cents"] == {sku: 0}
    assert {(q["bin"], q["after"]) for q in entry.after["quantities"]} == {
        ("TST/A-01-1", 7), ("TST/C-01-1", 5), ("EAST/E-1", 2)}


def test_an_import_cannot_take_units_allocated_to_orders(settings, db, tmp_path):
    from datetime import timedelta

    from fulfilment.inventory import LineRequest, allocate_order_stock, reserve_lines
    from models.base import utcnow
    from tests.factories import make_pending_order

    made = make_product(db, variants=[("Std", 1000, 10)])
    order_id = make_pending_order(db)
    with db.unit_of_work() as uow:
        reserve_lines(uow=uow, order_id=order_id, lines=[LineRequest(made.variant_ids[0], 6)],
                      until=utcnow() + timedelta(minutes=15))
    with db.unit_of_work() as uow:
        allocate_order_stock(uow=uow, order_id=order_id)
    path = tmp_path / "stock.csv"
    path.write_text(HEADER + f"TST,A-01-1,,,,10,{made.skus[0]},4,\n")

    result = stock_cli(settings, "import", str(path))

    assert result.returncode == 1
    assert "error: line 2: 6 unit(s)" in result.stderr and "allocated" in result.stderr
    assert stock_of(db, made.variant_ids[0]).on_hand == 10


def test_export_then_import_is_a_round_trip(settings, db, tmp_path):
    made = make_product(db, variants=[("Std", 1000, 10), ("Big", 1000, 3)])
    with db.unit_of_work() as uow:
        warehouse = uow.session.exec(select(Warehouse)).one()
        assert warehouse.id is not None
        uow.session.add(Location(warehouse_id=warehouse.id, code="Z-1", zone="-z",
                                 aisle="@a", pick_sequence=99))
        item = uow.session.get(StockItem, made.variant_ids[0])
        assert item is not None
        item.unit_cost_cents = 321
    exported = tmp_path / "export.csv"

    out = stock_cli(settings, "export", str(exported))
    assert out.returncode == 0, out.stderr
    printed = stock_cli(settings, "export")
    assert printed.stdout == exported.read_text()
    assert exported.read_text() == (
        HEADER + f"TST,A-01-1,,,,10,{made.skus[0]},10,321\n"
        f"TST,A-01-1,,,,10,{made.skus[1]},3,0\n"
        "TST,Z-1,'-z,'@a,,99,,,\n")
    before = snapshot(db)

    same = stock_cli(settings, "import", str(exported))
    assert same.returncode == 0, same.stderr
    assert "0 bin(s) made, 0 bin(s) changed, 0 quantity(ies) set" in same.stdout
    after = snapshot(db)
    assert after[:2] == before[:2] and after[3] == before[3]  # one audit entry more

    changed = exported.read_text().replace(f"{made.skus[1]},3,0", f"{made.skus[1]},8,0")
    exported.write_text(changed)
    assert stock_cli(settings, "import", str(exported)).returncode == 0
    assert stock_of(db, made.variant_ids[1]).on_hand == 8
    assert stock_cli(settings, "export").stdout == changed
    with db.read_session() as session:
        zone = session.exec(select(Location.zone).where(Location.code == "Z-1")).one()
    assert zone == "-z"  # the formula guard came off again


def test_a_header_that_is_not_ours_is_refused(settings, db, tmp_path):
    path = tmp_path / "stock.csv"
    path.write_text("sku,qty\nA,1\n")
    result = stock_cli(settings, "import", str(path))
    assert result.returncode == 2 and "line 1: the header must be" in result.stderr
    path.write_text("")
    assert stock_cli(settings, "import", str(path)).returncode == 2


def test_verify_passes_on_an_exact_ledger_and_names_a_broken_counter(settings, db):
    made = make_product(db, variants=[("Std", 1000, 10)])
    ok = stock_cli(settings, "verify")
    assert ok.returncode == 0, ok.stderr
    assert "ledger OK" in ok.stdout

    with db.engine.begin() as conn:
        conn.execute(text("UPDATE stock_item SET on_hand = on_hand + 2 WHERE variant_id = :v"),
                     {"v": made.variant_ids[0]})
    try:
        broken = stock_cli(settings, "verify")
        assert broken.returncode == 1
        assert (f"mismatch: {made.skus[0]} (variant {made.variant_ids[0]}) on_hand: counter 12, "
                "ledger 10") in broken.stderr
        assert "on_hand in bins" in broken.stderr
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE stock_item SET on_hand = on_hand - 2 "
                              "WHERE variant_id = :v"), {"v": made.variant_ids[0]})
    with db.read_session() as session:
        assert session.exec(select(BinStock)).one().on_hand == 10
