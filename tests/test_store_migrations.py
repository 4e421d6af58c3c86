"""Alembic migrations: an old database upgrades with its rows intact; a newer one is refused."""

from __future__ import annotations

import math

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, text

from autopetl.store import StoreError, open_store
from autopetl.store._engine import make_engine, resolve_url
from autopetl.store._migrate import VERSION_TABLE, head_revision, upgrade_to
from autopetl.store.models import (
    TABLE_PREFIX,
    ArtifactModel,
    Base,
    EpochModel,
    SearchModel,
    TrialModel,
)


def test_first_revision_upgrades_to_head_with_rows_intact(db_url: str) -> None:
    engine = make_engine(resolve_url(db_url))
    upgrade_to(engine, "0001")
    with engine.begin() as conn:  # rows as an autopetl at revision 0001 wrote them
        conn.execute(
            insert(SearchModel).values(
                id=1,
                name="old",
                task="vtab/dsprites_loc",
                space_name="default",
                space={"lr": [1e-4, 1e-2]},
                space_sha256="0" * 64,
                backbone={"name": "vit"},
                options={},
                status="completed",
                code_version="0.0.1",
            )
        )
        conn.execute(
            insert(TrialModel).values(
                id=7,
                search_id=1,
                trial_key="t0",
                config={"lr": 1e-3},
                status="completed",
                val_acc=math.nan,
                tunable_params=1234,
                cost={},
                epochs_done=1,
                attempts=1,
            )
        )
        conn.execute(insert(EpochModel).values(trial_id=7, epoch=1, train_loss=math.inf))
        conn.execute(insert(ArtifactModel).values(trial_id=7, kind="weights", path="/w"))
        assert "size_bytes" not in {
            c["name"] for c in inspect(conn).get_columns("autopetl_artifacts")
        }
    engine.dispose()

    with open_store(db_url) as store:  # opening upgrades
        assert store.schema_state().current == head_revision() == "0005"
        [trial] = store.trials("old")
        assert (trial.trial_key, trial.tunable_params, trial.config) == ("t0", 1234, {"lr": 1e-3})
        assert math.isnan(trial.val_acc)  # type: ignore[arg-type]
        assert store.epochs("old", "t0")[0].train_loss == math.inf
        [artifact] = store.artifacts("old")
        assert (artifact.path, artifact.size_bytes) == ("/w", None)
        store.upsert_artifact("old", "t0", "weights", "/w", "ab" * 32, size_bytes=10)
        assert store.artifacts("old")[0].size_bytes == 10
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("autopetl_trials")}
        assert "ix_autopetl_trials_search_id_status" in indexes


def test_migrations_match_the_models(db_url: str) -> None:
    with open_store(db_url) as store, store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "include_name": lambda name, type_, _: (
                    type_ != "table" or name.startswith(TABLE_PREFIX)
                ),
            },
        )
        assert compare_metadata(context, Base.metadata) == []


def test_a_database_from_a_newer_autopetl_is_refused(db_url: str) -> None:
    with open_store(db_url) as store, store.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_future'"))
    with pytest.raises(StoreError, match="revision '9999_future', newer than this autopetl"):
        open_store(db_url)
    with pytest.raises(StoreError, match="newer"):
        open_store(db_url, upgrade=False)


def test_optuna_keeps_its_own_version_table(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store:
        store.optuna_storage()
        tables = set(inspect(store.engine).get_table_names())
    assert {"alembic_version", VERSION_TABLE, "trials", "autopetl_trials"} <= tables
