"""`autopetl dashboard` on a database that is not there yet: a note that says so, and the page
starts anyway (it waits for the first search), never an empty database file left behind."""

from __future__ import annotations

import os
import socket

import pytest

from autopetl.cli import main


class _Exec(Exception):
    pass


def test_a_database_not_there_yet_is_a_note_and_no_file(tmp_path, capsys, monkeypatch):
    seen = {}

    def execve(path, argv, env):  # where the command would become Streamlit
        seen.update(path=path, db=env["AUTOPETL_DB"])
        raise _Exec

    monkeypatch.setattr(os, "execve", execve)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "later.db"
    with pytest.raises(_Exec):
        main(["dashboard", "--db", f"sqlite:///{db}", "--port", str(port)])
    err = capsys.readouterr().err
    assert f"no database at {db} yet" in err and "search` or" in err, err
    assert seen["db"].endswith("later.db") and not db.exists()
