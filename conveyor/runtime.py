"""The per-process resources a worker needs: settings, database, Stripe gateway, templates.

Web apps keep theirs on `app.state`; Dramatiq actors cannot be handed arguments other than
message data, so a worker process installs one `Runtime` when it boots and actors read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from jinja2 import Environment

from conveyor.db import Database
from conveyor.settings import Settings
from conveyor.stripe_gateway import StripeGateway, create_gateway
from conveyor.templating import create_environment


@dataclass
class Runtime:
    settings: Settings
    db: Database
    _gateway: StripeGateway | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(settings=settings, db=Database.from_settings(settings))

    @property
    def gateway(self) -> StripeGateway:
        if self._gateway is None:
            self._gateway = create_gateway(self.settings)
        return self._gateway

    @cached_property
    def templates(self) -> Environment:
        return create_environment()


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no Conveyor runtime is installed in this process")
    return _current
