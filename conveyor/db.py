"""The database engine and the unit of work, the only place that commits.

Services take a `UnitOfWork` and use `uow.session`; they may flush but never commit. Leaving a
`with db.unit_of_work() as uow:` block normally commits, an exception rolls back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import ORMExecuteState, sessionmaker
from sqlmodel import Session

from conveyor.settings import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
LIKE_ESCAPE = "\\"
# Starlette runs every synchronous endpoint and `run_in_threadpool` call on anyio's default
# thread limiter: at most this many threads, so at most this many connections in use at once.
WEB_THREADS = 40


def like_pattern(text: str) -> str:
    """`%text%` for LIKE/ILIKE with the caller's `%`, `_` and `\\` taken literally
    (use with `escape=LIKE_ESCAPE`)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def create_db_engine(url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> Engine:
    """An engine for `url`. On PostgreSQL it keeps `pool_size` connections open and opens up to
    `max_overflow` more (default: twice `pool_size`) when all are in use, closing each of those
    as soon as it is given back: size the pool to the process's concurrency, or every burst
    above it pays for new connections."""
    if url.startswith("sqlite"):
        # Each process (web, workers, relay) has its own connections to one file: WAL lets
        # readers run beside the writer, the busy timeout makes a writer wait its turn
        # instead of failing with "database is locked", and BEGIN IMMEDIATE takes the write
        # lock at the start of a transaction so two writers never deadlock on an upgrade.
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            read_only = conn.get_execution_options().get("read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    overflow = pool_size * 2 if max_overflow is None else max_overflow
    return create_engine(url, pool_size=pool_size, max_overflow=overflow,
                         pool_pre_ping=True, pool_recycle=1800)


class ConveyorSession(Session):
    """A session in which every row read under a lock (FOR UPDATE) is read afresh."""


@event.listens_for(ConveyorSession, "do_orm_execute")
def _refresh_locked_rows(state: ORMExecuteState) -> None:
    # Without this, an object already in the session keeps the values read before the lock
    # was taken, and a service would decide on a stale row while believing it holds it.
    if state.is_select and getattr(state.statement, "_for_update_arg", None) is not None:
        state.update_execution_options(populate_existing=True)


class UnitOfWork:
    """One database transaction. Commits on a clean exit, rolls back on an exception."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> UnitOfWork:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.session.commit()
            else:
                self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        """Commit what is done so far and start a new transaction on the same session."""
        self.session.commit()

    def flush(self) -> None:
        self.session.flush()


class Database:
    """An engine and a session factory for one process."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> None:
        self.url = url
        self.engine = create_db_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self._sessions = sessionmaker(self.engine, class_=ConveyorSession,
                                      expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(read_only=True), class_=ConveyorSession,
            expire_on_commit=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int = 10,
                      max_overflow: int | None = None) -> Database:
        if settings.is_sqlite:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.effective_database_url, pool_size=pool_size,
                   max_overflow=max_overflow)

    @classmethod
    def for_web_app(cls, settings: Settings) -> Database:
        """A web app's database: one pooled connection per thread of its thread pool, so no
        connection is opened and closed per request under load, and no overflow, as no request
        holds two connections at once (checked over the storefront's and the admin's tests).
        Budget under `conveyor run` on PostgreSQL (100 connections, 3 kept for superusers):
        storefront 40 + its stock listener 1, admin 40, two workers of 4 threads 8, relay 2:
        91."""
        return cls.from_settings(settings, pool_size=WEB_THREADS, max_overflow=0)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self._sessions())

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: never committed. Closing it ends its transaction and
        leaves the objects read detached but loaded, so they can be used afterwards."""
        session = self._read_sessions()
        try:
            yield session
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
