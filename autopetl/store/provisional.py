"""A refused command leaves the disk as it found it: the SQLite file it created goes again.

``search`` and ``train`` open (and so create) their database before the checks that need it or
that come late (a dataset that is not there, a trial no Ray node can place, a checkpoint of
another model). When such a check refuses the command, the file it created a moment earlier
holds nothing of the user's; :func:`provisional_database` removes it. A database that was there
before, or one that holds a search by then, is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from autopetl.errors import AutopetlError
from autopetl.store._engine import resolve_url
from autopetl.store.store import database_exists, open_store


@contextlib.contextmanager
def provisional_database(url: str | None) -> Iterator[None]:
    """Remove the SQLite file at ``url`` if this block created it and then refused (raised an
    :class:`AutopetlError`) before writing a search to it."""
    resolved = resolve_url(url)
    created_here = resolved.get_backend_name() == "sqlite" and not database_exists(resolved)
    try:
        yield
    except AutopetlError:
        if created_here:
            _remove_if_empty(Path(resolved.database or ""), resolved.render_as_string(False))
        raise


def _remove_if_empty(path: Path, url: str) -> None:
    if not path.is_file():
        return
    try:
        store = open_store(url, upgrade=False)
    except AutopetlError:
        return  # not a database of ours: not ours to remove either
    try:
        if store.list_searches():
            return
    finally:
        store.close()
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
