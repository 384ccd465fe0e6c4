"""`conveyor stock import|export|verify`: bins and stock as CSV, and the ledger check."""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlmodel import col, func, select

from conveyor import audit
from conveyor.db import Database
from conveyor.errors import DomainError
from conveyor.settings import Settings
from fulfilment.inventory import verify_ledger
from fulfilment.stock_csv import BadFile, apply_import, check_rows, read_rows, write_csv
from models.catalog import Variant
from models.inventory import StockMovement

stock_app = typer.Typer(no_args_is_help=True,
                        help="Bins and stock: CSV import and export, and the ledger check.")
MAX_ERRORS_SHOWN = 200


def _actor() -> audit.Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return audit.Actor(email=f"cli:{user}")


def _db() -> Database:
    return Database.from_settings(Settings(), pool_size=1)


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    with Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        yield progress


@stock_app.command("import")
def import_stock(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                help="CSV: warehouse,bin,zone,aisle,shelf,pick_sequence,sku,"
                                     "quantity[,unit_cost_cents]"),
    create_warehouses: bool = typer.Option(False, help="Make warehouses the file names that "
                                           "do not exist (named after their code)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check every row; change nothing."),
) -> None:
    """Make bins and set the stock in them from a CSV file. Every row is checked first and
    each bad one reported with its line number; nothing is applied unless all are valid,
    then everything is applied in one transaction."""
    console = Console(stderr=True)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        typer.echo(f"error: cannot read {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        rows, problems = read_rows(text.splitlines(keepends=True))
    except BadFile as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:
        typer.echo(f"error: {file} is not a CSV file this command reads: {exc}", err=True)
        raise typer.Exit(2) from None
    db = _db()
    try:
        with _progress(console) as progress:
            task = progress.add_task("checking", total=len(rows))
            with db.read_session() as session:
                problems = sorted([*problems, *check_rows(
                    session, rows, create_warehouses=create_warehouses,
                    progress=lambda n: progress.advance(task, n))], key=lambda p: p.line)
        if problems:
            for problem in problems[:MAX_ERRORS_SHOWN]:
                typer.echo(f"error: {problem}", err=True)
            if len(problems) > MAX_ERRORS_SHOWN:
                typer.echo(f"... and {len(problems) - MAX_ERRORS_SHOWN} more", err=True)
            typer.echo(f"{len(problems)} problem(s) in {file}: nothing was imported", err=True)
            raise typer.Exit(1)
        if dry_run:
            typer.echo(f"{len(rows)} row(s) checked: all valid; nothing changed (--dry-run)")
            return
        try:
            with _progress(console) as progress:
                task = progress.add_task("importing", total=len(rows))
                with db.unit_of_work() as uow:
                    report = apply_import(uow=uow, actor=_actor(), rows=rows,
                                          source=str(file), create_warehouses=create_warehouses,
                                          progress=lambda n: progress.advance(task, n))
        except DomainError as exc:
            typer.echo(f"error: {exc.message}; nothing was imported", err=True)
            raise typer.Exit(1) from None
    finally:
        db.dispose()
    typer.echo(f"imported {report.rows} row(s): {len(report.warehouses_created)} warehouse(s) "
               f"and {len(report.bins_created)} bin(s) made, {len(report.bins_updated)} bin(s) "
               f"changed, {report.quantities_changed} quantity(ies) set (+{report.units_added} "
               f"/ -{report.units_removed} units), {report.costs_set} unit cost(s) set")


@stock_app.command("export")
def export_stock(
    file: Path | None = typer.Argument(None, dir_okay=False,
                                       help="Where to write (default: standard output)."),
) -> None:
    """Write every bin and the stock in it as CSV, in the columns `import` reads."""
    db = _db()
    try:
        with db.read_session() as session:
            if file is None or str(file) == "-":
                rows = write_csv(session, sys.stdout)
            else:
                with file.open("w", encoding="utf-8", newline="") as out:
                    rows = write_csv(session, out)
    finally:
        db.dispose()
    if file is not None and str(file) != "-":
        typer.echo(f"wrote {rows} row(s) to {file}", err=True)


@stock_app.command("verify")
def verify() -> None:
    """Compare every stock counter with the ledger's sums (and bins with their SKUs); exit 1
    naming each mismatch."""
    db = _db()
    try:
        with db.read_session() as session:
            problems = verify_ledger(session)
            skus = dict(session.exec(select(Variant.id, Variant.sku).where(
                col(Variant.id).in_({p.variant_id for p in problems}))).all())
            movements = session.exec(select(func.count()).select_from(StockMovement)).one()
    finally:
        db.dispose()
    if not problems:
        typer.echo(f"ledger OK: every counter equals its ledger sum ({movements} movements)")
        return
    for p in problems:
        typer.echo(f"mismatch: {skus.get(p.variant_id, '?')} (variant {p.variant_id}) "
                   f"{p.counter}: counter {p.counter_value}, ledger {p.ledger_value}", err=True)
    typer.echo(f"{len(problems)} mismatch(es) between stock counters and the ledger", err=True)
    raise typer.Exit(1)
