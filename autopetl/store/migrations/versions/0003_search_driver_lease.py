"""A lease on each search for the one driver that runs it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from autopetl.store._types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: ALTER TABLE ADD COLUMN works on SQLite without a table rebuild.
    op.add_column("autopetl_searches", sa.Column("driver", sa.String(255), nullable=True))
    op.add_column("autopetl_searches", sa.Column("driver_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("autopetl_searches") as batch:
        batch.drop_column("driver_until")
        batch.drop_column("driver")
