"""The outbox commits with the change, and the relay publishes to a real Redis after commit."""

from __future__ import annotations

import json

import pytest
import redis
from sqlmodel import select

from conveyor import outbox
from conveyor.broker import BrokerPublisher, create_broker
from conveyor.db import Database
from conveyor.settings import Settings
from models.messaging import OutboxMessage
from tests.helpers import free_port


def _queued(redis_url: str, queue: str) -> list[dict[str, object]]:
    client = redis.Redis.from_url(redis_url)
    ids = client.lrange(f"dramatiq:{queue}", 0, -1)
    bodies = client.hmget(f"dramatiq:{queue}.msgs", ids) if ids else []
    return [json.loads(body) for body in bodies if body]


def test_a_message_exists_only_if_its_transaction_commits(db: Database):
    with db.unit_of_work() as uow:
        outbox.enqueue(uow, "screen_order", "committed")
    with pytest.raises(RuntimeError), db.unit_of_work() as uow:
        outbox.enqueue(uow, "screen_order", "rolled back")
        raise RuntimeError("the change failed")
    with db.read_session() as session:
        args = [m.args for m in session.exec(select(OutboxMessage))]
    assert args == [["committed"]]


def test_the_relay_publishes_in_order_and_marks_what_it_sent(
    db: Database, settings: Settings, clean_redis: str
):
    with db.unit_of_work() as uow:
        first = outbox.enqueue(uow, "screen_order", "a")
        outbox.enqueue(uow, "deliver_email", "b")
        outbox.enqueue(uow, "screen_order", "c")
    publisher = BrokerPublisher(create_broker(settings, set_global=False))
    assert outbox.relay_batch(db, publisher) == 3
    assert outbox.relay_batch(db, publisher) == 0
    screening = _queued(clean_redis, "screening")
    assert [m["args"] for m in screening] == [["a"], ["c"]]
    assert screening[0]["message_id"] == str(first.message_id)
    assert [m["actor_name"] for m in _queued(clean_redis, "mail")] == ["deliver_email"]
    assert outbox.pending_count(db) == 0


def test_with_redis_down_nothing_is_lost_and_it_goes_out_when_redis_is_back(
    db: Database, settings: Settings, clean_redis: str
):
    with db.unit_of_work() as uow:
        outbox.enqueue(uow, "screen_order", "kept")
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    down = BrokerPublisher(create_broker(dead, set_global=False))
    with pytest.raises(redis.ConnectionError):
        outbox.relay_batch(db, down)
    with db.read_session() as session:
        row = session.exec(select(OutboxMessage)).one()
    assert row.published_at is None and row.claimed_until is None and row.last_error

    up = BrokerPublisher(create_broker(settings, set_global=False))
    assert outbox.relay_batch(db, up) == 1
    assert [m["args"] for m in _queued(clean_redis, "screening")] == [["kept"]]
