"""The commands autopetl prints can be run as printed, from where the user stands, whether or
not the venv is activated (README's commands install into .venv without activating it)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from autopetl.cli import _invocation


@pytest.fixture
def venv(tmp_path, monkeypatch):
    """A fake venv: bin/python and bin/autopetl; the working directory is its parent."""
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _invocation.command_name.cache_clear()
    yield bin_dir
    _invocation.command_name.cache_clear()


def _script(bin_dir: Path) -> None:
    script = bin_dir / "autopetl"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)


def test_a_venv_that_is_not_activated_is_named_by_its_path(venv):
    _script(venv)
    assert _invocation.command("trials --search s") == ".venv/bin/autopetl trials --search s"
    assert _invocation.runnable("run `autopetl searches` first") == (
        "run `.venv/bin/autopetl searches` first"
    )


def test_an_activated_venv_is_plain_autopetl(venv, monkeypatch):
    _script(venv)
    monkeypatch.setenv("PATH", f"{venv}:/usr/bin:/bin")
    assert _invocation.command("dashboard") == "autopetl dashboard"
    assert (
        _invocation.runnable("`autopetl searches` lists them") == "`autopetl searches` lists them"
    )


def test_another_autopetl_on_the_path_is_not_taken_for_this_one(venv, tmp_path, monkeypatch):
    _script(venv)
    other = tmp_path / "other"
    other.mkdir()
    _script(other)
    monkeypatch.setenv("PATH", f"{other}:/usr/bin:/bin")
    assert _invocation.command_name() == ".venv/bin/autopetl"


def test_outside_the_working_directory_the_path_is_absolute_and_quoted(tmp_path, monkeypatch):
    bin_dir = tmp_path / "my venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text("")
    _script(bin_dir)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    _invocation.command_name.cache_clear()
    try:
        assert _invocation.command_name() == shlex.quote(str(bin_dir / "autopetl"))
    finally:
        _invocation.command_name.cache_clear()


def test_without_the_script_it_is_python_dash_m(venv):
    assert _invocation.command_name() == ".venv/bin/python -m autopetl"


def test_the_printed_fix_runs_as_printed_with_the_venv_not_activated(tmp_path):
    script = Path(sys.executable).parent / "autopetl"
    if not script.is_file():
        pytest.skip("autopetl is not installed beside this Python")
    from autopetl.store import open_store

    url = f"sqlite:///{tmp_path / 'a.db'}"
    open_store(url).close()
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # what a fresh shell has: no .venv/bin
    out = subprocess.run(
        [str(script), "serve", "--search", "nosuch", "--db", url],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    printed = re.search(r"`([^`]*autopetl searches)`", out.stderr)
    assert printed and printed.group(1) != "autopetl searches", out.stderr
    again = subprocess.run(
        f"{printed.group(1)} --db '{url}'", shell=True, capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
