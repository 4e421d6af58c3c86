"""``autopetl tasks``: the task registry, with where each task's data comes from."""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from autopetl.cli._console import console
from autopetl.cli._options import add_data_options
from autopetl.tasks import ALL_TASKS, data_source, default_data_root, is_available


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tasks", help="list the VTAB-1k and FGVC tasks and whether their data is here"
    )
    add_data_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = args.data_root or default_data_root()
    table = Table(title="tasks: VTAB-1k (vtab/...) and FGVC (fgvc/...)")
    for column in ("task", "group", "classes", "data from", "available"):
        table.add_column(column)
    for task in ALL_TASKS.values():
        ok = is_available(task, root)
        table.add_row(
            task.name,
            task.group,
            str(task.num_classes),
            data_source(task, root),
            Text("yes", style="green") if ok else Text("no", style="red"),
        )
    console.print(table)
    n_ok = sum(is_available(t, root) for t in ALL_TASKS.values())
    console.print(
        f"{n_ok} of {len(ALL_TASKS)} tasks available"
        + ("" if root else "; set --data-root or AUTOPETL_DATA for the VTAB-1k and FGVC folders")
    )
    return 0
