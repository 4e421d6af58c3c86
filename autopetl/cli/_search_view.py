"""What a person watches while ``autopetl search`` runs, and what it prints when it ends.

In a terminal, one live table with a row per search of the run (a multi-task command runs all
its searches at once) and the latest trials below it. Outside a terminal, one line per finished
trial that names its search and task. At the end, each search's Pareto front and counts, a table
of every search when there are several, and the commands for what comes next.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from autopetl.errors import error_line
from autopetl.objectives import DEFAULT_OBJECTIVES, Objective, parse_objectives
from autopetl.trial import shown_config, shown_value

if TYPE_CHECKING:
    from autopetl.search.recorder import TrialEvent
    from autopetl.search.runner import SearchOutcome
    from autopetl.store import Store

RECENT = 6


@dataclass
class SearchRow:
    """One search's counts as the run goes: finished, running, stopped early, failed, best."""

    name: str
    task: str
    budget: int
    running: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(
        default_factory=lambda: {"completed": 0, "pruned": 0, "failed": 0}
    )
    points: list[tuple[float, float]] = field(default_factory=list)

    @property
    def finished(self) -> int:
        return self.counts["completed"] + self.counts["pruned"]

    @property
    def best(self) -> float | None:
        return max((a for a, _ in self.points), default=None)

    def front_size(self) -> int:
        from autopetl.store import non_dominated

        return len(non_dominated(self.points, self.points))

    def state(self) -> str:
        if self.finished >= self.budget:
            return "finished"
        return "running" if self.running else "waiting"


@dataclass
class RunView:
    """The live view of a run's searches (one row each) and its latest finished trials."""

    rows: dict[str, SearchRow]
    started: float = field(default_factory=time.perf_counter)
    recent: list[TrialEvent] = field(default_factory=list)

    @classmethod
    def resuming(cls, searches: Sequence[tuple[str, str, int]], store: Store) -> RunView:
        """The view of ``(name, task, budget)`` searches, counting what earlier runs finished."""
        rows = {}
        for name, task, budget in searches:
            row = SearchRow(name, task, budget)
            for trial in store.trials(name) if store.get_search(name) else []:
                if trial.status in row.counts:
                    row.counts[trial.status] += 1
                if trial.status == "completed" and trial.val_acc is not None:
                    row.points.append((trial.val_acc, float(trial.tunable_params or 0)))
            rows[name] = row
        return cls(rows)

    def on_event(self, event: TrialEvent) -> None:
        row = self.rows.get(event.search)
        if row is None:
            return
        if event.kind == "started":
            row.running.add(event.key)
        elif event.kind in row.counts:
            row.running.discard(event.key)
            row.counts[event.kind] += 1
            if (
                event.kind == "completed"
                and event.val_acc is not None
                and event.tunable_params is not None
            ):
                row.points.append((event.val_acc, float(event.tunable_params)))
            self.recent = [event, *self.recent][:RECENT]

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.started:.0f} s"

    def progress(self, name: str) -> str:
        row = self.rows[name]
        best = row.best
        return (
            f"finished {row.finished}/{row.budget}, failed {row.counts['failed']}, "
            + (f"best val {best:.1%}, " if best is not None else "")
            + self.elapsed()
        )

    def line(self, e: TrialEvent) -> str:
        """One finished trial, for a log: its search and task, what it reached, where the
        search is, and (with several searches) how many of the run's trials have finished."""
        row = self.rows[e.search]
        what = f"trial {e.key} {e.method} {e.kind}"
        if e.kind == "pruned" and e.epoch is not None:
            what += f" after epoch {e.epoch}"
        if e.val_acc is not None and e.kind != "failed":
            what += f": val {e.val_acc:.1%}, {e.tunable_params or 0:,} params"
        if e.kind == "failed":
            what += f": {error_line(e.error)}"
        run = ""
        if len(self.rows) > 1:
            done = sum(r.finished for r in self.rows.values())
            total = sum(r.budget for r in self.rows.values())
            run = f" | run {done}/{total}"
        return f"{e.search} ({row.task}): {what} | {self.progress(e.search)}{run}"

    def epoch_line(self, e: TrialEvent) -> str | None:
        """A running trial's epoch, for a log (so a log is never silent while trials train);
        None for its last epoch, which the trial's finished line reports."""
        row = self.rows.get(e.search)
        epochs = e.config.get("epochs")
        if row is None or e.epoch is None or (epochs is not None and e.epoch >= int(epochs)):
            return None
        of = f"/{int(epochs)}" if epochs is not None else ""
        acc = f": val {e.val_acc:.1%}" if e.val_acc is not None else ""
        return f"{e.search} ({row.task}): trial {e.key} {e.method} epoch {e.epoch}{of}{acc}"

    def render(self) -> Group:
        table = Table(
            "search", "task", "state", "finished", "running", "stopped early", "failed",
            "best val", "front", box=None, title=f"autopetl search, {self.elapsed()}",
            title_justify="left",
        )  # fmt: skip
        for row in self.rows.values():
            best = row.best
            table.add_row(
                Text(row.name, style="bold"),
                row.task,
                row.state(),
                f"{row.finished}/{row.budget}",
                str(len(row.running)),
                str(row.counts["pruned"]),
                str(row.counts["failed"]),
                f"{best:.1%}" if best is not None else "-",
                str(row.front_size()),
            )
        recent = Table("search", "trial", "method", "status", "val acc", "params", box=None)
        for e in self.recent:
            recent.add_row(
                e.search,
                e.key,
                e.method,
                e.kind,
                f"{e.val_acc:.1%}" if e.val_acc is not None else "-",
                f"{e.tunable_params:,}" if e.tunable_params else "-",
            )
        return Group(table, recent)


def pareto_table(outcome: SearchOutcome, objectives: tuple[Objective, ...] | None = None) -> Table:
    """The front, one row per point: trials tied on every objective share a row.

    Short searches tie often (several learning rates of one prompt length, all at chance), and a
    summary that repeats one point twenty times hides the front; `autopetl trials --pareto` lists
    every tied trial.
    """
    objectives = objectives or parse_objectives(DEFAULT_OBJECTIVES)
    # The front is sorted by its costs, so trials tied on every objective are adjacent.
    points = [
        list(group)
        for _, group in groupby(
            outcome.pareto, key=lambda t: tuple(t.objective(o.name) for o in objectives)
        )
    ]
    shown = ", ".join(f"{o.label} {o.direction}" for o in objectives)
    table = Table(
        title=f"Pareto front of {outcome.name} ({shown})",
        caption=(
            f"tied trials share a row; `autopetl trials --search {outcome.name} --pareto` lists them"
            if len(points) < len(outcome.pareto)
            else None
        ),
    )
    for column in ("trial", "method", *(o.label for o in objectives), "config"):
        table.add_column(column)
    for first, *tied in points:
        config = shown_config(first.config)
        table.add_row(
            first.trial_key + (f" (+{len(tied)} tied)" if tied else ""),
            first.method or "-",
            *(o.show(first.objective(o.name)) for o in objectives),
            ", ".join(f"{k}={shown_value(v)}" for k, v in config.items()),
        )
    return table


def runs_table(outcomes: Sequence[SearchOutcome], tasks: dict[str, str]) -> Table:
    """Every search of a run on one line each: its task, how it ended, its best and its front."""
    table = Table(
        "search", "task", "status", "completed", "stopped early", "failed", "best val", "front",
        title="searches of this run",
    )  # fmt: skip
    for o in outcomes:
        best = max((t.val_acc for t in o.pareto if t.val_acc is not None), default=None)
        table.add_row(
            o.name,
            tasks.get(o.name, "-"),
            o.status,
            str(o.counts["completed"]),
            str(o.counts["pruned"]),
            str(o.counts["failed"]),
            f"{best:.1%}" if best is not None else "-",
            str(len(o.pareto)),
        )
    return table
