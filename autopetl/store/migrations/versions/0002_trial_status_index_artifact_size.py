"""Index trials by (search, status) for Pareto queries; record artifact sizes.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_autopetl_trials_search_id_status", "autopetl_trials", ["search_id", "status"]
    )
    # A nullable column: ALTER TABLE ADD COLUMN works on SQLite without a table rebuild.
    op.add_column("autopetl_artifacts", sa.Column("size_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("autopetl_artifacts") as batch:
        batch.drop_column("size_bytes")
    op.drop_index("ix_autopetl_trials_search_id_status", table_name="autopetl_trials")
