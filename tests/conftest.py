"""Test fixtures: real PostgreSQL, real Redis, real localstripe, real processes.

Each pytest-xdist worker gets its own PostgreSQL database (migrated with Alembic), its own
redis-server and its own localstripe, so neither workers nor test runs see each other's data.
Tables are emptied before every test that asks for `db`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conveyor.db import Database
from conveyor.local_services import start_localstripe, start_redis
from conveyor.migrate import upgrade
from conveyor.settings import Settings
from models.audit import GENESIS_HASH
from models.screening import DEFAULT_RULES, RuleSet
from tests.helpers import free_port

ADMIN_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "")
WEBHOOK_SECRET = "whsec_test_conveyor"


def _worker_index(worker_id: str) -> int:
    return int(worker_id[2:]) if worker_id.startswith("gw") else 0


@pytest.fixture(scope="session")
def worker_index(worker_id: str) -> int:
    return _worker_index(worker_id)


@pytest.fixture(scope="session")
def database_url(worker_index: int, testrun_uid: str) -> Iterator[str]:
    """A database of this run and worker alone, so runs on one machine never collide."""
    admin = make_url(ADMIN_DATABASE_URL)
    name = f"conveyor_test_{testrun_uid[:8]}_{worker_index}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server of this run and worker alone (TEST_REDIS_URL to use another)."""
    if TEST_REDIS_URL:
        redis.Redis.from_url(TEST_REDIS_URL).flushdb()
        yield TEST_REDIS_URL
        return
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    url = f"redis://127.0.0.1:{port}/0"
    process = start_redis(url, data, data / "redis.log")
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("localstripe") / "localstripe.log"
    process = start_localstripe(port, log)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("var")


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str, localstripe: str, var_dir: Path) -> Settings:
    settings = Settings(
        var_dir=var_dir,
        database_url=database_url,
        redis_url=redis_url,
        secret_key="test-secret-key-" + "x" * 32,
        stripe_secret_key="sk_test_conveyor",
        stripe_publishable_key="pk_test_conveyor",
        stripe_api_base=localstripe,
        stripe_js_url=f"{localstripe}/js.stripe.com/v3/",
        stripe_webhook_secret=WEBHOOK_SECRET,
        catalogue_check_seconds=0,
        relay_poll_seconds=0.05,
        payment_attempts_per_ip_per_hour=1000,
        payment_attempts_per_email_per_hour=1000,
    )
    upgrade(settings)
    return settings


@pytest.fixture(scope="session")
def session_db(settings: Settings) -> Iterator[Database]:
    database = Database.from_settings(settings, pool_size=20)
    yield database
    database.dispose()


def truncate_all(database: Database) -> None:
    with database.engine.begin() as conn:
        tables = [
            row[0] for row in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            ))
        ]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        # A version no earlier snapshot had, so running storefronts reload their catalogue.
        conn.execute(text(
            "INSERT INTO catalogue_version (id, version, changed_at) VALUES (1, :v, now())"
        ), {"v": time.time_ns() // 1000})
        conn.execute(text("INSERT INTO audit_head (id, last_id, last_hash) "
                          "VALUES (1, 0, :genesis)"), {"genesis": GENESIS_HASH})
    with database.unit_of_work() as uow:
        uow.session.add(RuleSet(version=1, body=DEFAULT_RULES.model_dump(mode="json"),
                                note="defaults", created_by="test"))


@pytest.fixture
def db(session_db: Database) -> Database:
    """The worker's database, emptied for this test."""
    truncate_all(session_db)
    return session_db


@pytest.fixture
def clean_redis(redis_url: str) -> str:
    redis.Redis.from_url(redis_url).flushdb()
    return redis_url
