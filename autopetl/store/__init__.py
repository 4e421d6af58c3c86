"""autopetl's SQL store: searches, trials, per-epoch metrics, evaluations and artifacts.

One database URL (``--db`` / ``AUTOPETL_DB``, default a SQLite file; see :func:`default_db_path`)
holds autopetl's tables and Optuna's RDBStorage side by side. Open it with :func:`open_store`; a
fresh database is created and an older one upgraded on first use. See docs/STORE.md.
"""

from __future__ import annotations

from autopetl.store._engine import StoreError, default_db_path, resolve_url, safe_url
from autopetl.store._migrate import SchemaState
from autopetl.store.queries import hypervolume, non_dominated
from autopetl.store.records import (
    ArtifactRecord,
    EpochRecord,
    EvaluationRecord,
    SearchRecord,
    TrialRecord,
)
from autopetl.store.store import Store, database_exists, driver_id, open_store

__all__ = [
    "ArtifactRecord",
    "EpochRecord",
    "EvaluationRecord",
    "SchemaState",
    "SearchRecord",
    "Store",
    "StoreError",
    "TrialRecord",
    "database_exists",
    "default_db_path",
    "driver_id",
    "hypervolume",
    "non_dominated",
    "open_store",
    "resolve_url",
    "safe_url",
]
