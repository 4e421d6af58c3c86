"""Initial schema: searches, trials, epochs, evaluations, artifacts.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Column types are the store's own (autopetl.store._types), so NaN/inf handling is the same in a
database created by this migration as in the models. Never edit this file once released: add a
revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from autopetl.store._types import SafeFloat, SafeJSON, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "autopetl_searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("space_name", sa.String(255), nullable=False),
        sa.Column("space", SafeJSON(), nullable=False),
        sa.Column("space_text", sa.Text(), nullable=True),
        sa.Column("space_sha256", sa.String(64), nullable=False),
        sa.Column("backbone", SafeJSON(), nullable=False),
        sa.Column("weights_source", sa.String(1024), nullable=True),
        sa.Column("budget", sa.Integer(), nullable=True),
        sa.Column("options", SafeJSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_autopetl_searches"),
        sa.UniqueConstraint("name", name="uq_autopetl_searches_name"),
    )
    op.create_index("ix_autopetl_searches_task", "autopetl_searches", ["task"])
    op.create_table(
        "autopetl_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("trial_key", sa.String(255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("method", sa.String(64), nullable=True),
        sa.Column("config", SafeJSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("val_acc", SafeFloat(), nullable=True),
        sa.Column("last_val_acc", SafeFloat(), nullable=True),
        sa.Column("best_epoch", sa.Integer(), nullable=True),
        sa.Column("tunable_params", sa.BigInteger(), nullable=True),
        sa.Column("tunable_params_without_head", sa.BigInteger(), nullable=True),
        sa.Column("wall_time_s", SafeFloat(), nullable=True),
        sa.Column("images_per_s", SafeFloat(), nullable=True),
        sa.Column("peak_memory_mb", SafeFloat(), nullable=True),
        sa.Column("flops", SafeFloat(), nullable=True),
        sa.Column("cost", SafeJSON(), nullable=False),
        sa.Column("epochs_done", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_autopetl_trials"),
        sa.UniqueConstraint(
            "search_id", "trial_key", name="uq_autopetl_trials_search_id_trial_key"
        ),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["autopetl_searches.id"],
            name="fk_autopetl_trials_search_id_autopetl_searches",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "autopetl_epochs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", SafeFloat(), nullable=True),
        sa.Column("val_acc", SafeFloat(), nullable=True),
        sa.Column("lr", SafeFloat(), nullable=True),
        sa.Column("seconds", SafeFloat(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_autopetl_epochs"),
        sa.UniqueConstraint("trial_id", "epoch", name="uq_autopetl_epochs_trial_id_epoch"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["autopetl_trials.id"],
            name="fk_autopetl_epochs_trial_id_autopetl_trials",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "autopetl_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("test_acc", SafeFloat(), nullable=True),
        sa.Column("metrics", SafeJSON(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_autopetl_evaluations"),
        sa.UniqueConstraint(
            "trial_id", "seed", "split", name="uq_autopetl_evaluations_trial_id_seed_split"
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["autopetl_trials.id"],
            name="fk_autopetl_evaluations_trial_id_autopetl_trials",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "autopetl_artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_autopetl_artifacts"),
        sa.UniqueConstraint("trial_id", "kind", name="uq_autopetl_artifacts_trial_id_kind"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["autopetl_trials.id"],
            name="fk_autopetl_artifacts_trial_id_autopetl_trials",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    for table in (
        "autopetl_artifacts",
        "autopetl_evaluations",
        "autopetl_epochs",
        "autopetl_trials",
    ):
        op.drop_table(table)
    op.drop_index("ix_autopetl_searches_task", table_name="autopetl_searches")
    op.drop_table("autopetl_searches")
