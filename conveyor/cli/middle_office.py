"""`conveyor screening backtest` and `conveyor pipeline ...`: the middle office by hand."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import redis
import typer
from pydantic import ValidationError

from conveyor.broker import create_broker
from conveyor.db import Database
from conveyor.messages import QUEUES
from conveyor.pipeline import dead_letters, outbox_stats, queue_stats, replay_dead_letters
from conveyor.settings import Settings
from fulfilment.screening import backtest
from models.base import utcnow
from models.screening import RuleSetBody

screening_app = typer.Typer(no_args_is_help=True, help="Fraud and quality screening.")
pipeline_app = typer.Typer(no_args_is_help=True, help="Queues, dead letters and the outbox.")


@screening_app.command("backtest")
def backtest_command(
    rules: Path = typer.Option(..., "--rules", exists=True, dir_okay=False,
                               help="A JSON rule set, as POST /api/screening/rules takes "
                                    "in `body` (or GET returns)."),
    since_days: int = typer.Option(0, help="Only orders screened in the last N days (0: all)."),
    examples: int = typer.Option(10, help="How many changed orders to show."),
) -> None:
    """Replay a candidate rule set over past orders; print how many decisions would change.
    Nothing is written."""
    try:
        raw = json.loads(rules.read_text())
        if isinstance(raw, dict) and "body" in raw:  # one rule set as the API returns it
            raw = raw["body"]
        candidate = RuleSetBody.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        typer.echo(f"error: {rules} is not a valid rule set: {exc}", err=True)
        raise typer.Exit(2) from None
    db = Database.from_settings(Settings(), pool_size=1)
    since = utcnow() - timedelta(days=since_days) if since_days else None
    try:
        with db.read_session() as session:
            report = backtest(session, candidate, since=since)
    finally:
        db.dispose()
    typer.echo(f"replayed {report.orders} screened orders: {len(report.changed)} decisions "
               "would change")
    for (before, after), count in sorted(report.counts.items()):
        marker = "" if before == after else "  <- changes"
        typer.echo(f"  {before:>8} -> {after:<8} {count:>6}{marker}")
    for change in report.changed[:examples]:
        typer.echo(f"  e.g. {change.number}: {change.before} (score {change.score_before}) "
                   f"-> {change.after} (score {change.score_after}; "
                   f"{', '.join(change.signals_after) or 'no signals'})")


@pipeline_app.command("status")
def status() -> None:
    """Waiting, delayed and dead messages per queue, and the unpublished outbox."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    for stats in queue_stats(client):
        oldest = (f"{stats.oldest_waiting_seconds:.1f}s" if stats.oldest_waiting_seconds
                  is not None else "-")
        typer.echo(f"{stats.queue:<12} waiting {stats.waiting:>6}  delayed {stats.delayed:>5}"
                   f"  dead {stats.dead:>5}  oldest {oldest}")
    db = Database.from_settings(settings, pool_size=1)
    try:
        outbox = outbox_stats(db)
    finally:
        db.dispose()
    typer.echo(f"outbox       unpublished {outbox.unpublished}")
    for queue in QUEUES:
        for letter in dead_letters(client, queue, limit=5):
            typer.echo(f"  dead in {queue}: {letter.actor_name}{tuple(letter.args)} "
                       f"[{letter.message_id}] {letter.error}")


@pipeline_app.command("replay")
def replay(
    queue: list[str] = typer.Option(None, "--queue", help="Queue(s) to replay (default: all)."),
    message_id: str = typer.Option(None, help="Only the dead message with this id."),
) -> None:
    """Put dead-lettered messages back on their queues, to be processed again."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url)
    broker = create_broker(settings, set_global=False)
    total = 0
    for name in queue or QUEUES:
        if name not in QUEUES:
            typer.echo(f"error: no queue {name!r}; queues: {', '.join(QUEUES)}", err=True)
            raise typer.Exit(2)
        count = replay_dead_letters(client, broker, queue=name, message_id=message_id)
        if count:
            typer.echo(f"{name}: replayed {count}")
        total += count
    typer.echo(f"replayed {total} message(s)")
