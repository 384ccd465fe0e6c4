"""Worker entry module for bench/pipeline.py: Conveyor's real actors, plus the baseline's
no-op actor that does one small PostgreSQL transaction per message."""

from __future__ import annotations

import dramatiq
from sqlalchemy import text

from conveyor import runtime
from fulfilment.worker import broker  # noqa: F401  (the real broker and actors)


@dramatiq.actor(queue_name="bench", max_retries=0)
def bench_noop(n: int) -> None:
    with runtime.current().db.unit_of_work() as uow:
        uow.session.execute(text("INSERT INTO bench_tick (n) VALUES (:n)"), {"n": n})
