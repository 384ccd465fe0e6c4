"""Alembic environment: Conveyor's models are the target; the URL comes from settings."""

from __future__ import annotations

import warnings

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import models  # noqa: F401  (registers every table on SQLModel.metadata)
from conveyor.db import create_db_engine
from conveyor.settings import Settings

config = context.config
# SQLite cannot reflect indexes on expressions; the migrations that rebuild a table recreate
# them (see 0010), so the warning only alarms whoever runs `make run`.
warnings.filterwarnings("ignore", message="Skipped unsupported reflection of expression-based")
target_metadata = SQLModel.metadata


def _url() -> str:
    return config.attributes.get("url") or Settings().effective_database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # Server defaults exist only to fill new NOT NULL columns of existing rows.
        compare_server_default=False,
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=_url().startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(_url())
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
