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
from ray.tune.stopper import Stopper

from autopetl.errors import error_line
from autopetl.recording import record_epoch, record_outcome
from autopetl.search.searcher import finished_training
from autopetl.store import Store
from autopetl.trial import flat_of, trial_number_of

log = logging.getLogger(__name__)

# The first trials failing with one error this many times stop the search (a search whose every
# trial fails should say so in seconds, not after --max-failed trials).
REPEATED_FAILURES = 3


def trial_key(config: dict[str, Any]) -> str:
    return str(trial_number_of(config))


@dataclass
class TrialEvent:
    """What a watcher (the CLI's live view) is told after each recorded event."""

    kind: str  # started, epoch, completed, pruned, failed
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
    """Record every trial's config, status, epochs and cost; tell ``on_event`` as it happens."""

    store: Store
    search_name: str
    on_event: Callable[[TrialEvent], None] | None = None
    failures: int = 0  # trials failed while this recorder watched (read by FailureStopper)
    finished: int = 0  # trials completed or pruned while it watched
    # The exceptions of the trials that failed before any finished: the same one
    # REPEATED_FAILURES times is a mistake every trial will make (a bug, a method the backbone
    # cannot take). A diverged loss is not one: it is the configuration's (a too-high lr).
    first_errors: list[str] = field(default_factory=list)
    _attempts: dict[str, int] = field(default_factory=dict)

    @property
    def repeated_error(self) -> str | None:
        """The one error the first trials all failed with, if REPEATED_FAILURES of them did."""
        first = self.first_errors[:REPEATED_FAILURES]
        if len(first) == REPEATED_FAILURES and len(set(first)) == 1:
            return first[0]
        return None

    def _count(self, status: str, error: str | None, *, raised: bool) -> None:
        if status != "failed":
            self.finished += 1
            return
        self.failures += 1
        if raised and not self.finished:
            self.first_errors.append(error_line(error))

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles its callbacks into the experiment state; the database connection and the
        # watcher stay with the driver (resume starts a new Tuner, see runner.py).
        return {**self.__dict__, "store": None, "on_event": None}

    def _emit(self, event: TrialEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def on_trial_start(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        key = trial_key(trial.config)
        method = str(trial.config["method"])  # no need to split the whole config
        self._attempts.setdefault(key, 1)
        self.store.upsert_trial(
            self.search_name,
            key,
            number=trial_number_of(trial.config),
            method=method,
            config=flat_of(trial.config),
            status="running",
            attempts=self._attempts[key],
        )
        self._emit(TrialEvent("started", key, method, trial.config))

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        if result.get("error"):
            return  # a failed outcome, recorded by on_trial_complete
        key = trial_key(trial.config)
        record_epoch(self.store, self.search_name, key, result)
        method = str(trial.config["method"])  # no need to split the whole config
        self._emit(
            TrialEvent(
                "epoch",
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
            # ``raised``: the trial's code raised (a repeated one stops the search); else its
            # loss diverged, a property of that configuration alone.
            raised = bool(result.get("raised"))
            self._finish(trial, "failed", result, error=str(result["error"]), raised=raised)
            return
        status = "completed" if finished_training(result) else "pruned"
        self._finish(trial, status, result, error=None, raised=False)

    def on_trial_recover(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        """Tune restarts the trial (its worker or node died); it resumes from its checkpoint."""
        key = trial_key(trial.config)
        self._attempts[key] = self._attempts.get(key, 1) + 1
        self.store.upsert_trial(
            self.search_name,
            key,
            status="running",
            attempts=self._attempts[key],
            error=_error_text(trial),
        )

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._finish(
            trial, "failed", trial.last_result or {}, error=_error_text(trial), raised=True
        )

    def _finish(
        self, trial: Trial, status: str, result: dict, error: str | None, *, raised: bool
    ) -> None:
        self._count(status, error, raised=raised)
        key = trial_key(trial.config)
        method = str(trial.config["method"])  # no need to split the whole config
        val_acc = result.get("val_acc")
        record_outcome(self.store, self.search_name, key, status, result, error)
        self._emit(
            TrialEvent(
                status,
                key,
                method,
                trial.config,
                val_acc,
                result.get("tunable_params"),
                result.get("epoch"),
                error,
            )
        )


class FailureStopper(Stopper):
    """Stop the whole Tuner run once ``limit`` trials have failed (``--max-failed``), or once
    the first trials have all failed with one error (:attr:`StoreRecorder.repeated_error`)."""

    def __init__(self, recorder: StoreRecorder, limit: int) -> None:
        self.recorder = recorder
        self.limit = limit

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.recorder.failures >= self.limit or self.recorder.repeated_error is not None


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
