"""The models and the migrations describe the same schema, on PostgreSQL and on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

import models  # noqa: F401
from conveyor.db import Database
from conveyor.migrate import upgrade
from conveyor.settings import Settings


def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    engine.dispose()
    return diff


def test_migrated_postgresql_schema_matches_the_models(settings: Settings):
    assert _differences(settings.effective_database_url) == []


@pytest.mark.filterwarnings("ignore:.*expression-based index")  # SQLite cannot reflect them
def test_migrations_build_the_same_schema_on_sqlite(tmp_path: Path):
    sqlite = Settings(var_dir=tmp_path)
    upgrade(sqlite)
    assert _differences(sqlite.effective_database_url) == []
    tables = set(inspect(create_engine(sqlite.effective_database_url)).get_table_names())
    assert {"orders", "stock_movement", "outbox_message", "catalogue_version"} <= tables


def test_indexes_on_expressions_survive_table_rebuilds_on_sqlite(tmp_path: Path):
    # SQLite cannot reflect them, so a batch rebuild of their table drops them silently
    sqlite = Settings(var_dir=tmp_path)
    upgrade(sqlite)
    wanted = {index.name for table in SQLModel.metadata.tables.values()
              for index in table.indexes
              if any(not isinstance(e, Column) for e in index.expressions)}
    engine = create_engine(sqlite.effective_database_url)
    with engine.connect() as conn:
        present = set(conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index'").scalars())
    engine.dispose()
    assert wanted and wanted <= present


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path):
    database = Database.from_settings(Settings(var_dir=tmp_path))
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    database.dispose()


def test_the_stock_ledger_refuses_updates_and_deletes(db: Database):
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO warehouse (code, name) VALUES ('W', 'W')"))
        conn.execute(text("INSERT INTO category (slug, name, description, position) "
                          "VALUES ('c', 'C', '', 0)"))
        conn.execute(text("INSERT INTO product (slug, name, description, category_id, "
                          "image_path, active, created_at) VALUES ('p', 'P', '', 1, '', true, "
                          "now())"))
        conn.execute(text("INSERT INTO variant (product_id, sku, name, price_cents, currency, "
                          "position, active) VALUES (1, 'S', 'S', 100, 'EUR', 0, true)"))
        conn.execute(text("INSERT INTO stock_movement (variant_id, kind, on_hand_delta, "
                          "allocated_delta, reserved_delta, reason, actor, document_type, "
                          "document_id, created_at) VALUES (1, 'receipt', 5, 0, 0, '', 't', '',"
                          " '', now())"))
    for statement in ("UPDATE stock_movement SET on_hand_delta = 50",
                      "DELETE FROM stock_movement"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
