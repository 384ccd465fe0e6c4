"""What is waiting where: queue depths, dead letters and the outbox; and replaying dead letters.

Reads Dramatiq's Redis layout directly (namespace `dramatiq`): a list per queue of waiting
message ids, a hash of their bodies (`<queue>.msgs`), a delayed list (`<queue>.DQ`), and the
dead letters as a sorted set by time of death (`<queue>.XQ`) with their bodies
(`<queue>.XQ.msgs`). Replaying puts a dead message back on its queue with fresh retry
counters; actors are idempotent, so a replay that runs twice does no harm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import dramatiq
import redis
from sqlalchemy import func
from sqlmodel import col, select

from conveyor.db import Database
from conveyor.messages import QUEUES
from models.base import utcnow
from models.messaging import OutboxMessage

NAMESPACE = "dramatiq"


def _key(queue: str, suffix: str = "") -> str:
    return f"{NAMESPACE}:{queue}{suffix}"


def _age_seconds(body: bytes | str | None, now_ms: int) -> float | None:
    if not body:
        return None
    timestamp = json.loads(body).get("message_timestamp")
    return round((now_ms - int(timestamp)) / 1000, 3) if timestamp else None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    waiting: int
    delayed: int
    dead: int
    oldest_waiting_seconds: float | None


def queue_stats(client: redis.Redis, queues: tuple[str, ...] = QUEUES) -> list[QueueStats]:
    now_ms = int(utcnow().timestamp() * 1000)
    stats = []
    for queue in queues:
        first = client.lindex(_key(queue), 0)
        body = client.hget(_key(queue, ".msgs"), first) if first else None
        stats.append(QueueStats(
            queue=queue, waiting=int(client.llen(_key(queue))),
            delayed=int(client.llen(_key(queue, ".DQ"))),
            dead=int(client.zcard(_key(queue, ".XQ"))),
            oldest_waiting_seconds=_age_seconds(body, now_ms),
        ))
    return stats


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    redis_id: str
    message_id: str
    actor_name: str
    args: list[Any]
    died_at_ms: int
    retries: int
    error: str


def dead_letters(client: redis.Redis, queue: str, *, limit: int = 50) -> list[DeadLetter]:
    entries = client.zrange(_key(queue, ".XQ"), 0, limit - 1, withscores=True)
    found = []
    for raw_id, died_at in cast(list[tuple[bytes, float]], entries):
        redis_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        body = client.hget(_key(queue, ".XQ.msgs"), redis_id)
        if not body:
            continue
        message = json.loads(body)
        options = message.get("options") or {}
        traceback = str(options.get("traceback") or "")
        found.append(DeadLetter(
            queue=queue, redis_id=redis_id, message_id=str(message.get("message_id", "")),
            actor_name=str(message.get("actor_name", "")), args=list(message.get("args", [])),
            died_at_ms=int(died_at), retries=int(options.get("retries", 0)),
            error=traceback.strip().splitlines()[-1][:300] if traceback else "",
        ))
    return found


def replay_dead_letters(client: redis.Redis, broker: dramatiq.Broker, *, queue: str,
                        message_id: str | None = None) -> int:
    """Put dead messages of `queue` (or just the one with this message id) back to work."""
    replayed = 0
    for letter in dead_letters(client, queue, limit=10_000):
        if message_id is not None and letter.message_id != message_id:
            continue
        body = client.hget(_key(queue, ".XQ.msgs"), letter.redis_id)
        if not body:
            continue
        message = dramatiq.Message.decode(body if isinstance(body, bytes) else body.encode())
        broker.enqueue(dramatiq.Message(
            queue_name=message.queue_name, actor_name=message.actor_name, args=message.args,
            kwargs=message.kwargs, options={}, message_id=message.message_id))
        client.zrem(_key(queue, ".XQ"), letter.redis_id)
        client.hdel(_key(queue, ".XQ.msgs"), letter.redis_id)
        replayed += 1
    return replayed


@dataclass(frozen=True)
class OutboxStats:
    unpublished: int
    oldest_seconds: float | None


def outbox_stats(db: Database) -> OutboxStats:
    with db.read_session() as session:
        count, oldest = session.exec(
            select(func.count(), func.min(OutboxMessage.created_at))
            .where(col(OutboxMessage.published_at).is_(None))).one()
    age = (utcnow() - oldest).total_seconds() if oldest else None
    return OutboxStats(int(count), round(age, 3) if age is not None else None)
