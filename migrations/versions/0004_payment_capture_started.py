"""payment capture started

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 17:17:17.836250
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import models.base


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('payment', sa.Column('capture_started_at', models.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('payment') as batch:
        batch.drop_column('capture_started_at')
