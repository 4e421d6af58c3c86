"""One Ray Tune searcher for every search of a run: one Optuna study per search, one Tuner.

A multi-task command (tasks x backbones x data fractions) used to run one Tuner per search, one
after another, and each ended in a tail where most workers waited for the last trials of one
task. Ray Tune's FAQ ("multi-tenancy", ``doc/source/tune/faq.rst``) calls several Tuners on one
cluster unsupported, so every search of a command runs inside one Tuner instead: this searcher
holds each search's own :class:`~autopetl.search.searcher.ParetoOptunaSearch` (its study,
sampler and space) and hands each trial Tune asks for to the search furthest behind its share of
its budget. A free worker therefore takes a trial of whichever search still has trials to start,
and no worker waits while any search has work left.

Each search keeps what it had alone: its own study (its sampler sees its own trials only), its
budget counted exactly (never more trials in flight than it has left to finish; a failed trial
is replaced), its own failure limits. Its rungs stay its own too: the scheduler keeps one
scheduler per search (:class:`~autopetl.search.schedulers.PerSearchScheduler`), routing on the
search name this searcher writes into every config (:data:`autopetl.trial.SEARCH_KEY`).
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from autopetl.errors import error_line
from autopetl.trial import SEARCH_KEY

# The first trials of a search failing with one error this many times stop that search (a
# search whose every trial fails should say so in seconds, not after --max-failed trials).
REPEATED_FAILURES = 3
WORKER_DIED = "the trial's worker died (see `autopetl trials --status failed` for its traceback)"


@dataclass
class StudyBudget:
    """One search's account in a run: what it must finish, what runs, what failed.

    Attributes:
        name: The search's name (and its Optuna study's).
        budget: Trials to finish (completed or pruned), earlier runs of the search included.
        max_failed: Failed trials this run tolerates before the search stops taking trials.
        finished: Trials finished so far (completed or pruned), earlier runs included.
        running: Trials handed to Tune and not yet ended (pending ones included).
        failed: Trials failed in this run.
        first_errors: The errors of the trials that failed before any finished in this run (a
            diverged loss is not one: that is its configuration's, not a mistake every trial makes).
        stopped: Why the search takes no more trials before its budget is met, if it does not.
    """

    name: str
    budget: int
    max_failed: int
    finished: int = 0
    running: int = 0
    failed: int = 0
    first_errors: list[str] = field(default_factory=list)
    stopped: str | None = None

    @property
    def wanted(self) -> int:
        """Trials still to start: never more in flight than the budget has left."""
        if self.stopped is not None:
            return 0
        return max(0, self.budget - self.finished - self.running)

    @property
    def share(self) -> float:
        """How far along its budget the search is, counting what runs."""
        return (self.finished + self.running) / self.budget

    @property
    def met(self) -> bool:
        return self.finished >= self.budget

    @property
    def repeated_error(self) -> str | None:
        """The one error the first trials all failed with, if REPEATED_FAILURES of them did."""
        first = self.first_errors[:REPEATED_FAILURES]
        if len(first) == REPEATED_FAILURES and len(set(first)) == 1:
            return first[0]
        return None

    def record(self, *, failed: bool, error: str | None, raised: bool) -> None:
        """A trial of this search ended."""
        self.running = max(0, self.running - 1)
        if not failed:
            self.finished += 1
            return
        self.failed += 1
        if raised and self.finished == 0:
            self.first_errors.append(error_line(error))
        if self.repeated_error is not None:
            self.stopped = f"its first {REPEATED_FAILURES} trials all failed with one error"
        elif self.failed >= self.max_failed:
            self.stopped = f"{self.failed} trials failed (--max-failed {self.max_failed})"


def pick(budgets: Sequence[StudyBudget]) -> StudyBudget | None:
    """The search that takes the next trial: the one furthest behind its share of its budget,
    among those with trials to start; ties go to the earlier search (the command's order)."""
    candidates = [(b.share, i, b) for i, b in enumerate(budgets) if b.wanted > 0]
    return min(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


class MultiStudySearcher(Searcher):
    """Tune's searcher over several searches (see the module docstring).

    Args:
        searchers: Each search's own searcher, by search name (a ParetoOptunaSearch, its study
            created before the run).
        budgets: Each search's account, in the command's order (ties in :func:`pick` follow it).
    """

    def __init__(self, searchers: dict[str, Searcher], budgets: Sequence[StudyBudget]) -> None:
        super().__init__(metric=None, mode=None)
        if set(searchers) != {b.name for b in budgets}:
            raise ValueError("one searcher and one budget per search")
        self.searchers = dict(searchers)
        self.budgets = list(budgets)
        self._by_name = {b.name: b for b in self.budgets}
        self._owner: dict[str, str] = {}  # Ray trial id -> search name

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        return True  # each search's searcher was given its objectives when it was built

    # Ray's annotation leaves out Searcher.FINISHED (a str), which its SearchGenerator reads.
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        while (budget := pick(self.budgets)) is not None:
            config = self.searchers[budget.name].suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                # Its sampler has nothing more to propose (a grid visited in full).
                budget.stopped = "its sampler has no configuration left to propose"
                continue
            self._owner[trial_id] = budget.name
            budget.running += 1
            return {**config, SEARCH_KEY: budget.name}
        if any(b.running for b in self.budgets):
            return None  # wait: a running trial may fail and need a replacement
        return Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        name = self._owner.get(trial_id)
        if name is not None:
            self.searchers[name].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        name = self._owner.pop(trial_id, None)
        if name is None:
            return  # delivered twice: Ray delivers at least once
        self.searchers[name].on_trial_complete(trial_id, result=result, error=error)
        reported = (result or {}).get("error")
        self._by_name[name].record(
            failed=bool(error or reported),
            error=str(reported) if reported else WORKER_DIED,
            # A worker that died, or the trial's own code raising, is a mistake the next trial
            # may repeat; a diverged loss (reported without "raised") is its configuration's.
            raised=bool(error or (result or {}).get("raised")),
        )

    # Tune saves the searcher with the experiment; autopetl resumes from the database instead
    # (runner.py), so this is only what Tune's protocol asks for. The study storages leave their
    # database URL out when pickled (study_storage.py).
    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
