"""The ``autopetl`` command: one entry point, one module per group of subcommands.

Each command module exposes ``register(subparsers)``, which adds its parsers and sets ``func``.
Errors a user can cause (:class:`autopetl.errors.AutopetlError`) are printed as one line with the
fix and exit with status 2; nothing else is caught, so bugs keep their tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from autopetl.errors import AutopetlError

# Command modules, in the order their commands are listed by --help.
COMMAND_MODULES = (
    "tasks_cmd",
    "train_cmd",
    "search_cmd",
    "evaluate_cmd",
    "report_cmd",
    "serve_cmd",
    "dashboard_cmd",
    "store_cmd",
)


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake in one line: the error and where the options are listed (the
    whole usage block, 15 lines for `search`, buried the one that mattered)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autopetl",
        description="Find the best parameter-efficient way to adapt a frozen ViT to a task.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _setup_logging(verbose: bool) -> None:
    from autopetl.cli._console import err_console, interactive

    if interactive():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(
            console=err_console, show_time=False, show_path=False
        )
        fmt = "%(message)s"
    else:  # a log file: plain lines with their level, never padded or wrapped
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(levelname)s %(name)s: %(message)s"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format=fmt, handlers=[handler]
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except AutopetlError as exc:
        from autopetl.cli._invocation import runnable

        print(f"autopetl: error: {runnable(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autopetl: interrupted", file=sys.stderr)
        return 130
