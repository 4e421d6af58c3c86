"""The rich consoles the CLI prints to (results on stdout, progress and logs on stderr).

Markup is off: names and paths users give ("[/]", "a[b]") are printed as they are, never read
as rich styles (a search named ``[/]`` once made ``searches`` crash for the whole database).
Styles are set with ``Text``/``style=`` instead, and :func:`status` gives a spinner whose text
is not parsed either.

In a terminal rich fits its output to the window. Elsewhere (a log file, ``| tee``, CI) it would
assume 80 columns and cut table cells and wrap lines; there nothing is cut or wrapped, and
:func:`interactive` tells commands to print one line per step instead of live displays.
"""

from __future__ import annotations

from rich.console import Console
from rich.status import Status
from rich.text import Text


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr, markup=False)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=10_000, soft_wrap=True, markup=False)


console = _console(stderr=False)
err_console = _console(stderr=True)


def status(text: str) -> Status:
    """A spinner on stderr; its text is plain (rich's own ``Console.status`` parses markup)."""
    return err_console.status(Text(text))


def interactive() -> bool:
    """Whether progress goes to a terminal (live tables, bars) or to a log (one line per step)."""
    return err_console.is_terminal
