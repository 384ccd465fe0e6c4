"""`conveyor stripe sync` and `conveyor reconcile`: the finance desk's commands.

`stripe sync` copies what Stripe moved since the last run (fulfilment.stripe_sync: resumable,
idempotent) with a progress bar per kind of object, and prints how many of each were stored.
`reconcile --from --to` reconciles those days (fulfilment.reconciliation), stores the run like
the admin API does, prints the totals per difference class, and exits 1 when there is a
difference other than Stripe's fees (so a scheduler or CI can alert on it).
"""

from __future__ import annotations

import getpass
from datetime import datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from conveyor import audit
from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import PaymentProviderError, create_gateway

stripe_app = typer.Typer(no_args_is_help=True,
                         help="Stripe: copy what Stripe moved, for reconciliation.")


def _actor() -> audit.Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return audit.Actor(email=f"cli:{user}")


@stripe_app.command("sync")
def sync() -> None:
    """Copy charges, refunds, balance transactions and payouts from Stripe since the last run
    (an interrupted run goes on where it stopped), then tie payouts to their transactions."""
    from fulfilment.stripe_sync import KINDS, sync_stripe

    settings = Settings()
    db = Database.from_settings(settings, pool_size=1)
    console = Console(stderr=True)
    try:
        with Progress(TextColumn("{task.description:<22}"), BarColumn(),
                      TextColumn("{task.fields[stored]:>7} stored"), TimeElapsedColumn(),
                      console=console) as progress:
            tasks: dict[str, TaskID] = {kind: progress.add_task(
                kind.replace("_", " "), total=None, stored=0) for kind in KINDS}
            current: list[str] = []

            def advance(kind: str, stored: int) -> None:
                if current and current[-1] != kind:  # the previous kind's walk has finished
                    _finish(progress, tasks[current[-1]])
                current.append(kind)
                progress.update(tasks[kind], stored=stored)

            report = sync_stripe(db=db, gateway=create_gateway(settings), progress=advance)
            for task in tasks.values():
                _finish(progress, task)
    except PaymentProviderError as exc:
        typer.echo(f"error: Stripe did not answer: {exc}. Run again: the sync goes on where "
                   "it stopped.", err=True)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    for kind in KINDS:
        typer.echo(f"{kind}: {report.stored.get(kind, 0)} stored")
    typer.echo(f"payouts tied to their transactions: {report.payouts_tied}")


def _finish(progress: Progress, task: TaskID) -> None:
    """A walk that has ended: its bar full (Stripe does not say how many there are)."""
    progress.update(task, total=1, completed=1)


def reconcile_command(
    start: datetime = typer.Option(..., "--from", formats=["%Y-%m-%d"],
                                   help="First day (UTC), YYYY-MM-DD."),
    end: datetime = typer.Option(..., "--to", formats=["%Y-%m-%d"],
                                 help="Last day (UTC), inclusive, YYYY-MM-DD."),
) -> None:
    """Reconcile what Stripe moved (copied by `conveyor stripe sync`) against the shop's
    payments, refunds and disputes for the days FROM..TO, store the run, print the totals
    per difference class; exit 1 when there are differences other than fees."""
    from fulfilment.reconciliation import differences, reconcile
    from models.finance import DifferenceClass

    first, last = start.date(), end.date()
    if last < first:
        typer.echo("error: --to is before --from", err=True)
        raise typer.Exit(2)
    actor = _actor()
    db = Database.from_settings(Settings(), pool_size=1)
    try:
        with db.unit_of_work() as uow:
            run = reconcile(uow=uow, start=first, end=last, created_by=actor.email)
            audit.record(uow.session, actor, "reconciliation.run",
                         target_type="reconciliation_run", target_id=str(run.id),
                         after={"start": first, "end": last, "matched": run.matched,
                                "totals": run.totals})
    finally:
        db.dispose()
    console = Console(width=100)
    console.print(f"Reconciliation run {run.id}: {first} to {last}")
    table = Table()
    table.add_column("difference")
    table.add_column("items", justify="right")
    table.add_column("cents", justify="right")
    for kind in DifferenceClass:
        totals = run.totals.get(kind.value, {"items": 0, "cents": 0})
        table.add_row(kind.value, str(totals["items"]), str(totals["cents"]))
    console.print(table)
    found = differences(run)
    console.print(f"matched: {run.matched}; differences (fees aside): {found}")
    raise typer.Exit(1 if found else 0)
