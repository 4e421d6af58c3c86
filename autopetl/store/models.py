"""SQLAlchemy 2 models of autopetl's own tables (the optuna style: explicit names and constraints).

Every table is prefixed ``autopetl_`` because Optuna's RDBStorage lives in the same database and
already owns ``trials``, ``studies`` and ``alembic_version``. Identity is always a natural key with a
unique constraint (search name; search + trial key; trial + epoch; trial + seed + split; trial +
kind), which is what the idempotent upserts in :mod:`autopetl.store.store` conflict on.

The schema here is the head of the Alembic migrations in ``migrations/versions``; change both
together (a new revision per change, never an edit of an applied one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy import UniqueConstraint as Unique
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from autopetl.store._types import SafeFloat, SafeJSON, UTCDateTime, utcnow

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TABLE_PREFIX = "autopetl_"
TRIAL_STATUSES = ("running", "completed", "pruned", "failed")
TERMINAL_TRIAL_STATUSES = ("completed", "pruned", "failed")
SEARCH_STATUSES = ("running", "completed", "failed", "interrupted")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SearchModel(_Timestamps, Base):
    """One search (or one ``autopetl train`` run): what was searched, on what, and how it went."""

    __tablename__ = "autopetl_searches"
    __table_args__ = (Unique("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    task: Mapped[str] = mapped_column(String(255), index=True)
    space_name: Mapped[str] = mapped_column(String(255))
    space: Mapped[dict[str, Any]] = mapped_column(SafeJSON)  # the space as parsed
    space_text: Mapped[str | None] = mapped_column(Text)  # the YAML as written, when known
    space_sha256: Mapped[str] = mapped_column(String(64))  # of space_text, else canonical JSON
    backbone: Mapped[dict[str, Any]] = mapped_column(SafeJSON)
    weights_source: Mapped[str | None] = mapped_column(String(1024))
    budget: Mapped[int | None] = mapped_column(Integer)  # trials asked for
    options: Mapped[dict[str, Any]] = mapped_column(SafeJSON)
    status: Mapped[str] = mapped_column(String(16))
    code_version: Mapped[str] = mapped_column(String(64))
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The driver running the search and until when its lease holds (revision 0003).
    driver: Mapped[str | None] = mapped_column(String(255))
    driver_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TrialModel(_Timestamps, Base):
    """One configuration tried in a search: its config, outcome and cost."""

    __tablename__ = "autopetl_trials"
    __table_args__ = (
        Unique("search_id", "trial_key"),
        Index(None, "search_id", "status"),  # Pareto queries read completed trials (revision 0002)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(ForeignKey("autopetl_searches.id", ondelete="CASCADE"))
    trial_key: Mapped[str] = mapped_column(String(255))  # identity: Ray/Optuna trial id
    number: Mapped[int | None] = mapped_column(Integer)  # Optuna's trial number, when known
    method: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(SafeJSON)
    status: Mapped[str] = mapped_column(String(16))
    # The objective: validation accuracy after the last epoch trained.
    val_acc: Mapped[float | None] = mapped_column(SafeFloat)
    last_val_acc: Mapped[float | None] = mapped_column(SafeFloat)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    tunable_params: Mapped[int | None] = mapped_column(BigInteger)
    tunable_params_without_head: Mapped[int | None] = mapped_column(BigInteger)
    wall_time_s: Mapped[float | None] = mapped_column(SafeFloat)
    images_per_s: Mapped[float | None] = mapped_column(SafeFloat)
    peak_memory_mb: Mapped[float | None] = mapped_column(SafeFloat)
    # Objectives measured once per configuration (autopetl/objectives.py), a column each.
    inference_gflops: Mapped[float | None] = mapped_column(SafeFloat)  # revision 0004
    folded_gflops: Mapped[float | None] = mapped_column(SafeFloat)  # revision 0005
    cost: Mapped[dict[str, Any]] = mapped_column(SafeJSON)  # the full cost dict as reported
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EpochModel(_Timestamps, Base):
    """Per-epoch metrics of a trial; a replayed report overwrites its epoch's row."""

    __tablename__ = "autopetl_epochs"
    __table_args__ = (Unique("trial_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("autopetl_trials.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based
    train_loss: Mapped[float | None] = mapped_column(SafeFloat)
    val_acc: Mapped[float | None] = mapped_column(SafeFloat)
    lr: Mapped[float | None] = mapped_column(SafeFloat)
    seconds: Mapped[float | None] = mapped_column(SafeFloat)


class EvaluationModel(_Timestamps, Base):
    """A test-set evaluation of a trial's config, retrained or re-evaluated with one seed."""

    __tablename__ = "autopetl_evaluations"
    __table_args__ = (Unique("trial_id", "seed", "split"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("autopetl_trials.id", ondelete="CASCADE"))
    seed: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(32))
    test_acc: Mapped[float | None] = mapped_column(SafeFloat)
    metrics: Mapped[dict[str, Any]] = mapped_column(SafeJSON)


class ArtifactModel(_Timestamps, Base):
    """A file a trial produced (tunable weights, its config): one per kind."""

    __tablename__ = "autopetl_artifacts"
    __table_args__ = (Unique("trial_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("autopetl_trials.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))  # e.g. "weights", "config"
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)  # revision 0002
