"""Alembic environment for autopetl's tables, run programmatically (see autopetl/store/_migrate.py).

The caller passes an open connection in ``config.attributes["connection"]``; the version table is
``autopetl_alembic_version`` so it never collides with Optuna's ``alembic_version`` in the same
database, and autogenerate only ever looks at ``autopetl_`` tables.
"""

from __future__ import annotations

from alembic import context

from autopetl.store.models import TABLE_PREFIX, Base

VERSION_TABLE = "autopetl_alembic_version"


def _include_name(name, type_, parent_names) -> bool:  # type: ignore[no-untyped-def]
    # Optuna's tables share the database: leave them out of autogenerate's comparisons.
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX)
    return True


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("autopetl migrations run through autopetl.store (autopetl db upgrade)")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
