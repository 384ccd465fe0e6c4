"""Bins and stock as CSV: `conveyor stock import FILE` and `conveyor stock export [FILE]`.

Columns: warehouse,bin,zone,aisle,shelf,pick_sequence,sku,quantity[,unit_cost_cents]. A row
names a bin (made if missing, its zone/aisle/shelf/pick sequence updated if they differ) and,
optionally, the number of units of one SKU that must be in it; a row without SKU and quantity
only makes or updates the bin. SKUs and bins that the file does not mention are left alone.

Guarantees of an import:
- Every row is checked first, against the file (format, ranges, a bin or SKU described two
  ways, the same bin and SKU twice) and against the database (warehouses, SKUs, the packing
  location's code, and quantities that would take units allocated to orders or promised to
  checkouts). Each bad row is reported with its line number, and nothing is applied unless
  every row is valid.
- Then everything is applied in one transaction: the stock rows of every SKU in the file are
  locked in variant-id order first (the order every stock writer uses), and each quantity is
  reached through `fulfilment.inventory` (`receive_stock` for units put into a bin that had
  no row for the SKU, `adjust_bin` for the difference otherwise), so the ledger stays exact.
  A conflict found at that point (stock moved since the check) rolls everything back.
- A unit cost, when given, becomes the SKU's unit cost (an opening valuation). The import is
  one audit entry with every bin made or changed and every quantity and cost before and after.
- Importing the file an export wrote changes nothing.

Export writes the same columns, bins in walking order per warehouse, one row per SKU with a
stock row in the bin (and a bare row for an empty bin); units at the packing location are
picked for orders and are not exported. Cells that a spreadsheet would run as a formula are
prefixed with a quote, which the import removes again.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlmodel import Session, col, select

from conveyor import audit
from conveyor.db import UnitOfWork
from fulfilment.inventory import StockConflict, adjust_bin, receive_stock
from fulfilment.receiving import (
    MAX_INT,
    MAX_UNITS,
    RESERVED_BIN_CODES,
    create_warehouse,
    find_warehouse,
    lock_stock_items,
    normalise_code,
    variants_by_sku,
)
from models.catalog import Variant
from models.inventory import (
    BinStock,
    Location,
    LocationKind,
    MovementKind,
    StockItem,
    Warehouse,
)

COLUMNS = ("warehouse", "bin", "zone", "aisle", "shelf", "pick_sequence", "sku", "quantity",
           "unit_cost_cents")
REQUIRED_COLUMNS = COLUMNS[:8]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
WAREHOUSE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,19}")
BIN_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
SKU = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DOCUMENT_TYPE = "stock_import"


class BadFile(Exception):
    """The file as a whole cannot be read as this CSV (e.g. its header is wrong)."""


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class ImportRow:
    line: int
    warehouse: str
    bin: str
    zone: str
    aisle: str
    shelf: str
    pick_sequence: int
    sku: str | None
    quantity: int | None
    unit_cost_cents: int | None

    @property
    def bin_key(self) -> tuple[str, str]:
        return self.warehouse, self.bin

    @property
    def bin_fields(self) -> tuple[str, str, str, int]:
        return self.zone, self.aisle, self.shelf, self.pick_sequence


@dataclass
class ImportReport:
    rows: int = 0
    warehouses_created: list[str] = field(default_factory=list)
    bins_created: list[str] = field(default_factory=list)
    bins_updated: list[str] = field(default_factory=list)
    quantities_changed: int = 0
    units_added: int = 0
    units_removed: int = 0
    costs_set: int = 0


def _unquote(value: str) -> str:
    """Undo the export's formula guard: a quote before a formula character."""
    if len(value) > 1 and value[0] == "'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


def _guard(value: str) -> str:
    return "'" + value if value[:1] in FORMULA_STARTS else value


def _int(text: str, name: str, low: int, high: int, errors: list[str]) -> int | None:
    try:
        value = int(text)
    except ValueError:
        errors.append(f"{name} must be a whole number, not {text!r}")
        return None
    if not low <= value <= high:
        errors.append(f"{name} must be between {low} and {high}")
        return None
    return value


def read_rows(lines: Iterable[str]) -> tuple[list[ImportRow], list[RowError]]:
    """Parse and check the file on its own (no database): rows, and every problem with its
    line number. Raises BadFile when the header is not this format's."""
    reader = csv.reader(lines)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise BadFile("the file is empty: it needs a header line") from None
    if header not in (list(REQUIRED_COLUMNS), list(COLUMNS)):
        raise BadFile(f"line 1: the header must be {','.join(REQUIRED_COLUMNS)}"
                      f"[,unit_cost_cents], not {','.join(header)}")
    rows: list[ImportRow] = []
    problems: list[RowError] = []
    seen_stock: dict[tuple[str, str, str], int] = {}
    bins_seen: dict[tuple[str, str], tuple[int, tuple[str, str, str, int]]] = {}
    costs_seen: dict[str, tuple[int, int]] = {}
    line = reader.line_num
    for record in reader:
        start, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        errors: list[str] = []
        if len(record) != len(header):
            problems.append(RowError(start, f"expected {len(header)} columns, found "
                                     f"{len(record)}"))
            continue
        cells = dict(zip(header, (_unquote(cell.strip()) for cell in record), strict=True))
        warehouse, bin_code = normalise_code(cells["warehouse"]), normalise_code(cells["bin"])
        if not WAREHOUSE_CODE.fullmatch(warehouse):
            errors.append(f"warehouse {cells['warehouse']!r} is not a warehouse code")
        if not BIN_CODE.fullmatch(bin_code):
            errors.append(f"bin {cells['bin']!r} is not a bin code")
        elif bin_code in RESERVED_BIN_CODES:
            errors.append(f"{bin_code} is the packing location, not a bin")
        for name in ("zone", "aisle", "shelf"):
            if len(cells[name]) > 20:
                errors.append(f"{name} is longer than 20 characters")
        sequence = (_int(cells["pick_sequence"], "pick_sequence", 0, 1_000_000, errors)
                    if cells["pick_sequence"] else 0)
        sku = cells["sku"] or None
        quantity = (_int(cells["quantity"], "quantity", 0, MAX_UNITS, errors)
                    if cells["quantity"] else None)
        cost_text = cells.get("unit_cost_cents", "")
        cost = _int(cost_text, "unit_cost_cents", 0, MAX_INT, errors) if cost_text else None
        if sku is not None and not SKU.fullmatch(sku):
            errors.append(f"sku {sku!r} is not a SKU")
        if sku is None and (cells["quantity"] or cost_text):
            errors.append("a quantity or unit cost needs a sku")
        if sku is not None and not cells["quantity"]:
            errors.append("a sku needs a quantity")
        row = ImportRow(start, warehouse, bin_code, cells["zone"], cells["aisle"],
                        cells["shelf"], sequence or 0, sku, quantity, cost)
        if not errors:
            first = bins_seen.setdefault(row.bin_key, (start, row.bin_fields))
            if first[1] != row.bin_fields:
                errors.append(f"bin {warehouse}/{bin_code} has another zone, aisle, shelf or "
                              f"pick sequence on line {first[0]}")
            if sku is not None:
                earlier = seen_stock.setdefault((warehouse, bin_code, sku), start)
                if earlier != start:
                    errors.append(f"{sku} in {warehouse}/{bin_code} is on line {earlier} "
                                  "already")
                if cost is not None:
                    cost_line, first_cost = costs_seen.setdefault(sku, (start, cost))
                    if first_cost != cost:
                        errors.append(f"{sku} has another unit cost on line {cost_line}")
        problems.extend(RowError(start, message) for message in errors)
        if not errors:
            rows.append(row)
    return rows, problems


@dataclass
class _Context:
    warehouses: dict[str, Warehouse]
    bins: dict[tuple[str, str], Location]
    variants: dict[str, Variant]


def _context(session: Session, rows: list[ImportRow]) -> _Context:
    warehouses: dict[str, Warehouse] = {}
    for code in sorted({row.warehouse for row in rows}):
        found = find_warehouse(session, code)
        if found is not None:
            warehouses[code] = found
    bins: dict[tuple[str, str], Location] = {}
    ids = [w.id for w in warehouses.values()]
    if ids:
        codes = {w.id: code for code, w in warehouses.items()}
        for location in session.exec(select(Location).where(
                col(Location.warehouse_id).in_(ids))):
            bins[(codes[location.warehouse_id], normalise_code(location.code))] = location
    return _Context(warehouses, bins,
                    variants_by_sku(session, [row.sku for row in rows if row.sku]))


def check_rows(session: Session, rows: list[ImportRow], *, create_warehouses: bool = False,
               progress: Callable[[int], None] | None = None) -> list[RowError]:
    """Check parsed rows against the database, without writing: warehouses (unless they may
    be made), SKUs, packing locations, and quantities below what is allocated or promised."""
    ctx = _context(session, rows)
    problems: list[RowError] = []
    location_ids = [loc.id for loc in ctx.bins.values()]
    variant_ids = [v.id for v in ctx.variants.values()]
    bin_stock = {(b.location_id, b.variant_id): b for b in session.exec(select(BinStock).where(
        col(BinStock.location_id).in_(location_ids), col(BinStock.variant_id).in_(variant_ids)))}
    items = {i.variant_id: i for i in session.exec(select(StockItem).where(
        col(StockItem.variant_id).in_(variant_ids)))}
    change: dict[int, int] = defaultdict(int)
    lines_of: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        if row.warehouse not in ctx.warehouses and not create_warehouses:
            problems.append(RowError(row.line, f"no warehouse {row.warehouse} (create it first, "
                                     "or import with --create-warehouses)"))
        location = ctx.bins.get(row.bin_key)
        if location is not None and location.kind != LocationKind.BIN:
            problems.append(RowError(row.line, f"{row.warehouse}/{row.bin} is a "
                                     f"{location.kind} location, not a bin"))
        if row.sku is not None:
            variant = ctx.variants.get(row.sku)
            if variant is None or variant.id is None:
                problems.append(RowError(row.line, f"no SKU {row.sku}"))
            elif location is not None and row.quantity is not None:
                held = bin_stock.get((location.id or 0, variant.id))
                on_hand, allocated = (held.on_hand, held.allocated) if held else (0, 0)
                if row.quantity < allocated:
                    problems.append(RowError(row.line, f"{allocated} unit(s) of {row.sku} in "
                                             f"{row.warehouse}/{row.bin} are allocated to "
                                             f"orders: the quantity cannot go below that"))
                change[variant.id] += row.quantity - on_hand
                lines_of[variant.id].append(row.line)
        if progress is not None:
            progress(1)
    for variant_id, delta in change.items():
        item = items.get(variant_id)
        if item is not None and item.on_hand + delta < item.allocated + item.reserved:
            problems.extend(RowError(line, "these quantities would leave fewer units than are "
                                     f"allocated ({item.allocated}) and reserved "
                                     f"({item.reserved}) for this SKU")
                            for line in lines_of[variant_id])
    return sorted(problems, key=lambda p: p.line)


def apply_import(*, uow: UnitOfWork, actor: audit.Actor, rows: list[ImportRow],
                 source: str = "", create_warehouses: bool = False,
                 progress: Callable[[int], None] | None = None) -> ImportReport:
    """Apply checked rows in the caller's transaction (see the module docstring). Raises
    StockConflict naming the line when stock moved since the check."""
    session = uow.session
    report = ImportReport(rows=len(rows))
    ctx = _context(session, rows)
    items = lock_stock_items(session, [v.id for v in ctx.variants.values() if v.id])
    for code in sorted({row.warehouse for row in rows} - set(ctx.warehouses)):
        if not create_warehouses:
            raise ValueError(f"no warehouse {code}")
        ctx.warehouses[code] = create_warehouse(uow=uow, actor=actor, code=code, name=code)
        report.warehouses_created.append(code)
    changes: list[dict[str, Any]] = []
    bins_changed: list[dict[str, Any]] = []
    costs: dict[str, tuple[int, int]] = {}
    for row in rows:
        warehouse = ctx.warehouses[row.warehouse]
        assert warehouse.id is not None
        location = ctx.bins.get(row.bin_key)
        if location is None:
            location = Location(warehouse_id=warehouse.id, code=row.bin, zone=row.zone,
                                aisle=row.aisle, shelf=row.shelf,
                                pick_sequence=row.pick_sequence, kind=LocationKind.BIN)
            session.add(location)
            session.flush()
            ctx.bins[row.bin_key] = location
            report.bins_created.append(f"{row.warehouse}/{row.bin}")
            bins_changed.append({"bin": f"{row.warehouse}/{row.bin}", "before": None,
                                 "after": list(row.bin_fields)})
        elif (location.zone, location.aisle, location.shelf,
              location.pick_sequence) != row.bin_fields:
            bins_changed.append({"bin": f"{row.warehouse}/{row.bin}",
                                 "before": [location.zone, location.aisle, location.shelf,
                                            location.pick_sequence],
                                 "after": list(row.bin_fields)})
            location.zone, location.aisle, location.shelf, location.pick_sequence = \
                row.bin_fields
            report.bins_updated.append(f"{row.warehouse}/{row.bin}")
        if row.sku is not None and row.quantity is not None:
            _set_quantity(uow, actor, row, location, ctx.variants[row.sku], report, changes)
            variant_id = ctx.variants[row.sku].id
            assert variant_id is not None
            item = items[variant_id]
            if row.unit_cost_cents is not None and item.unit_cost_cents != row.unit_cost_cents:
                costs.setdefault(row.sku, (item.unit_cost_cents, row.unit_cost_cents))
                item.unit_cost_cents = row.unit_cost_cents
        if progress is not None:
            progress(1)
    report.costs_set = len(costs)
    session.flush()
    audit.record(session, actor, "stock.import", target_type="stock", target_id=source[:120],
                 before={"quantities": [{k: c[k] for k in ("bin", "sku", "before")}
                                        for c in changes],
                         "unit_cost_cents": {sku: c[0] for sku, c in costs.items()}},
                 after={"rows": report.rows, "warehouses_created": report.warehouses_created,
                        "bins": bins_changed,
                        "quantities": [{k: c[k] for k in ("bin", "sku", "after")}
                                       for c in changes],
                        "unit_cost_cents": {sku: c[1] for sku, c in costs.items()}})
    return report


def _set_quantity(uow: UnitOfWork, actor: audit.Actor, row: ImportRow, location: Location,
                  variant: Variant, report: ImportReport, changes: list[dict[str, Any]]) -> None:
    assert location.id is not None and variant.id is not None and row.quantity is not None
    held = uow.session.exec(select(BinStock).where(
        BinStock.location_id == location.id, BinStock.variant_id == variant.id)).first()
    before = held.on_hand if held is not None else 0
    delta = row.quantity - before
    if delta == 0:
        return
    reason = f"stock import, line {row.line}"
    try:
        if held is None and delta > 0:
            receive_stock(uow=uow, variant_id=variant.id, location_id=location.id,
                          quantity=delta, actor=actor.email, reason=reason,
                          document_type=DOCUMENT_TYPE)
        else:
            adjust_bin(uow=uow, variant_id=variant.id, location_id=location.id, delta=delta,
                       kind=MovementKind.ADJUSTMENT, reason=reason, actor=actor.email,
                       document_type=DOCUMENT_TYPE)
    except StockConflict as exc:
        raise StockConflict(f"line {row.line}: {exc.message}",
                            details={**exc.details, "line": row.line}) from None
    report.quantities_changed += 1
    if delta > 0:
        report.units_added += delta
    else:
        report.units_removed -= delta
    changes.append({"bin": f"{row.warehouse}/{row.bin}", "sku": row.sku, "before": before,
                    "after": row.quantity})


def export_rows(session: Session, *, batch: int = 1000) -> Iterator[list[str]]:
    """The CSV rows (header first) of every bin and its stock, read in batches."""
    yield list(COLUMNS)
    codes = dict(session.exec(select(Warehouse.id, Warehouse.code)).all())
    query = (select(Location, BinStock, Variant, StockItem)
             .join(Warehouse, col(Warehouse.id) == Location.warehouse_id)
             .outerjoin(BinStock, col(BinStock.location_id) == Location.id)
             .outerjoin(Variant, col(Variant.id) == BinStock.variant_id)
             .outerjoin(StockItem, col(StockItem.variant_id) == BinStock.variant_id)
             .where(Location.kind == LocationKind.BIN)
             .order_by(col(Warehouse.code), col(Location.pick_sequence), col(Location.code),
                       col(Variant.sku))
             .execution_options(yield_per=batch))
    for location, stock, variant, item in session.exec(query):
        place = [codes[location.warehouse_id], location.code, location.zone, location.aisle,
                 location.shelf, str(location.pick_sequence)]
        if stock is None or variant is None:
            yield [_guard(v) for v in place] + ["", "", ""]
        else:
            cost = str(item.unit_cost_cents) if item is not None else ""
            yield [_guard(v) for v in place] + [variant.sku, str(stock.on_hand), cost]


def write_csv(session: Session, out: TextIO) -> int:
    """Write the export to `out`; returns the number of data rows."""
    writer = csv.writer(out, lineterminator="\n")
    count = -1
    for row in export_rows(session):
        writer.writerow(row)
        count += 1
    return count
