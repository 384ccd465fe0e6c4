"""A benchmark's own PostgreSQL database, made fresh on the server that
BENCH_ADMIN_DATABASE_URL points at (default: the local one, as `make test` uses)."""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def database_url(name: str) -> str:
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def fresh_database(name: str) -> str:
    """Drop and create database `name`; return its URL."""
    engine = create_engine(make_url(ADMIN_URL), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return database_url(name)
