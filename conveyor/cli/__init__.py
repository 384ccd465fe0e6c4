"""The `conveyor` command: starts the shop's processes and runs its maintenance commands.

This package is the one place in `conveyor/` that may import the offices (DESIGN.md).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from conveyor.cli.finance import reconcile_command, stripe_app
from conveyor.cli.middle_office import pipeline_app, screening_app
from conveyor.cli.staff import audit_app, staff_app
from conveyor.cli.stock import stock_app
from conveyor.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Conveyor: a self-hosted shop, from storefront to back office.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
app.add_typer(db_app, name="db")
app.add_typer(staff_app, name="staff")
app.add_typer(audit_app, name="audit")
app.add_typer(screening_app, name="screening")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(stock_app, name="stock")
app.add_typer(stripe_app, name="stripe")


def _settings() -> Settings:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return settings


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from conveyor.migrate import upgrade

    settings = _settings()
    upgrade(settings, revision)
    typer.echo(f"database at {revision}: {_safe_url(settings.effective_database_url)}")


@app.command("demo-data")
def demo_data(force: bool = typer.Option(False, help="Load even if products exist.")) -> None:
    """Load the demo catalogue, images and stock (once; skipped when products exist)."""
    from conveyor.cli.demo_data import load_demo_data

    settings = _settings()
    summary = load_demo_data(settings, force=force)
    typer.echo(summary)


@app.command("storefront")
def storefront(
    host: str = typer.Option(None, help="Default: STOREFRONT_HOST."),
    port: int = typer.Option(None, help="Default: STOREFRONT_PORT."),
    workers: int = typer.Option(1, help="Web server processes."),
) -> None:
    """Serve the public storefront with uvicorn."""
    import uvicorn

    settings = _settings()
    uvicorn.run("storefront.app:app_from_env", factory=True,
                host=host or settings.storefront_host, port=port or settings.storefront_port,
                workers=workers, proxy_headers=True, access_log=False,
                log_level=settings.log_level.lower())


@app.command("admin")
def admin(
    host: str = typer.Option(None, help="Default: ADMIN_HOST."),
    port: int = typer.Option(None, help="Default: ADMIN_PORT."),
    workers: int = typer.Option(1, help="Web server processes."),
) -> None:
    """Serve the staff JSON API with uvicorn (OpenAPI at /api/openapi.json)."""
    import uvicorn

    from admin.app import RequestIdFilter

    settings = _settings()
    for handler in logging.getLogger().handlers:  # every line says which request it is about
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"))
    uvicorn.run("admin.app:app_from_env", factory=True,
                host=host or settings.admin_host, port=port or settings.admin_port,
                workers=workers, proxy_headers=True, access_log=False, log_config=None,
                log_level=settings.log_level.lower())


@app.command("worker")
def worker(
    processes: int = typer.Option(None, help="Default: WORKER_PROCESSES."),
    threads: int = typer.Option(None, help="Default: WORKER_THREADS."),
    queues: str = typer.Option("", help="Comma-separated queues (default: all of them)."),
) -> None:
    """Run the Dramatiq workers (for every queue, or the ones named)."""
    settings = _settings()
    args = [sys.executable, "-m", "dramatiq", "fulfilment.worker",
            "--processes", str(processes or settings.worker_processes),
            "--threads", str(threads or settings.worker_threads)]
    if queues:
        args += ["--queues", *[q.strip() for q in queues.split(",") if q.strip()]]
    os.execv(sys.executable, args)  # noqa: S606 (our own interpreter and module)


@app.command("relay")
def relay() -> None:
    """Publish the outbox to Redis and send scheduled jobs."""
    from conveyor.relay import run_relay

    run_relay(_settings())


@app.command("sync-payments")
def sync_payments() -> None:
    """Re-read from Stripe the payments of orders stuck waiting for payment."""
    from conveyor.runtime import Runtime
    from fulfilment.payments import sync_payments as sync

    rt = Runtime.from_settings(_settings())
    report = sync(db=rt.db, gateway=rt.gateway, env=rt.templates, settings=rt.settings)
    typer.echo(f"checked {report.checked} payment(s): {report.changed} updated, "
               f"{report.failed} could not be read")
    raise typer.Exit(1 if report.failed else 0)


@app.command("expire-orders")
def expire_orders() -> None:
    """Expire unpaid orders whose reservation ran out (the relay schedules this too)."""
    from conveyor.runtime import Runtime
    from fulfilment.expiry import expire_unpaid_orders

    rt = Runtime.from_settings(_settings())
    report = expire_unpaid_orders(db=rt.db, gateway=rt.gateway, env=rt.templates,
                                  settings=rt.settings)
    typer.echo(f"expired {report.expired}, paid late {report.paid_late}, "
               f"postponed {report.skipped}")


app.command("reconcile")(reconcile_command)


@app.command("run")
def run() -> None:
    """Set up and start the whole shop in this terminal (what `make run` calls)."""
    from conveyor.cli.run import run_everything

    run_everything(_settings())


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    app()
