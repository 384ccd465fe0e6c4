"""The Dramatiq broker on Redis, and the publisher the outbox relay uses."""

from __future__ import annotations

import contextlib

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from conveyor import runtime
from conveyor.settings import Settings
from models.messaging import OutboxMessage

DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000


def create_broker(settings: Settings, *, set_global: bool = True) -> RedisBroker:
    """A Redis broker for `settings.redis_url`; the connection opens on first use.

    A worker killed mid-message leaves it unacknowledged; once the worker's heartbeat is older
    than WORKER_HEARTBEAT_TIMEOUT_SECONDS, the next maintenance pass (run on a share of
    BROKER_MAINTENANCE_CHANCE per million Redis commands) puts it back on its queue.
    """
    broker = RedisBroker(
        url=settings.redis_url,
        heartbeat_timeout=int(settings.worker_heartbeat_timeout_seconds * 1000),
        maintenance_chance=settings.broker_maintenance_chance,
        dead_message_ttl=DEAD_MESSAGE_TTL_MS,
    )
    if set_global:
        dramatiq.set_broker(broker)
    return broker


class BrokerPublisher:
    """Publishes outbox rows as Dramatiq messages, by actor name, without importing actors."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def publish(self, message: OutboxMessage) -> None:
        self.broker.enqueue(
            dramatiq.Message(
                queue_name=message.queue_name,
                actor_name=message.actor_name,
                args=tuple(message.args),
                kwargs={},
                options={},
                message_id=str(message.message_id),
            )
        )

    def send(self, actor_name: str, queue_name: str, *args: object) -> None:
        """Publish a message straight away (scheduled jobs, replays); not for business changes."""
        self.broker.enqueue(
            dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=tuple(args),
                             kwargs={}, options={})
        )


class RuntimeMiddleware(dramatiq.Middleware):
    """Gives each worker process its own database engine and Stripe client when it boots."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        runtime.install(runtime.Runtime.from_settings(self.settings))

    def before_process_stop(self, broker: dramatiq.Broker) -> None:
        from conveyor import runtime

        with contextlib.suppress(RuntimeError):
            runtime.current().db.dispose()
