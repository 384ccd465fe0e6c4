"""The relay process: outbox rows to Redis, and the clock for scheduled jobs.

It polls the outbox every RELAY_POLL_SECONDS (at once again while there is a backlog). When
Redis is down it keeps the rows, backs off up to 10 seconds, and publishes them when Redis is
back. Scheduled jobs are plain messages sent on a timer; their actors are idempotent, so two
relays, or a tick sent twice, do no harm.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from conveyor.broker import BrokerPublisher, create_broker
from conveyor.db import Database
from conveyor.messages import queue_of
from conveyor.outbox import relay_batch
from conveyor.settings import Settings

log = logging.getLogger("conveyor.relay")
MAX_BACKOFF_SECONDS = 10.0


@dataclass
class Job:
    actor_name: str
    every_seconds: float
    due_at: float = 0.0


def scheduled_jobs(settings: Settings) -> list[Job]:
    return [
        Job("expire_unpaid_orders", settings.expiry_interval_seconds),
        Job("sync_payments", settings.sync_payments_interval_seconds),
        Job("sync_stripe", settings.stripe_sync_interval_seconds),
    ]


def run_relay(settings: Settings, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    db = Database.from_settings(settings, pool_size=2)
    publisher = BrokerPublisher(create_broker(settings, set_global=False))
    jobs = scheduled_jobs(settings)
    backoff = 0.0
    log.info("relay started: outbox -> %s", settings.redis_url.split("@")[-1])
    while not stop.is_set():
        try:
            sent = relay_batch(db, publisher)
            now = time.monotonic()
            for job in jobs:
                if now >= job.due_at:
                    publisher.send(job.actor_name, queue_of(job.actor_name))
                    job.due_at = now + job.every_seconds
            if backoff:
                log.info("relay recovered; publishing again")
            backoff = 0.0
        except Exception as exc:  # Redis or the database away: keep going, slower
            backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF_SECONDS)
            log.warning("relay could not publish (%s); retrying in %.1fs", exc, backoff)
            stop.wait(backoff)
            continue
        if not sent:
            stop.wait(settings.relay_poll_seconds)
    db.dispose()
