"""Folded inference GFLOPs per image, an objective (autopetl/objectives.py): what a one-task
deployment costs once LoRA's, DoRA's, SSF's or FacT's increments are merged into the frozen
weights.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from autopetl.store._types import SafeFloat

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("autopetl_trials", sa.Column("folded_gflops", SafeFloat(), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+, PostgreSQL), not a batch rebuild: see revision 0004.
    op.execute("ALTER TABLE autopetl_trials DROP COLUMN folded_gflops")
