"""The rich consoles the CLI prints to (results on stdout, progress and logs on stderr).

In a terminal rich fits its output to the window. Elsewhere (a log file, ``| tee``, CI) it would
assume 80 columns and cut table cells and wrap lines; there nothing is cut or wrapped, and
:func:`interactive` tells commands to print one line per step instead of live displays.
"""

from __future__ import annotations

from rich.console import Console


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    return Console(stderr=stderr, width=10_000, soft_wrap=True)


console = _console(stderr=False)
err_console = _console(stderr=True)


def interactive() -> bool:
    """Whether progress goes to a terminal (live tables, bars) or to a log (one line per step)."""
    return err_console.is_terminal
