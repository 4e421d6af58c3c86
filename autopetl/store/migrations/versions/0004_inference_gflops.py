"""Inference GFLOPs per image, an objective (autopetl/objectives.py); the never-filled training
``flops`` column dropped.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from autopetl.store._types import SafeFloat

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("autopetl_trials", sa.Column("inference_gflops", SafeFloat(), nullable=True))
    # No writer ever set it (training FLOPs were never counted). A plain DROP COLUMN (SQLite
    # 3.35+, PostgreSQL), not Alembic's batch rebuild: on SQLite that drops and re-creates the
    # table, and with foreign keys on, dropping it would cascade-delete every trial's epochs.
    op.execute("ALTER TABLE autopetl_trials DROP COLUMN flops")


def downgrade() -> None:
    op.add_column("autopetl_trials", sa.Column("flops", SafeFloat(), nullable=True))
    op.execute("ALTER TABLE autopetl_trials DROP COLUMN inference_gflops")
