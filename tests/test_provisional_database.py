"""A refused command leaves the disk as it found it: the SQLite file it created for nothing goes,
and a file that holds a search, or was there before, stays."""

from __future__ import annotations

import pytest

from autopetl.errors import ConfigError
from autopetl.store import open_store
from autopetl.store.provisional import provisional_database


def _refuse(url: str, *, write_search: bool) -> None:
    with pytest.raises(ConfigError), provisional_database(url):
        store = open_store(url)
        if write_search:
            store.upsert_search("s", "vtab/dsprites_loc", "default", {}, {}, status="running")
        store.close()
        raise ConfigError("refused")


def test_a_file_created_then_refused_is_removed(tmp_path):
    _refuse(f"sqlite:///{tmp_path / 'a.db'}", write_search=False)
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_holds_a_search_by_the_refusal_stays(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _refuse(url, write_search=True)
    assert [s.name for s in open_store(url).list_searches()] == ["s"]


def test_a_file_that_was_there_before_stays_even_empty(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    open_store(url).close()
    _refuse(url, write_search=False)
    assert (tmp_path / "a.db").is_file()


def test_a_bug_is_not_a_refusal_and_removes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with pytest.raises(ZeroDivisionError), provisional_database(url):
        open_store(url).close()
        _ = 1 / 0
    assert (tmp_path / "a.db").is_file()
