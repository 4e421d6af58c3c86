"""``autopetl report``: the VTAB-1k results table, shaped like the papers' Table 1."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from autopetl.cli._console import console, err_console
from autopetl.cli._options import write_text
from autopetl.cli.store_cmd import add_db_option

if TYPE_CHECKING:
    from autopetl.report import Report
    from autopetl.tasks import TaskSpec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="the VTAB-1k table of evaluated methods (tasks x methods, test accuracy, averages)",
        description=(
            "Tasks as columns grouped natural / specialized / structured, methods as rows (each "
            "method's best evaluated configuration per task), test accuracy as the mean over "
            "seeds, tunable parameters, group means, the mean over tasks and the mean of group "
            "means. Averages cover the tasks shown; '-' marks what is missing."
        ),
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--task", default=None, help="tasks to show: a name or a comma-separated list"
    )
    which.add_argument(
        "--group",
        default=None,
        help="a group to show: natural, specialized or structured (comma-separated for several)",
    )
    p.add_argument("--format", choices=["table", "md", "csv"], default="table")
    p.add_argument(
        "--by",
        choices=["train_fraction", "backbone"],
        default=None,
        help=(
            "instead: accuracy against a scale, methods as rows: the training-set fraction "
            "(searches with --train-fraction; VPT Fig. 3) or the backbone (VPT Fig. 4)"
        ),
    )
    p.add_argument(
        "--published",
        action="store_true",
        help="add the papers' published rows (DVPT Table 1, V-PETL Bench) for comparison",
    )
    p.add_argument(
        "--max-params",
        type=int,
        default=None,
        help="only configurations with at most this many tunable parameters (head included)",
    )
    p.add_argument("--output", type=Path, default=None, help="write md or csv to a file")
    add_db_option(p)
    p.set_defaults(func=run)


# Short task names for the terminal table, as the papers abbreviate them (md and csv keep folders).
SHORT = {
    "cifar": "CIFAR",
    "caltech101": "Caltech",
    "dtd": "DTD",
    "oxford_flowers102": "Flowers",
    "oxford_iiit_pet": "Pets",
    "svhn": "SVHN",
    "sun397": "Sun397",
    "patch_camelyon": "Camelyon",
    "eurosat": "EuroSAT",
    "resisc45": "Resisc45",
    "diabetic_retinopathy": "Retino",
    "clevr_count": "Clevr-C",
    "clevr_dist": "Clevr-D",
    "dmlab": "DMLab",
    "kitti": "KITTI",
    "dsprites_loc": "dSpr-L",
    "dsprites_ori": "dSpr-O",
    "smallnorb_azi": "sNORB-A",
    "smallnorb_ele": "sNORB-E",
    "natural mean": "Natural",
    "specialized mean": "Special.",
    "structured mean": "Struct.",
    "mean of group means": "Mean grp",
}


def _table(report: Report) -> tuple[Table, int]:
    """The rich table and the width it needs (it is wide: 19 tasks and 5 averages)."""
    from autopetl.report import cells, header

    names = header(report)
    head = [SHORT.get(name, name) for name in names]
    rows = [cells(report, row) for row in report.rows]
    title = "VTAB-1k top-1 test accuracy (%), train800val200 -> test, mean ± std over seeds"
    table = Table(title=title, caption="params: tunable parameters without the head")
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    for i, name in enumerate(head):
        table.add_column(
            name,
            justify="left" if i == 0 else "right",
            style="bold" if "mean" in names[i] else None,
            no_wrap=True,
        )
    ours = True
    for row, strings in zip(report.rows, rows, strict=True):
        if ours and row.source != "autopetl":
            table.add_section()
            ours = False
        table.add_row(*strings)
    return table, sum(widths) + 3 * len(widths) + 1


def _scale(args: argparse.Namespace, tasks: list[TaskSpec] | None) -> int:
    from autopetl import scaling
    from autopetl.evaluation import evaluated_configurations
    from autopetl.store import open_store

    with open_store(args.db, create=False) as store:
        table = scaling.scale_table(
            evaluated_configurations(store), args.by, tasks, max_params=args.max_params
        )
    if args.format == "table":
        out = Table(
            title=f"test accuracy (%) by {table.axis.title}", caption=scaling.caption(table)
        )
        for i, name in enumerate(scaling.header(table)):
            out.add_column(name, justify="left" if i == 0 else "right", no_wrap=i > 0)
        for method in table.rows:
            out.add_row(*scaling.cells(table, method))
        console.print(out)
        return 0
    text = scaling.to_markdown(table) if args.format == "md" else scaling.to_csv(table)
    write_text(text, args.output)
    if args.output is not None:
        err_console.print(f"wrote the table to {args.output}")
    return 0


def run(args: argparse.Namespace) -> int:
    from autopetl.errors import ConfigError
    from autopetl.report import build_report, to_csv, to_markdown
    from autopetl.store import database_exists, open_store
    from autopetl.tasks import resolve_tasks

    tasks: list[TaskSpec] | None = None
    if args.group is not None:
        parts = [g.strip().removeprefix("vtab/") for g in args.group.split(",") if g.strip()]
        bad = [g for g in parts if g not in ("natural", "specialized", "structured")]
        if bad or not parts:
            raise ConfigError(
                f"unknown group {bad[0] if bad else args.group!r}; "
                "choose natural, specialized or structured"
            )
        tasks = resolve_tasks(",".join(f"vtab/{g}" for g in parts))
    elif args.task:
        tasks = resolve_tasks(args.task)
    if args.output is not None and args.format == "table":
        raise ConfigError("--output needs --format md or csv")
    if args.by is not None:
        if args.published:
            raise ConfigError("--published is for the VTAB-1k table; leave it out with --by")
        return _scale(args, tasks)
    if args.published and not database_exists(args.db):
        report = build_report(None, tasks, published=True, max_params=args.max_params)
    else:
        with open_store(args.db, create=False) as store:
            report = build_report(
                store, tasks, published=args.published, max_params=args.max_params
            )
    if args.format == "table":
        from rich.console import Console

        table, width = _table(report)
        # Rich never prints wider than its console; a wide table must not be squeezed into 80
        # columns (a pipe or a narrow terminal), so print it on a console as wide as it needs.
        wide = Console(
            file=console.file, width=max(console.width, width), highlight=False, markup=False
        )
        wide.print(table)
        return 0
    text = to_markdown(report) if args.format == "md" else to_csv(report)
    write_text(text, args.output)
    if args.output is not None:
        err_console.print(f"wrote the report to {args.output}")
    return 0
