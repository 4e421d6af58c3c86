"""Alembic, run programmatically: create a fresh database, upgrade an older one, refuse a newer one.

``autopetl.store.open_store`` calls :func:`ensure_schema` on every open, so users never run a
migration by hand (``autopetl db upgrade`` does the same explicitly). Concurrent first opens (eight
trial writers starting at once) are serialised: on SQLite by the ``BEGIN IMMEDIATE`` write lock the
migration runs under, on PostgreSQL by a transaction-scoped advisory lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text

from autopetl.store._engine import StoreError, safe_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "autopetl_alembic_version"  # Optuna owns "alembic_version" in the same database
# Any constant works; it only has to be the same for every autopetl process ("autopetl" in ASCII).
_PG_ADVISORY_LOCK_KEY = 0x6175746F70657471


@dataclass(frozen=True)
class SchemaState:
    """Where a database's schema stands relative to this code's migrations."""

    current: str | None  # None: autopetl's tables were never created here
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations folder has no revisions"
    return head


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _check_known(revision: str | None, engine: Engine) -> None:
    if revision is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError as exc:
        raise StoreError(
            f"database {safe_url(engine.url)!r} has autopetl schema revision {revision!r}, newer "
            f"than this autopetl knows (its newest is {head_revision()!r}); upgrade autopetl "
            "(pip install -U autopetl) or use another --db"
        ) from exc


def schema_state(engine: Engine) -> SchemaState:
    """The database's current revision and this code's head, without changing anything."""
    with engine.connect() as connection:
        current = current_revision(connection)
    _check_known(current, engine)
    return SchemaState(current=current, head=head_revision())


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ADVISORY_LOCK_KEY})
    # SQLite: the transaction began with BEGIN IMMEDIATE (execution option autopetl_write).


def ensure_schema(engine: Engine) -> SchemaState:
    """Bring autopetl's tables to this code's head revision; a no-op when already there.

    Raises:
        StoreError: The database was written by a newer autopetl (an unknown revision).
    """
    state = schema_state(engine)
    if state.up_to_date:
        return state
    with engine.connect() as connection:
        connection.execution_options(autopetl_write=True)
        with connection.begin():
            _lock(connection)
            # Re-read under the lock: another process may have migrated while we waited.
            current = current_revision(connection)
            _check_known(current, engine)
            if current != state.head:
                log.info("migrating %s from %s to %s", safe_url(engine.url), current, state.head)
                command.upgrade(alembic_config(connection), "head")
    return SchemaState(current=state.head, head=state.head)


def upgrade_to(engine: Engine, revision: str) -> None:
    """Upgrade to a given revision (tests build an old database with this)."""
    with engine.connect() as connection:
        connection.execution_options(autopetl_write=True)
        with connection.begin():
            _lock(connection)
            command.upgrade(alembic_config(connection), revision)
