"""Where the database is and how to connect to it: URL resolution, engines, clear errors.

The URL comes from ``--db``, else ``AUTOPETL_DB``, else a SQLite file at
``$AUTOPETL_HOME/autopetl.db`` when ``AUTOPETL_HOME`` is set, else
``$XDG_DATA_HOME/autopetl/autopetl.db`` (``~/.local/share/autopetl/autopetl.db``).
A plain path is read as a SQLite file; ``postgresql://`` and ``postgres://`` mean the installed
psycopg 3 driver (``postgresql+psycopg://``). Passwords never reach a message or a log line.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from autopetl.errors import AutopetlError

log = logging.getLogger(__name__)

# Seconds a SQLite writer waits for the lock before "database is locked" (the default is 5 s; a
# search's writers are few and their transactions short, so waiting is always the right call).
SQLITE_BUSY_TIMEOUT_S = 60
# Seconds to wait for a PostgreSQL server before giving up with a clear message.
PG_CONNECT_TIMEOUT_S = 5
URL_HELP = "use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DBNAME"


class StoreError(AutopetlError):
    """The database cannot be used: bad URL, unreachable server, or a schema this code can't read."""


def default_db_path() -> Path:
    """The default SQLite file (see the module docstring for the order of precedence)."""
    home = os.environ.get("AUTOPETL_HOME")
    if home:
        return Path(home).expanduser() / "autopetl.db"
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data).expanduser() / "autopetl" / "autopetl.db"


def hide_password(text: str) -> str:
    """``text`` (a URL, parsable or not) with any ``user:password@`` password masked."""
    return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", text)


def safe_url(url: URL | str) -> str:
    """A URL as it may be printed or logged: the password replaced by ``***``."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    return hide_password(url)


def resolve_url(url: str | URL | None = None) -> URL:
    """The database URL to use: ``url``, else ``AUTOPETL_DB``, else the default SQLite file.

    Raises:
        StoreError: The URL cannot be parsed or names a database kind autopetl does not support.
    """
    if isinstance(url, URL):
        return url
    raw = url or os.environ.get("AUTOPETL_DB")
    if not raw:
        path = default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite", database=str(path))
    raw = raw.strip()
    if "://" not in raw:  # a plain path: a SQLite file
        return URL.create("sqlite", database=str(Path(raw).expanduser().resolve()))
    try:
        parsed = make_url(raw)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"cannot read database URL {hide_password(raw)!r}; {URL_HELP}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {backend!r} in {safe_url(parsed)!r}; {URL_HELP}")
    if backend == "postgresql" and parsed.get_driver_name() != "psycopg":
        raise StoreError(
            f"driver {parsed.get_driver_name()!r} in {safe_url(parsed)!r} is not installed; "
            "use postgresql+psycopg://"
        )
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StoreError(
            f"{safe_url(parsed)!r} is an in-memory SQLite database, which every process (and "
            "every connection) sees empty; use sqlite:///PATH to a file"
        )
    return parsed


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself: pysqlite's legacy mode would run DDL
    # (migrations) outside any transaction and begins reads lazily. See the SQLAlchemy docs,
    # "Transactions with SQLite and the sqlite3 driver".
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
    _switch_to_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")  # durable in WAL except on power loss
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode, which lets readers (the dashboard) run while one writer commits.

    The mode is persistent per file, so only a new file's first connections switch it. SQLite
    fails that switch at once with "database is locked", ignoring the busy timeout, while a
    sibling connection holds the lock for its own switch (eight trial writers opening a new
    database together hit it about one time in five), so the switch is retried here until the
    same timeout a writer would wait.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    if mode.lower() != "wal":  # a file system without shared memory (some network mounts)
        log.warning("SQLite keeps journal mode %r here; readers will wait for writers", mode)


def sqlite_no_fsync_per_commit(dbapi_connection: Any, _record: Any) -> None:
    """For engines autopetl does not own (Optuna's): WAL commits without an fsync each.

    ``synchronous`` is per connection, so WAL mode (set on the file by autopetl's engine) alone
    still syncs at every commit; NORMAL is durable in WAL except on power loss. Nothing else of
    :func:`_sqlite_on_connect` applies: those engines manage their own transactions.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE) so the busy timeout applies: a
    # deferred transaction that reads and then writes fails at once with "database is locked"
    # when another process committed in between, and no timeout helps.
    mode = "IMMEDIATE" if conn.get_execution_options().get("autopetl_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def sqlite_engine_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` on SQLite (also given to Optuna's RDBStorage)."""
    return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}


def postgres_engine_kwargs(url: URL) -> dict[str, Any]:
    """Keyword arguments for ``create_engine`` on PostgreSQL: a short connect timeout."""
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    return {"connect_args": connect_args, "pool_pre_ping": True}


def make_engine(url: URL) -> Engine:
    """An engine for ``url`` with autopetl's settings (see the module and function comments)."""
    try:
        if url.get_backend_name() == "sqlite":
            engine = create_engine(url, **sqlite_engine_kwargs())
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        else:
            engine = create_engine(url, **postgres_engine_kwargs(url))
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"cannot use database {safe_url(url)!r}: {exc}; {URL_HELP}") from exc
    log.debug("database %s", safe_url(url))
    return engine


def describe_connect_error(url: URL, exc: BaseException) -> StoreError:
    """One clear line for a failed connection, without the password or a traceback's noise."""
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split()) or type(orig).__name__
    detail = hide_password(detail)
    if url.get_backend_name() == "sqlite":
        hint = "check the folder exists and is writable"
    else:
        hint = "check the server is running and reachable, and the user, password and database"
    return StoreError(f"cannot open database {safe_url(url)!r}: {detail} ({hint})")
