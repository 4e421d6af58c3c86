"""A VTAB-1k results table in the shape of the papers' Table 1, from the evaluations in the store.

Columns are tasks, grouped natural / specialized / structured in VTAB order, each group followed
by its mean; then the two overall averages papers use: the mean over tasks (the "19-task mean"
when every task is shown) and the mean of the group means. Rows are methods: for each method and
task, the evaluated configuration with the highest mean test accuracy over seeds (see
docs/PROTOCOL.md for what that choice means). Published rows (:func:`published_rows`) can sit
beside ours; they come from ``autopetl/data/published_vtab1k.yaml``.

Averages are computed over the tasks shown, so every row is averaged over the same tasks: a row
missing a task of a group has no mean for that group (nor an overall mean). A published row whose
cells are not all published falls back to the average its paper printed, only when the table shows
exactly the tasks that average covers (a whole group, or all 19 tasks).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from autopetl.backbones import describe
from autopetl.errors import AutopetlError
from autopetl.evaluation import ConfigurationResult, evaluated_configurations, rank_key
from autopetl.tasks import GROUPS, TASKS, TaskSpec

if TYPE_CHECKING:
    from autopetl.store import Store

PUBLISHED_FILE = "data/published_vtab1k.yaml"
# Rows in the order of the papers' Table 1; methods not listed follow, alphabetically.
METHOD_ORDER = (
    "full",
    "linear",
    "partial",
    "mlp",
    "sidetune",
    "bias",
    "adapter",
    "lora",
    "vpt",
    "dvpt",
)
MISSING = "-"


class ReportError(AutopetlError):
    """Nothing to report, or a published-results file that cannot be read."""


@dataclass(frozen=True)
class Cell:
    """One method on one task: test accuracy in percent, mean over seeds.

    ``params`` is tunable parameters without the head (what papers count), when known.
    """

    acc: float
    std: float | None = None
    seeds: int | None = None
    params: int | None = None
    search_name: str | None = None
    trial_key: str | None = None


@dataclass(frozen=True)
class Row:
    """A row of the table: ours (``source`` is ``autopetl``) or a paper's."""

    label: str
    source: str
    cells: dict[str, Cell]  # by task folder
    params_m: float | None = None  # published tunable parameters, millions
    reported: dict[str, float] = field(default_factory=dict)  # published averages
    backbone: str | None = None  # ours: backbone (weights, input size), shown with the label

    @property
    def shown_label(self) -> str:
        return f"{self.label} · {self.backbone}" if self.backbone else self.label


@dataclass(frozen=True)
class Averages:
    """A row's averages over the shown tasks (percent; None where a needed cell is missing)."""

    groups: dict[str, float | None]
    tasks_mean: float | None
    groups_mean: float | None


@dataclass(frozen=True)
class Report:
    """The shown tasks (VTAB order) and the rows."""

    tasks: tuple[TaskSpec, ...]
    rows: tuple[Row, ...]

    @property
    def groups(self) -> tuple[str, ...]:
        """The groups with at least one shown task, in VTAB order."""
        return tuple(g for g in GROUPS if any(t.group == g for t in self.tasks))

    def group_tasks(self, group: str) -> tuple[TaskSpec, ...]:
        return tuple(t for t in self.tasks if t.group == group)

    def averages(self, row: Row) -> Averages:
        return row_averages(row, self.tasks)

    def params(self, row: Row) -> float | None:
        """Tunable parameters (head excluded): published, or our mean over the shown tasks."""
        if row.params_m is not None:
            return row.params_m * 1e6
        counts = [
            c.params
            for t in self.tasks
            if (c := row.cells.get(t.folder)) is not None and c.params is not None
        ]
        return statistics.fmean(counts) if counts else None


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return statistics.fmean(v for v in values if v is not None)


def row_averages(row: Row, tasks: Sequence[TaskSpec]) -> Averages:
    """The group means, the mean over tasks and the mean of group means of ``row`` on ``tasks``.

    Each is None unless the row has every cell it needs; a paper's printed average stands in
    when ``tasks`` covers exactly the tasks it averages.
    """
    shown = {t.folder for t in tasks}
    groups: dict[str, float | None] = {}
    for group in GROUPS:
        members = [t.folder for t in tasks if t.group == group]
        if not members:
            continue
        value = _mean([c.acc if (c := row.cells.get(m)) else None for m in members])
        whole_group = {t.folder for t in TASKS.values() if t.group == group} == set(members)
        if value is None and whole_group:
            value = row.reported.get(group)
        groups[group] = value
    tasks_mean = _mean([c.acc if (c := row.cells.get(t.folder)) else None for t in tasks])
    if tasks_mean is None and shown == {t.folder for t in TASKS.values()}:
        tasks_mean = row.reported.get("mean19")
    return Averages(groups, tasks_mean, _mean(list(groups.values())))


# -- our rows -------------------------------------------------------------------------------------
def _backbone_key(result: ConfigurationResult) -> str:
    # Accuracies compare only within one backbone, weights and input size: each is its own row.
    return describe(result.backbone)


def method_rank(method: str) -> tuple[int, str]:
    """Sort key for methods: the papers' Table 1 order, then other methods alphabetically."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def our_rows(
    results: Sequence[ConfigurationResult],
    tasks: Sequence[TaskSpec] | None = None,
    *,
    max_params: int | None = None,
) -> list[Row]:
    """One row per method and backbone (weights, input size): its best cell per task.

    Args:
        results: Evaluated configurations (:func:`autopetl.evaluation.evaluated_configurations`).
        tasks: Keep these tasks only (None: every task).
        max_params: Ignore configurations with more tunable parameters (head included).
    """
    keep = None if tasks is None else {t.name for t in tasks}
    best: dict[tuple[str, str], dict[str, ConfigurationResult]] = {}
    for r in results:
        if (keep is not None and r.task not in keep) or r.task not in TASKS:
            continue  # the table is VTAB-1k's; FGVC results are listed by `autopetl evaluate`
        if r.train_fraction is not None:
            continue  # not VTAB-1k's 1,000 images: the data-scale table (--by train_fraction)
        if max_params is not None and (r.tunable_params is None or r.tunable_params > max_params):
            continue
        cells = best.setdefault((r.method, _backbone_key(r)), {})
        folder = TASKS[r.task].folder
        if folder not in cells or rank_key(r) < rank_key(cells[folder]):
            cells[folder] = r
    rows = []
    for method, backbone in sorted(best, key=lambda k: (method_rank(k[0]), k[1])):
        chosen = best[(method, backbone)]
        rows.append(
            Row(
                label=method,
                backbone=backbone,
                source="autopetl",
                cells={
                    folder: Cell(
                        acc=100 * r.mean,
                        std=100 * r.std,
                        seeds=len(r.seeds),
                        params=r.tunable_params_without_head,
                        search_name=r.search_name,
                        trial_key=r.trial_key,
                    )
                    for folder, r in chosen.items()
                },
            )
        )
    return rows


# -- published rows -------------------------------------------------------------------------------
def published_rows() -> list[Row]:
    """The papers' rows shipped in ``autopetl/data/published_vtab1k.yaml``.

    Raises:
        ReportError: The file is missing or malformed (a broken installation).
    """
    path = resources.files("autopetl") / PUBLISHED_FILE
    try:
        data = yaml.safe_load(path.read_text())
        sources: dict[str, Any] = data["sources"]
        rows = []
        for item in data["rows"]:
            source = sources[item["source"]]
            columns, accuracy = source["columns"], item["accuracy"]
            if len(columns) != len(accuracy):
                raise ValueError(
                    f"{item['method']}: {len(accuracy)} values, {len(columns)} columns"
                )
            unknown = sorted(set(columns) - {t.folder for t in TASKS.values()})
            if unknown:
                raise ValueError(f"unknown task {unknown[0]!r}")
            rows.append(
                Row(
                    label=f"{item['method']} ({source.get('label', item['source'])})",
                    source=item["source"],
                    cells={
                        c: Cell(acc=float(a))
                        for c, a in zip(columns, accuracy, strict=True)
                        if a is not None
                    },
                    params_m=None if item.get("params_m") is None else float(item["params_m"]),
                    reported={k: float(v) for k, v in (item.get("reported") or {}).items()},
                )
            )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ReportError(
            f"cannot read the published results {PUBLISHED_FILE} ({exc}); reinstall autopetl"
        ) from exc
    return rows


def published_citations() -> dict[str, str]:
    """Source key -> citation of the published rows."""
    data = yaml.safe_load((resources.files("autopetl") / PUBLISHED_FILE).read_text())
    return {k: v.get("citation", k) for k, v in data["sources"].items()}


# -- the report -----------------------------------------------------------------------------------
def build_report(
    store: Store | None,
    tasks: Sequence[TaskSpec] | None = None,
    *,
    published: bool = False,
    max_params: int | None = None,
) -> Report:
    """The table for ``tasks`` (None: every task we evaluated), with the papers' rows if asked.

    ``store`` None: no database yet, so the papers' rows alone.

    Raises:
        ReportError: Nothing to show (no evaluations, and no published rows asked for).
    """
    results = evaluated_configurations(store) if store else []
    ours = our_rows(results, tasks, max_params=max_params)
    if tasks is None:
        present = {folder for row in ours for folder in row.cells}
        shown = [t for t in TASKS.values() if t.folder in present]
        if not shown and published:
            shown = list(TASKS.values())
    else:
        order = list(TASKS)
        shown = sorted(dict.fromkeys(tasks), key=lambda t: order.index(t.name))
    if not ours and not published:
        where = "" if tasks is None else " for " + ", ".join(t.name for t in shown)
        if store is not None and any(r.train_fraction is not None for r in results):
            raise ReportError(
                f"no VTAB-1k evaluations in {store.url}{where}: the evaluated searches trained on "
                "a fraction of the training set; `autopetl report --by train_fraction` lays "
                "them out"
            )
        raise ReportError(
            f"no evaluations in {store.url if store else 'the database'}{where}; run `autopetl evaluate --search NAME --pareto` "
            f"first (or pass --published for the papers' rows alone)"
        )
    rows = ours + (published_rows() if published else [])
    return Report(tuple(shown), tuple(rows))


# -- rendering ------------------------------------------------------------------------------------
def format_params(value: float | None) -> str:
    """Parameters as papers print them: millions, or thousands for tiny test models."""
    if value is None:
        return MISSING
    if value == 0:
        return "0"
    if value >= 1e4:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} K"
    return f"{value:.0f}"


def _acc(value: float | None, digits: int) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def header(report: Report) -> list[str]:
    """Column names: method, params, each group's tasks then its mean, then the two averages."""
    out = ["method", "params"]
    for group in report.groups:
        out += [t.folder for t in report.group_tasks(group)]
        out.append(f"{group} mean")
    n = len(report.tasks)
    out += [f"mean ({n} task{'s' if n != 1 else ''})", "mean of group means"]
    return out


def cells(report: Report, row: Row, *, raw: bool = False) -> list[str]:
    """One row's strings, aligned with :func:`header`.

    For people every accuracy has 1 decimal, and our cells evaluated over several seeds show
    mean ± sample std; ``raw`` (CSV) gives parameters as a plain count and every accuracy with 2
    decimals (the spread is in the evaluations, `autopetl evaluate` and `export`).
    """
    digits = 2 if raw else 1
    avg = report.averages(row)
    params = report.params(row)
    if raw:
        shown_params = MISSING if params is None else f"{params:.0f}"
    else:
        shown_params = format_params(params)
    out = [row.shown_label, shown_params]
    for group in report.groups:
        for t in report.group_tasks(group):
            cell = row.cells.get(t.folder)
            text = _acc(cell.acc if cell else None, digits)
            if not raw and cell is not None and cell.std is not None and (cell.seeds or 0) > 1:
                text += f" ± {cell.std:.1f}"
            out.append(text)
        out.append(_acc(avg.groups.get(group), digits))
    out += [_acc(avg.tasks_mean, digits), _acc(avg.groups_mean, digits)]
    return out


def to_markdown(report: Report) -> str:
    """The table as GitHub markdown, with the published rows' sources below it."""
    head = header(report)
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(cells(report, row)) + " |" for row in report.rows]
    lines.append("")
    lines.append(
        "Top-1 test accuracy (%) after re-training on train800val200, mean ± std over seeds; "
        "params: tunable parameters without the head. Our rows are per backbone (weights, "
        "input size): accuracies compare within one."
    )
    cited = {row.source for row in report.rows if row.source != "autopetl"}
    if cited:
        citations = published_citations()
        lines += [f"- {k}: {citations.get(k, k)}" for k in sorted(cited)]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    """The table as CSV (missing values are ``-``), with a ``source`` column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", *header(report)])
    for row in report.rows:
        writer.writerow([row.source, *cells(report, row, raw=True)])
    return buffer.getvalue()
