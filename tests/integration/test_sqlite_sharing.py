"""SQLite (the `make run` database) shared by several processes writing at once: WAL, a busy
timeout and BEGIN IMMEDIATE mean they queue instead of failing with "database is locked"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conveyor.db import Database
from conveyor.migrate import upgrade
from conveyor.settings import PROJECT_ROOT, Settings
from fulfilment.inventory import verify_ledger
from tests.factories import make_pending_order, make_product, stock_of

WRITER = textwrap.dedent("""
    import sys, uuid
    from datetime import timedelta
    from conveyor.db import Database
    from fulfilment.inventory import LineRequest, release_reservations, reserve_lines
    from models.base import utcnow
    db = Database(sys.argv[1])
    variant, orders = int(sys.argv[2]), [uuid.UUID(o) for o in sys.argv[3:]]
    for _ in range(15):
        for order in orders:
            with db.unit_of_work() as uow:
                reserve_lines(uow=uow, order_id=order, until=utcnow() + timedelta(minutes=5),
                              lines=[LineRequest(variant, 1)])
            with db.unit_of_work() as uow:
                release_reservations(uow=uow, order_id=order, reason="churn")
""")


def test_four_processes_writing_to_one_sqlite_file_never_hit_database_is_locked(tmp_path: Path):
    settings = Settings(var_dir=tmp_path)
    upgrade(settings)
    db = Database.from_settings(settings)
    variant = make_product(db, variants=[("Std", 100, 50)]).variant_ids[0]
    writers = []
    for _ in range(4):
        orders = [str(make_pending_order(db)) for _ in range(3)]
        writers.append(subprocess.Popen(
            [sys.executable, "-c", WRITER, settings.effective_database_url, str(variant),
             *orders], cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True))
    failures = [w.stderr.read() for w in writers if w.wait(timeout=120) != 0]
    assert failures == []
    assert stock_of(db, variant).reserved == 0
    with db.read_session() as session:
        assert verify_ledger(session) == []
    db.dispose()
