"""``autopetl searches | trials | export | db``: read the store; and how ``autopetl train`` writes it.

Imports of the store (SQLAlchemy, Alembic) are deferred into the commands so ``autopetl --help``
stays fast.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from autopetl.cli._console import console, err_console
from autopetl.cli._options import write_text
from autopetl.errors import error_line
from autopetl.objectives import MEASURES, OBJECTIVES
from autopetl.trial import shown_config, shown_value

if TYPE_CHECKING:
    from autopetl.store import SearchRecord, TrialRecord

log = logging.getLogger(__name__)

DB_HELP = (
    "database URL, e.g. sqlite:///runs.db or postgresql+psycopg://user:pass@host/db "
    "(default: $AUTOPETL_DB, else autopetl.db in $AUTOPETL_HOME or ~/.local/share/autopetl)"
)
SEARCH_CSV_COLUMNS = (
    "name",
    "kind",
    "task",
    "space",
    "backbone",
    "status",
    "budget",
    "trial_counts",
    "best_val_acc",
    "created_at",
    "backbone_config",
    "seeded_from",
)
# Columns of `autopetl export --format csv`; config and cost are JSON strings in their cells.
CSV_COLUMNS = (
    "search_name",
    "trial_key",
    "number",
    "method",
    "status",
    "val_acc",
    "last_val_acc",
    "best_epoch",
    "tunable_params",
    "tunable_params_without_head",
    "epochs_done",
    "wall_time_s",
    "images_per_s",
    "peak_memory_mb",
    *MEASURES,
    "attempts",
    "error",
    "config",
    "cost",
    "created_at",
    "finished_at",
)


def add_db_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="URL", default=None, help=DB_HELP)


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=["table", "json", "csv"],
        default="table",
        help="table for people (default), json or csv for scripts",
    )


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("searches", help="list the searches recorded in the database")
    add_format_option(parser)
    add_db_option(parser)
    parser.set_defaults(func=run_searches)

    parser = sub.add_parser("trials", help="list the trials of a search")
    parser.add_argument("--search", required=True, metavar="NAME")
    parser.add_argument(
        "--pareto",
        action="store_true",
        help="only the Pareto front (val accuracy max, tunable parameters min)",
    )
    parser.add_argument("--status", choices=["running", "completed", "pruned", "failed"])
    add_format_option(parser)
    add_db_option(parser)
    parser.set_defaults(func=run_trials)

    parser = sub.add_parser("export", help="write the trials of a search as CSV or JSON")
    parser.add_argument("--search", required=True, metavar="NAME")
    parser.add_argument("--format", choices=["csv", "json"], default="json")
    parser.add_argument("--output", type=Path, default=None, help="file to write (default stdout)")
    add_db_option(parser)
    parser.set_defaults(func=run_export)

    parser = sub.add_parser(
        "db", help="show the database schema revision, or upgrade it (also done on first use)"
    )
    parser.add_argument("action", choices=["current", "upgrade"])
    add_db_option(parser)
    parser.set_defaults(func=run_db)


# -- formatting ------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if math.isfinite(value) else str(value)


def _int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    """A duration to two digits at least: a 0.33 s linear probe is ``0.33s``, not ``0s``."""
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.2g}s"
    return f"{value:.0f}s" if value < 600 else f"{value / 60:.0f}min"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%m-%d %H:%M")


def _config_text(config: dict[str, Any]) -> str:
    """A trial's configuration in one line (see :func:`autopetl.trial.shown_config`)."""
    if any(isinstance(v, dict) for v in config.values()):
        return _flat(config)
    return _flat(shown_config(config))


def _flat(config: dict[str, Any], prefix: str = "") -> str:
    """``{"a": {"b": 1}, "c": 2}`` as ``a.b=1 c=2``: short, and it wraps at spaces."""
    parts = []
    for key, value in config.items():
        if isinstance(value, dict):
            if value:
                parts.append(_flat(value, f"{prefix}{key}."))
        else:
            parts.append(f"{prefix}{key}={shown_value(value)}")
    return " ".join(parts)


# -- commands --------------------------------------------------------------------------------
def search_export_dict(search: SearchRecord) -> dict[str, Any]:
    """A search as `searches --format json` writes it: what it ran on, and how far it got."""
    from autopetl.backbones import describe

    return {
        "name": search.name,
        "kind": search.kind,
        "task": search.task,
        "space": search.space_name,
        "backbone": describe(search.backbone),
        "backbone_config": search.backbone,
        "status": search.status,
        "budget": search.budget,
        "trial_counts": search.trial_counts,
        "best_val_acc": search.best_val_acc,
        "created_at": search.created_at.isoformat(),
        "seeded_from": seeded_from(search),
        "warm_start": search.options.get("warm_start"),
    }


def seeded_from(search: SearchRecord) -> str:
    from autopetl.search.warm_start import seeded_from as lineage_text

    return lineage_text(search.options)


def _finished_cell(counts: dict[str, int], budget: int | None) -> str:
    """A search's progress as its budget counts it: finished trials (completed or stopped early)
    of the budget, with those stopped early, failed and running said apart."""
    finished = counts.get("completed", 0) + counts.get("pruned", 0)
    apart = [
        f"{counts[k]} {label}"
        for k, label in (("pruned", "stopped early"), ("failed", "failed"), ("running", "running"))
        if counts.get(k)
    ]
    of = f"/{budget}" if budget is not None else ""  # a search an older autopetl wrote
    return f"{finished}{of}" + (f" ({', '.join(apart)})" if apart else "")


def run_searches(args: argparse.Namespace) -> int:
    from autopetl.backbones import describe
    from autopetl.store import open_store

    with open_store(args.db, create=False) as store:
        searches = store.list_searches()
        url = store.url
    if args.format != "table":
        rows = [search_export_dict(s) for s in searches]
        write_text(_rows_text(rows, args.format, SEARCH_CSV_COLUMNS), None)
        return 0
    if not searches:
        err_console.print(f"no searches in {url} yet", markup=False)
        return 0
    # Accuracies compare only within one backbone, weights and input size: rows are grouped so.
    searches = sorted(searches, key=lambda s: (describe(s.backbone), s.created_at))
    runs = [s for s in searches if s.kind == "train"]
    searches = [s for s in searches if s.kind == "search"]
    if searches:
        table = Table(title=f"searches in {url}")
        for column in ("name", "task (space)", "backbone (weights, input)", "status"):
            table.add_column(column, overflow="fold")
        for column in ("finished / budget", "best val", "created"):
            table.add_column(column, no_wrap=True, justify="right")
        seeded = any(seeded_from(s) for s in searches)
        if seeded:  # the column only where some search was warm-started
            table.add_column("seeded from", overflow="fold")
        for s in searches:
            counts = s.trial_counts
            table.add_row(
                s.name,
                f"{s.task} ({s.space_name})",
                describe(s.backbone),
                s.status,
                _finished_cell(counts, s.budget),
                _pct(s.best_val_acc),
                _when(s.created_at),
                *([seeded_from(s) or "-"] if seeded else []),
            )
        console.print(table)
    if runs:
        table = Table(title=f"one-off train runs in {url}")
        for column in ("name", "task", "backbone (weights, input)", "status"):
            table.add_column(column, overflow="fold")
        for column in ("val acc", "created"):
            table.add_column(column, no_wrap=True, justify="right")
        for s in runs:
            table.add_row(
                s.name,
                s.task,
                describe(s.backbone),
                s.status,
                _pct(s.best_val_acc),
                _when(s.created_at),
            )
        console.print(table)
    return 0


def _rows_text(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...]) -> str:
    """JSON (the rows as they are) or CSV (one column each; nested values as JSON strings)."""
    if fmt == "json":
        return json.dumps(rows, indent=2, allow_nan=False, default=str) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: json.dumps(row.get(k), sort_keys=True)
                if isinstance(row.get(k), dict | list)
                else row.get(k)
                for k in columns
            }
        )
    return buffer.getvalue()


def run_trials(args: argparse.Namespace) -> int:
    from autopetl.backbones import describe
    from autopetl.store import open_store

    with open_store(args.db, create=False) as store:
        search = store.get_search(args.search)
        if args.pareto:
            trials = store.pareto_front(args.search)
            title = f"Pareto front of {args.search} (completed trials)"
        else:
            trials = store.trials(args.search, status=args.status)
            title = f"trials of {args.search}"
    if args.pareto and args.status not in (None, "completed"):
        trials = []
    if args.format != "table":
        write_text(export_text(trials, args.format), None)
        return 0
    if search is not None:
        title += f" on {search.task}, {describe(search.backbone)}"
    if not trials:
        err_console.print(f"{title}: none", markup=False)
        return 0
    table = Table(title=title)
    table.add_column("trial", overflow="fold", min_width=5)
    # Measured objectives (inference GFLOPs) get a column when any trial shown has them.
    measured = [m for m in MEASURES if any(t.measures.get(m) is not None for t in trials)]
    for column in ("method", "status", "val acc", "params", *measured, "epochs", "time"):
        table.add_column(
            OBJECTIVES[column].label if column in OBJECTIVES else column,
            no_wrap=column != "status",
            overflow="fold",
        )
    table.add_column("config", overflow="fold", min_width=12)
    for t in trials:
        table.add_row(
            t.trial_key,
            t.method or "-",
            t.status + (f" ({error_line(t.error)})" if t.error and t.status == "failed" else ""),
            _pct(t.val_acc),
            _int(t.tunable_params),
            *(OBJECTIVES[m].show(t.measures.get(m)) for m in measured),
            str(t.epochs_done),
            _seconds(t.wall_time_s),
            _config_text(t.config),
        )
    console.print(table)
    return 0


def trial_export_dict(trial: TrialRecord) -> dict[str, Any]:
    """A trial as exported: plain JSON values (non-finite floats as "NaN"/"Infinity" strings)."""
    from autopetl.store._types import to_json_safe

    data = trial.to_dict()
    data.pop("id")
    data.pop("updated_at")
    data.update(data.pop("measures", None) or {})  # a column each, as in the store
    return to_json_safe(data)


def export_text(trials: list[TrialRecord], fmt: str) -> str:
    return _rows_text([trial_export_dict(t) for t in trials], fmt, CSV_COLUMNS)


def run_export(args: argparse.Namespace) -> int:
    from autopetl.store import open_store

    with open_store(args.db, create=False) as store:
        trials = store.trials(args.search)
    text = export_text(trials, args.format)
    write_text(text, args.output)
    if args.output is not None:
        err_console.print(f"wrote {len(trials)} trials of {args.search} to {args.output}")
    return 0


def run_db(args: argparse.Namespace) -> int:
    from autopetl.store import open_store

    with open_store(
        args.db, upgrade=args.action == "upgrade", create=args.action == "upgrade"
    ) as store:
        state = store.schema_state()
        url = store.url
    current = state.current or "none (no autopetl tables yet)"
    console.print(f"database: {url}")
    console.print(f"revision: {current}")
    console.print(f"head:     {state.head}")
    if state.up_to_date:
        console.print("up to date")
    else:
        console.print("behind: upgraded on next use, or now with `autopetl db upgrade`")
    return 0
