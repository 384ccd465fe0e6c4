"""The audit trail is a hash chain: altering, removing or reordering an entry is detected,
by `verify_chain` and by `conveyor audit verify`, which names the first broken entry."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from conveyor import audit
from conveyor.db import Database
from conveyor.settings import PROJECT_ROOT, Settings
from models.audit import AuditEntry, entry_hash
from tests.helpers import process_env

ALICE = audit.Actor(email="alice@conveyor.test", roles=("admin",), request_id="r1",
                    client_ip="192.0.2.1")


def _write(db: Database, count: int) -> None:
    for n in range(count):
        with db.unit_of_work() as uow:
            audit.record(uow.session, ALICE, "catalogue.variant_update", target_type="variant",
                         target_id=str(n), before={"price_cents": 100}, after={"price_cents": n})


def _verify(db: Database) -> audit.ChainReport:
    with db.read_session() as session:
        return audit.verify_chain(session)


def _cli_verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conveyor.cli", "audit", "verify"],
                          env=process_env(settings), cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def _tamper(db: Database, statement: str) -> None:
    """What someone with database access could do: go around the append-only trigger."""
    with db.engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only"))
        conn.execute(text(statement))
        conn.execute(text("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only"))


def test_an_intact_chain_verifies(db: Database, settings: Settings):
    _write(db, 5)
    assert _verify(db).ok and _verify(db).checked == 5
    result = _cli_verify(settings)
    assert result.returncode == 0 and "intact: 5 entries" in result.stdout


def test_the_database_refuses_to_change_entries(db: Database):
    _write(db, 1)
    with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET actor_email = 'mallory@x.test'"))


@pytest.mark.parametrize(("statement", "broken_id", "reason"), [
    ("UPDATE audit_entry SET after = '{\"price_cents\": 1}' WHERE id = 3", 3, "altered"),
    ("UPDATE audit_entry SET actor_email = 'mallory@x.test' WHERE id = 2", 2, "altered"),
    ("DELETE FROM audit_entry WHERE id = 4", 4, "missing"),
    ("DELETE FROM audit_entry WHERE id >= 5", 5, "ends at entry 6"),
    ("UPDATE audit_entry SET at = at - interval '1 second' WHERE id = 6", 6, "altered"),
])
def test_tampering_is_detected_and_the_first_broken_entry_named(
    db: Database, settings: Settings, statement: str, broken_id: int, reason: str
):
    _write(db, 6)
    _tamper(db, statement)
    report = _verify(db)
    assert (report.broken_id, report.ok) == (broken_id, False)
    assert reason in report.reason
    result = _cli_verify(settings)
    assert result.returncode == 1
    assert f"BROKEN at entry {broken_id}" in result.stderr


def test_a_rehashed_forgery_still_breaks_the_link_to_the_next_entry(db: Database):
    _write(db, 3)
    with db.read_session() as session:
        forged = session.get(AuditEntry, 2)
        assert forged is not None
        forged.actor_email = "mallory@x.test"
        new_hash = entry_hash(forged)
    _tamper(db, f"UPDATE audit_entry SET actor_email = 'mallory@x.test', hash = '{new_hash}' "
                "WHERE id = 2")
    report = _verify(db)
    assert report.broken_id == 3 and "previous hash" in report.reason


def test_concurrent_appends_keep_one_unbroken_chain(db: Database):
    def write(n: int) -> None:
        with db.unit_of_work() as uow:
            audit.record(uow.session, ALICE, "order.note", target_id=str(n))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(write, range(40)))
    report = _verify(db)
    assert report.ok and report.checked == 40


def test_secrets_never_reach_an_entry(db: Database):
    with db.unit_of_work() as uow:
        entry = audit.record(uow.session, ALICE, "auth.login", after={
            "password": "hunter2hunter2", "token": "cvt_abc", "totp_code": "123456",
            "nested": {"api_key": "k", "Authorization": "Bearer x"}, "postal_code": "10117",
            "password_hash": "$argon2id$..."})
    assert entry.after == {"password": "[redacted]", "token": "[redacted]",
                           "totp_code": "[redacted]", "postal_code": "10117",
                           "nested": {"api_key": "[redacted]", "Authorization": "[redacted]"},
                           "password_hash": "[redacted]"}
