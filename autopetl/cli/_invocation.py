"""The ``autopetl`` command as the user can type it from where they stand.

README's commands install autopetl into ``.venv`` without activating it, so ``autopetl`` is often
not on the PATH, and a printed ``autopetl trials ...`` would answer "command not found". The next
commands a command prints name the script that is running instead (``.venv/bin/autopetl``),
unless ``autopetl`` on the PATH is that very script.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import sys
from pathlib import Path


@functools.cache
def command_name() -> str:
    """``autopetl`` when that runs this installation, else the path of its script (relative to
    the working directory when under it), else ``PYTHON -m autopetl``."""
    script = Path(sys.executable).parent / "autopetl"  # where pip put it, beside this Python
    on_path = shutil.which("autopetl")
    if not script.is_file():
        return f"{_shown(Path(sys.executable))} -m autopetl"
    if on_path and Path(on_path).resolve() == script.resolve():
        return "autopetl"
    return _shown(script)


def _shown(path: Path) -> str:
    absolute = path if path.is_absolute() else Path.cwd() / path
    try:
        text = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        text = str(absolute)
    return shlex.quote(text)


def command(args: str) -> str:
    """``autopetl ARGS`` in the runnable form: ``command("trials --search s")``."""
    return f"{command_name()} {args}"


_QUOTED = re.compile(r"`autopetl ")


def runnable(text: str) -> str:
    """``text`` with each `` `autopetl ...` `` it quotes in the runnable form (error messages
    name the command that fixes them)."""
    name = command_name()
    return text if name == "autopetl" else _QUOTED.sub(lambda _: f"`{name} ", text)
