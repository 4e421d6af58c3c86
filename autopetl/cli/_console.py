"""The rich consoles the CLI prints to (results on stdout, progress and logs on stderr)."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
