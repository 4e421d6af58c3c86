"""Accuracy against a scale, per method: the papers' Fig. 3 (training-data scale) and Fig. 4
(backbone scale) as tables, from the evaluations in the store.

Rows are methods, columns the values of one axis: the fraction of the training set a search
trained on (``train_fraction``) or the backbone (weights and input size, ``backbone``). A cell is
the mean over the shown tasks of each task's best evaluated configuration of that method at that
value (:func:`autopetl.evaluation.rank_key`); a column lacking one of the tasks has no cell, so
every cell averages the same tasks. Each column comes from its own searches: a search has one
backbone and one data scale, so nothing is chosen across them.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autopetl.backbones import describe
from autopetl.errors import AutopetlError
from autopetl.evaluation import ConfigurationResult, rank_key
from autopetl.tasks import ALL_TASKS, TaskSpec
from autopetl.tasks.scale import fraction_label

MISSING = "-"


class ScaleError(AutopetlError):
    """Nothing to lay out on the asked axis."""


@dataclass(frozen=True)
class Axis:
    """One scale: the value of a result on it (None: not on it) and how its values sort."""

    name: str
    title: str
    value_of: Callable[[ConfigurationResult], Any]
    label_of: Callable[[Any], str]
    sort_key: Callable[[Any], Any]


def _fraction_of(result: ConfigurationResult) -> float | None:
    if result.train_fraction is not None:
        return float(result.train_fraction)
    # An FGVC search without a fraction trained on all of train.json; a VTAB-1k one on its 800
    # images, which is the VTAB-1k protocol, not a point of this scale.
    return 1.0 if ALL_TASKS[result.task].layout == "fgvc" else None


def _backbone_of(result: ConfigurationResult) -> str | None:
    # Backbones compare at each task's own protocol: data-scale searches stay out.
    return describe(result.backbone) if result.train_fraction is None else None


AXES = {
    "train_fraction": Axis(
        "train_fraction",
        "training-set fraction",
        _fraction_of,
        fraction_label,
        float,
    ),
    "backbone": Axis("backbone", "backbone", _backbone_of, str, str),
}


@dataclass(frozen=True)
class ScaleCell:
    """A method at one value: percent, mean over the tasks; its parts per task."""

    acc: float
    per_task: dict[str, ConfigurationResult]


@dataclass(frozen=True)
class ScaleTable:
    axis: Axis
    tasks: tuple[TaskSpec, ...]
    values: tuple[Any, ...]
    rows: dict[str, dict[Any, ScaleCell]]  # method -> value -> cell


def scale_table(
    results: Sequence[ConfigurationResult],
    axis: str,
    tasks: Sequence[TaskSpec] | None = None,
    *,
    max_params: int | None = None,
) -> ScaleTable:
    """The table of ``results`` on ``axis`` (``train_fraction`` or ``backbone``).

    Raises:
        ScaleError: No evaluated configuration lies on the axis (for these tasks).
    """
    from autopetl.report import method_rank

    ax = AXES[axis]
    keep = None if tasks is None else {t.name for t in tasks}
    best: dict[tuple[str, Any], dict[str, ConfigurationResult]] = {}
    for r in results:
        value = ax.value_of(r)
        if value is None or (keep is not None and r.task not in keep):
            continue
        if max_params is not None and (r.tunable_params is None or r.tunable_params > max_params):
            continue
        per_task = best.setdefault((r.method, value), {})
        if r.task not in per_task or rank_key(r) < rank_key(per_task[r.task]):
            per_task[r.task] = r
    if not best:
        where = "" if tasks is None else " of " + ", ".join(t.name for t in tasks)
        hint = (
            "search with --train-fraction F,F... and evaluate those searches"
            if axis == "train_fraction"
            else "search with --backbone a,b and evaluate those searches"
        )
        raise ScaleError(f"no evaluated configuration{where} varies the {ax.title}: {hint}")
    present = {task for per_task in best.values() for task in per_task}
    shown = tuple(ALL_TASKS[n] for n in ALL_TASKS if n in present and (keep is None or n in keep))
    values = tuple(sorted({v for _, v in best}, key=ax.sort_key))
    rows: dict[str, dict[Any, ScaleCell]] = {}
    for method, value in sorted(best, key=lambda k: (method_rank(k[0]), ax.sort_key(k[1]))):
        per_task = best[(method, value)]
        row = rows.setdefault(method, {})
        if all(t.name in per_task for t in shown):
            acc = statistics.fmean(100 * per_task[t.name].mean for t in shown)
            row[value] = ScaleCell(acc, per_task)
    return ScaleTable(ax, shown, values, rows)


def header(table: ScaleTable) -> list[str]:
    return ["method", *(table.axis.label_of(v) for v in table.values)]


def cells(table: ScaleTable, method: str, *, digits: int = 1) -> list[str]:
    row = table.rows[method]
    return [
        method,
        *(f"{row[v].acc:.{digits}f}" if v in row else MISSING for v in table.values),
    ]


def caption(table: ScaleTable) -> str:
    tasks = ", ".join(t.name for t in table.tasks)
    mean = "mean over " if len(table.tasks) > 1 else ""
    return (
        f"Top-1 test accuracy (%) by {table.axis.title}, {mean}{tasks}: each method's best "
        "evaluated configuration per task and value, mean over its seeds."
    )


def to_markdown(table: ScaleTable) -> str:
    head = header(table)
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(cells(table, m)) + " |" for m in table.rows]
    return "\n".join([*lines, "", caption(table)]) + "\n"


def to_csv(table: ScaleTable) -> str:
    """One line per method and value (the form a plot reads), accuracy with 2 decimals."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", table.axis.name, "test_acc", "tasks"])
    tasks = " ".join(t.name for t in table.tasks)
    for method, row in table.rows.items():
        for value in table.values:
            if value in row:
                writer.writerow([method, value, f"{row[value].acc:.2f}", tasks])
    return buffer.getvalue()
