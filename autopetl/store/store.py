"""The :class:`Store` facade: idempotent writes and plain-record reads of autopetl's tables.

Every write is one short transaction and an ``INSERT ... ON CONFLICT DO UPDATE`` keyed on the row's
natural identity (search name; search + trial key; trial + epoch; ...), so an event delivered twice
(Ray delivers at least once) leaves exactly the rows one delivery would. Arguments left as ``None``
leave the stored value unchanged, so partial events (a trial starting, then finishing) compose.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from autopetl.objectives import MEASURES
from autopetl.store._engine import (
    StoreError,
    describe_connect_error,
    make_engine,
    postgres_engine_kwargs,
    resolve_url,
    safe_url,
    sqlite_engine_kwargs,
    sqlite_no_fsync_per_commit,
)
from autopetl.store._migrate import SchemaState, ensure_schema, schema_state
from autopetl.store._reads import StoreReads, check_choice, find_search_id
from autopetl.store._types import to_json_safe, utcnow
from autopetl.store.models import (
    SEARCH_STATUSES,
    TERMINAL_TRIAL_STATUSES,
    TRIAL_STATUSES,
    ArtifactModel,
    EpochModel,
    EvaluationModel,
    SearchModel,
    TrialModel,
)

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# Keys of a trial's cost dict that also get their own columns (the rest stay in the JSON only).
COST_COLUMNS = ("wall_time_s", "images_per_s", "peak_memory_mb")


def _code_version() -> str:
    try:
        return metadata.version("autopetl")
    except metadata.PackageNotFoundError:
        return "unknown"


class Store(StoreReads):
    """autopetl's tables in one database (SQLite or PostgreSQL); open it with :func:`open_store`.

    Thread- and process-safe: each call runs in its own short transaction, and SQLite writers take
    the write lock up front and wait for it (busy timeout) instead of failing.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- housekeeping -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return safe_url(self._engine.url)

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_state(self) -> SchemaState:
        return schema_state(self._engine)

    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's RDBStorage on this same database (its tables sit beside autopetl's)."""
        import optuna

        url = self._engine.url
        is_sqlite = url.get_backend_name() == "sqlite"
        kwargs = sqlite_engine_kwargs() if is_sqlite else postgres_engine_kwargs(url)
        storage = optuna.storages.RDBStorage(
            url.render_as_string(hide_password=False), engine_kwargs=kwargs
        )
        if is_sqlite:
            # Connections Optuna opened while checking its schema are dropped, so that every
            # connection of its pool gets the setting.
            event.listen(storage.engine, "connect", sqlite_no_fsync_per_commit)
            storage.engine.dispose()
        return storage

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(autopetl_write=True)  # SQLite: BEGIN IMMEDIATE
            with conn.begin():
                yield conn

    @staticmethod
    def _insert(conn: Connection, model: type) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return dialect.insert(model)

    def _trial_id(self, conn: Connection, search_name: str, trial_key: str) -> int:
        """The trial's id, creating a placeholder (status running) when an event comes first."""
        search_id = find_search_id(conn, search_name)
        stmt = self._insert(conn, TrialModel).values(
            search_id=search_id, trial_key=trial_key, config={}, cost={}, status="running"
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["search_id", "trial_key"]))
        where = (TrialModel.search_id == search_id) & (TrialModel.trial_key == trial_key)
        return conn.scalar(select(TrialModel.id).where(where))  # type: ignore[return-value]

    # -- writes -----------------------------------------------------------------------------
    def upsert_search(
        self,
        name: str,
        task: str,
        space_name: str,
        space: Mapping[str, Any],
        backbone: Mapping[str, Any],
        budget: int | None = None,
        options: Mapping[str, Any] | None = None,
        status: str = "running",
        *,
        space_text: str | None = None,
        weights_source: str | None = None,
        code_version: str | None = None,
        create_only: bool = False,
    ) -> int:
        """Create or update the search ``name`` and return its id.

        With ``create_only`` the name is claimed atomically: if a search of that name exists
        (or another process creates one at the same moment), StoreError and nothing is changed.

        ``space_sha256`` is the SHA-256 of ``space_text`` (the YAML as written) when given, else of
        the space's canonical JSON; a driver resuming a search can compare it to refuse a changed
        space. ``weights_source`` defaults to ``backbone["weights"]``.
        """
        check_choice(status, SEARCH_STATUSES, "search status")
        canonical = json.dumps(to_json_safe(dict(space)), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256((space_text or canonical).encode()).hexdigest()
        now = utcnow()
        values = {
            "name": name,
            "task": task,
            "space_name": space_name,
            "space": dict(space),
            "space_text": space_text,
            "space_sha256": digest,
            "backbone": dict(backbone),
            "weights_source": weights_source or backbone.get("weights"),
            "budget": budget,
            "options": dict(options or {}),
            "status": status,
            "code_version": code_version or _code_version(),
            "finished_at": None if status == "running" else now,
            "created_at": now,
            "updated_at": now,
        }
        with self._write() as conn:
            stmt = self._insert(conn, SearchModel).values(**values)
            if create_only:
                # One statement: of two writers claiming one name, exactly one gets a row back.
                claimed = conn.scalar(
                    stmt.on_conflict_do_nothing(index_elements=["name"]).returning(SearchModel.id)
                )
                if claimed is None:
                    raise StoreError(f"a search named {name!r} already exists; pick another name")
                return int(claimed)
            set_ = {k: stmt.excluded[k] for k in values if k not in ("name", "created_at")}
            if status != "running":  # a replayed "finished" keeps the first finish time
                set_["finished_at"] = func.coalesce(SearchModel.finished_at, now)
            stmt = stmt.on_conflict_do_update(index_elements=["name"], set_=set_)
            return conn.scalar(stmt.returning(SearchModel.id))  # type: ignore[return-value]

    def take_driver_lease(
        self, name: str, driver: str, ttl_s: float
    ) -> tuple[str, datetime] | None:
        """Take (or renew) the lease of the one driver that runs the search ``name``.

        One UPDATE that succeeds only where no other driver holds a live lease, so of two
        drivers starting one search, one gets it. A lease lapses ``ttl_s`` after its last
        renewal; a holder on this machine whose process is gone is taken over at once.

        Returns:
            None when ``driver`` holds the lease now, else (holder, until) of the other driver.
        """
        now = utcnow()
        until = now + timedelta(seconds=ttl_s)
        with self._write() as conn:
            find_search_id(conn, name)
            current = conn.execute(
                select(SearchModel.driver, SearchModel.driver_until).where(SearchModel.name == name)
            ).one()
            free = (
                SearchModel.driver.is_(None)
                | (SearchModel.driver == driver)
                | (SearchModel.driver_until < now)
            )
            if current.driver and current.driver != driver and _holder_is_dead(current.driver):
                free = free | (SearchModel.driver == current.driver)
            taken = conn.execute(
                update(SearchModel)
                .where(SearchModel.name == name, free)
                .values(driver=driver, driver_until=until)
            ).rowcount
        if taken == 1:
            return None
        return str(current.driver), current.driver_until

    def release_driver_lease(self, name: str, driver: str) -> None:
        """Give the lease back (only if ``driver`` still holds it)."""
        with self._write() as conn:
            conn.execute(
                update(SearchModel)
                .where(SearchModel.name == name, SearchModel.driver == driver)
                .values(driver=None, driver_until=None)
            )

    def set_search_status(self, name: str, status: str) -> None:
        """Set a search's status (``finished_at`` is set on the first non-running status)."""
        check_choice(status, SEARCH_STATUSES, "search status")
        now = utcnow()
        finished = None if status == "running" else func.coalesce(SearchModel.finished_at, now)
        with self._write() as conn:
            find_search_id(conn, name)
            conn.execute(
                update(SearchModel)
                .where(SearchModel.name == name)
                .values(status=status, updated_at=now, finished_at=finished)
            )

    def upsert_trial(
        self,
        search_name: str,
        trial_key: str,
        *,
        number: int | None = None,
        method: str | None = None,
        config: Mapping[str, Any] | None = None,
        status: str | None = None,
        val_acc: float | None = None,
        last_val_acc: float | None = None,
        best_epoch: int | None = None,
        tunable_params: int | None = None,
        tunable_params_without_head: int | None = None,
        measures: Mapping[str, float | None] | None = None,
        cost: Mapping[str, Any] | None = None,
        epochs_done: int | None = None,
        error: str | None = None,
        attempts: int | None = None,
    ) -> int:
        """Create or update a trial of a search and return its id.

        ``status`` is one of running, completed, pruned, failed (a new trial defaults to running).
        ``measures`` are objectives measured once per configuration (``inference_gflops``: see
        autopetl/objectives.py), each in its column; other keys are refused.
        ``cost`` keys ``wall_time_s``, ``images_per_s`` and ``peak_memory_mb`` are also
        stored in columns of their own; the whole dict is kept as JSON. ``None`` keeps what is
        stored; ``finished_at`` is set when the trial first reaches a terminal status.
        """
        check_choice(status, TRIAL_STATUSES, "trial status")
        given: dict[str, Any] = {
            "number": number,
            "method": method,
            "config": None if config is None else dict(config),
            "status": status,
            "val_acc": val_acc,
            "last_val_acc": last_val_acc,
            "best_epoch": best_epoch,
            "tunable_params": tunable_params,
            "tunable_params_without_head": tunable_params_without_head,
            "cost": None if cost is None else dict(cost),
            "epochs_done": epochs_done,
            "error": error,
            "attempts": attempts,
        }
        if cost is not None:
            given.update({k: cost[k] for k in COST_COLUMNS if cost.get(k) is not None})
        if measures:
            unknown = sorted(set(measures) - set(MEASURES))
            if unknown:
                raise StoreError(f"unknown measure {unknown[0]!r}; the store keeps {MEASURES}")
            given.update(measures)
        given = {k: v for k, v in given.items() if v is not None}
        now = utcnow()
        terminal = status in TERMINAL_TRIAL_STATUSES
        with self._write() as conn:
            search_id = find_search_id(conn, search_name)
            values = {"config": {}, "cost": {}, "status": "running", **given}
            values |= {"search_id": search_id, "trial_key": trial_key, "updated_at": now}
            values["finished_at"] = now if terminal else None
            stmt = self._insert(conn, TrialModel).values(created_at=now, **values)
            set_: dict[str, Any] = {k: stmt.excluded[k] for k in (*given, "updated_at")}
            if status is not None:
                set_["finished_at"] = (
                    func.coalesce(TrialModel.finished_at, now) if terminal else None
                )
            stmt = stmt.on_conflict_do_update(index_elements=["search_id", "trial_key"], set_=set_)
            return conn.scalar(stmt.returning(TrialModel.id))  # type: ignore[return-value]

    def upsert_epoch(
        self,
        search_name: str,
        trial_key: str,
        epoch: int,
        train_loss: float | None = None,
        val_acc: float | None = None,
        lr: float | None = None,
        seconds: float | None = None,
    ) -> None:
        """Record one epoch's metrics (1-based ``epoch``); raises the trial's ``epochs_done``."""
        values = {"train_loss": train_loss, "val_acc": val_acc, "lr": lr, "seconds": seconds}
        now = utcnow()
        with self._write() as conn:
            trial_id = self._trial_id(conn, search_name, trial_key)
            stmt = self._insert(conn, EpochModel).values(
                trial_id=trial_id, epoch=epoch, created_at=now, updated_at=now, **values
            )
            set_ = {k: stmt.excluded[k] for k in (*values, "updated_at")}
            conn.execute(
                stmt.on_conflict_do_update(index_elements=["trial_id", "epoch"], set_=set_)
            )
            conn.execute(
                update(TrialModel)
                .where((TrialModel.id == trial_id) & (TrialModel.epochs_done < epoch))
                .values(epochs_done=epoch, updated_at=now)
            )

    def upsert_evaluation(
        self,
        search_name: str,
        trial_key: str,
        *,
        seed: int,
        split: str,
        test_acc: float | None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a trial config's accuracy on ``split`` (e.g. ``test``) with one ``seed``."""
        now = utcnow()
        with self._write() as conn:
            trial_id = self._trial_id(conn, search_name, trial_key)
            stmt = self._insert(conn, EvaluationModel).values(
                trial_id=trial_id,
                seed=seed,
                split=split,
                test_acc=test_acc,
                metrics=dict(metrics or {}),
                created_at=now,
                updated_at=now,
            )
            set_ = {k: stmt.excluded[k] for k in ("test_acc", "metrics", "updated_at")}
            keys = ["trial_id", "seed", "split"]
            conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=set_))

    def upsert_artifact(
        self,
        search_name: str,
        trial_key: str,
        kind: str,
        path: str,
        sha256: str | None = None,
        size_bytes: int | None = None,
    ) -> None:
        """Record the file of ``kind`` (e.g. ``weights``) a trial wrote; one row per kind."""
        now = utcnow()
        values = {"path": str(path), "sha256": sha256, "size_bytes": size_bytes}
        with self._write() as conn:
            trial_id = self._trial_id(conn, search_name, trial_key)
            stmt = self._insert(conn, ArtifactModel).values(
                trial_id=trial_id, kind=kind, created_at=now, updated_at=now, **values
            )
            set_ = {k: stmt.excluded[k] for k in (*values, "updated_at")}
            conn.execute(stmt.on_conflict_do_update(index_elements=["trial_id", "kind"], set_=set_))


def database_exists(url: str | URL | None = None) -> bool:
    """False only for a SQLite file that is not there (a server's database is assumed to be)."""
    resolved = resolve_url(url)
    return resolved.get_backend_name() != "sqlite" or Path(resolved.database or "").is_file()


def open_store(url: str | None = None, *, upgrade: bool = True, create: bool = True) -> Store:
    """Open (and create or upgrade, unless ``upgrade=False``) the database at ``url``.

    ``url`` defaults to ``AUTOPETL_DB``, then the default SQLite file (see
    :func:`autopetl.store.default_db_path`). Commands that only read pass ``create=False``: a
    SQLite file that does not exist is then an error, not a new, empty database (a typo in
    ``--db`` would otherwise list nothing, and leave a stray file behind).

    Raises:
        StoreError: A bad URL, an unreachable server, a database from a newer autopetl, or (with
            ``create=False``) no SQLite file at the path.
    """
    resolved = resolve_url(url)
    if not create and not database_exists(resolved):
        raise StoreError(
            f"no autopetl database at {resolved.database}: `autopetl search` and `autopetl "
            "train` create one; pass --db with the path or URL of an existing one (or set "
            "AUTOPETL_DB)"
        )
    engine = make_engine(resolved)
    try:
        if upgrade:
            ensure_schema(engine)
        else:
            schema_state(engine)
    except StoreError:
        engine.dispose()
        raise
    except DBAPIError as exc:
        engine.dispose()
        raise describe_connect_error(resolved, exc) from exc
    return Store(engine)


def driver_id() -> str:
    """This process as a lease holder: ``host:pid:random`` (the host and pid tell a dead holder)."""
    import os
    import secrets
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` ran on this machine and its process is gone (SIGKILLed, crashed)."""
    import os
    import socket

    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's driver: only its lease's expiry tells
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
