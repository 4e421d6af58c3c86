"""The one writer of autopetl's tables during a search: a Ray Tune callback in the driver.

Ray delivers events at least once, so every write is an idempotent upsert keyed on the trial's
identity, its Optuna trial number (stable across Tuner restarts, unlike Ray's trial ids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from autopetl.recording import record_epoch, record_outcome
from autopetl.search.searcher import finished_training
from autopetl.store import Store
from autopetl.trial import flat_of, search_of, trial_number_of

log = logging.getLogger(__name__)


def trial_key(config: dict[str, Any]) -> str:
    return str(trial_number_of(config))


@dataclass
class TrialEvent:
    """What a watcher (the CLI's live view) is told after each recorded event."""

    kind: str  # started, epoch, completed, pruned, failed
    search: str  # the search the trial belongs to (one run may hold several)
    key: str
    method: str
    config: dict[str, Any]
    val_acc: float | None = None
    tunable_params: int | None = None
    epoch: int | None = None
    error: str | None = None
    pid: int | None = None  # the worker process that reported it


@dataclass
class StoreRecorder(Callback):
    """Record every trial's config, status, epochs and cost; tell ``on_event`` as it happens.

    One recorder serves every search of a run: each trial's config names its search
    (:data:`autopetl.trial.SEARCH_KEY`), and its rows go to that search.
    """

    store: Store
    on_event: Callable[[TrialEvent], None] | None = None
    _attempts: dict[tuple[str, str], int] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles its callbacks into the experiment state; the database connection and the
        # watcher stay with the driver (resume starts a new Tuner, see runner.py).
        return {**self.__dict__, "store": None, "on_event": None}

    @staticmethod
    def _identity(trial: Trial) -> tuple[str, str, str]:
        """(search, trial key, method) of a Tune trial."""
        config = trial.config
        return search_of(config), trial_key(config), str(config["method"])

    def _emit(self, event: TrialEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        search, key, method = self._identity(trial)
        self._attempts.setdefault((search, key), 1)
        self.store.upsert_trial(
            search,
            key,
            number=trial_number_of(trial.config),
            method=method,
            config=flat_of(trial.config),
            status="running",
            attempts=self._attempts[search, key],
        )
        self._emit(TrialEvent("started", search, key, method, trial.config))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        if result.get("error"):
            return  # a failed outcome, recorded by on_trial_complete
        search, key, method = self._identity(trial)
        record_epoch(self.store, search, key, result)
        self._emit(
            TrialEvent(
                "epoch",
                search,
                key,
                method,
                trial.config,
                result.get("val_acc"),
                result.get("tunable_params"),
                int(result["epoch"]),
                pid=result.get("pid"),
            )
        )

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        result = trial.last_result or {}
        if result.get("error"):
            self._finish(trial, "failed", result, error=str(result["error"]))
            return
        status = "completed" if finished_training(result) else "pruned"
        self._finish(trial, status, result, error=None)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Tune restarts the trial (its worker or node died); it resumes from its checkpoint."""
        search, key, _ = self._identity(trial)
        self._attempts[search, key] = self._attempts.get((search, key), 1) + 1
        self.store.upsert_trial(
            search,
            key,
            status="running",
            attempts=self._attempts[search, key],
            error=_error_text(trial),
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._finish(trial, "failed", trial.last_result or {}, error=_error_text(trial))

    def _finish(self, trial: Trial, status: str, result: dict, error: str | None) -> None:
        search, key, method = self._identity(trial)
        val_acc = result.get("val_acc")
        record_outcome(self.store, search, key, status, result, error)
        self._emit(
            TrialEvent(
                status,
                search,
                key,
                method,
                trial.config,
                val_acc,
                result.get("tunable_params"),
                result.get("epoch"),
                error,
            )
        )


def _error_text(trial: Trial) -> str:
    """The last lines of the trial's traceback: the exception and where it came from."""
    # Tune writes the error next to the trial locally first; storage gets it on the next sync.
    text = ""
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
        else:
            text = str(trial.get_error() or "")
    except Exception:  # the error file may be on storage that is gone
        text = ""
    text = str(text).strip()
    if not text:
        return "the trial failed without an error message (its worker may have died)"
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-12:])[-4000:]
