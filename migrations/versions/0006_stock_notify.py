"""stock notify

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 18:00:00.000000

Every change to a `stock_item` row sends `pg_notify('conveyor_stock', <variant id>)`, and a
TRUNCATE sends '*' (everything changed). PostgreSQL delivers notifications when the
transaction commits, so a storefront listening on the channel (storefront/live_stock.py)
hears of a change exactly when it becomes visible and drops what it had cached. SQLite has no
LISTEN/NOTIFY: nothing to do there, the storefront reads stock per request.
"""

from collections.abc import Sequence

from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Identical notifications of one transaction are folded into one by PostgreSQL, so a
    # reservation touching many rows of one variant still sends a single message.
    op.execute("""
        CREATE FUNCTION stock_item_notify() RETURNS trigger AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN
                PERFORM pg_notify('conveyor_stock', OLD.variant_id::text);
            END IF;
            IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE'
                                    AND NEW.variant_id IS DISTINCT FROM OLD.variant_id) THEN
                PERFORM pg_notify('conveyor_stock', NEW.variant_id::text);
            END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER stock_item_notify AFTER INSERT OR UPDATE OR DELETE ON stock_item
        FOR EACH ROW EXECUTE FUNCTION stock_item_notify()
    """)
    # TRUNCATE fires no row trigger; without this a listener would keep what it cached.
    op.execute("""
        CREATE FUNCTION stock_item_notify_truncate() RETURNS trigger AS $$
        BEGIN
            PERFORM pg_notify('conveyor_stock', '*');
            RETURN NULL;
        END $$ LANGUAGE plpgsql
    """)
    op.execute("""
        CREATE TRIGGER stock_item_notify_truncate AFTER TRUNCATE ON stock_item
        FOR EACH STATEMENT EXECUTE FUNCTION stock_item_notify_truncate()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS stock_item_notify_truncate ON stock_item")
    op.execute("DROP FUNCTION IF EXISTS stock_item_notify_truncate()")
    op.execute("DROP TRIGGER IF EXISTS stock_item_notify ON stock_item")
    op.execute("DROP FUNCTION IF EXISTS stock_item_notify()")
