"""``autopetl dashboard``: the Streamlit app on the store, bound to 127.0.0.1 by default.

The app file is ``app/dashboard.py`` of the repository autopetl is installed from (an editable
install, ``pip install -e .``, keeps the package in ``<repo>/autopetl``, so the app is found at
``<repo>/app/dashboard.py``). An installation without the repository falls back to the packaged
page module, which runs as a Streamlit script too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import sys
from pathlib import Path

import autopetl
from autopetl.cli._console import err_console
from autopetl.cli.store_cmd import add_db_option
from autopetl.errors import ConfigError

DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"
PACKAGE_DIR = Path(autopetl.__file__).resolve().parent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard",
        help="open the Streamlit dashboard: Pareto fronts, progress, trials, the report table",
        description=(
            "Starts Streamlit on app/dashboard.py, reading the database (never writing it). "
            "Open the printed address in a browser; Ctrl-C stops it."
        ),
    )
    add_db_option(p)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to bind (default 127.0.0.1: this machine only; the app has no login, so "
        "bind 0.0.0.0 only on a trusted network)",
    )
    p.set_defaults(func=run)


def app_path() -> Path:
    """``<repo>/app/dashboard.py`` beside the package, else the packaged page module."""
    repo_app = PACKAGE_DIR.parent / "app" / "dashboard.py"
    if repo_app.is_file():
        return repo_app
    return PACKAGE_DIR / "dashboard" / "page.py"


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    """The ``streamlit run`` command line (options go before the script: after it, they are the
    script's own arguments)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        # "none": the browser gets a generic message; tracebacks and exception types stay in
        # this terminal (a traceback can carry paths and, from a driver, a connection string).
        "--client.showErrorDetails",
        "none",
        "--browser.gatherUsageStats",
        "false",
        # A user's view: no "Deploy" button or developer menu.
        "--client.toolbarMode",
        "viewer",
        # The app is not being edited while it is watched: no inotify watchers on the repo.
        "--server.fileWatcherType",
        "none",
        str(app),
    ]


def _check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As the server will: a port in TIME_WAIT after a restart is free, a listening one is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port (or --host)"
            ) from exc


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("the dashboard needs streamlit: pip install 'streamlit>=1.40'")
    from autopetl.cli._invocation import runnable
    from autopetl.store import database_exists, resolve_url, safe_url

    url = resolve_url(args.db)  # a bad URL fails here, in one line, not in the browser
    _check_port(args.host, args.port)
    app = app_path()
    env = dict(os.environ)
    # The app reads the URL from the environment, not argv: a password stays out of `ps`.
    env["AUTOPETL_DB"] = url.render_as_string(hide_password=False)
    shown_host = f"[{args.host}]" if ":" in args.host else args.host
    err_console.print(
        f"autopetl dashboard on http://{shown_host}:{args.port} "
        f"(database {safe_url(url)}; app {app}); Ctrl-C stops it"
    )
    if not database_exists(url):  # not a mistake: the page waits for the first search
        err_console.print(
            f"note: there is no database at {url.database} yet; the dashboard shows it once "
            + runnable("`autopetl search` or `autopetl train` creates it"),
            markup=False,
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            f"warning: bound to {args.host}: anyone who can reach this machine can "
            "read the database's results"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    command = streamlit_command(app, args.host, args.port)
    # Become Streamlit (no parent left behind): a signal to this process reaches the server.
    os.execve(command[0], command, env)
    return 0  # not reached
