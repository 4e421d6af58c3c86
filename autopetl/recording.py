"""Every writer of trial records, side by side: the one place that decides what a trial's row
holds, whoever ran it.

- a search's trials: :func:`record_epoch` and :func:`record_outcome`, called by the Ray Tune
  callback (autopetl/search/recorder.py, which keeps only the Tune side: events and counts);
- an ``autopetl train`` run, recorded as a one-trial search: :class:`TrainRecorder`;
- an evaluation's runs and their weights: :func:`record_run`;
- one builder of the cost dict (:func:`cost_of`) for all three.

Only autopetl/store runs SQL; this module decides what to write. No Ray, no Optuna.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from autopetl.objectives import MEASURES
from autopetl.trial import TrialConfig

if TYPE_CHECKING:
    from autopetl.evaluation import EvaluationRun
    from autopetl.store import Store
    from autopetl.training import EpochMetrics, TrainResult

log = logging.getLogger(__name__)

# What a trial's cost dict keeps (the store also puts the first three in columns of their own).
COST_KEYS = (
    "wall_time_s",
    "images_per_s",
    "peak_memory_mb",
    "device",
    "precision",
    "node_id",
    "worker_pid",
    "worker_ready_at",
)
TEST_SPLIT = "test"


def cost_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """The cost dict of a trial from its final result (a Tune result or a TrainResult's dict)."""
    return {k: result[k] for k in COST_KEYS if result.get(k) is not None}


def record_epoch(store: Store, search: str, key: str, result: Mapping[str, Any]) -> None:
    """One epoch a search's trial reported: its row in epochs and the trial's running values."""
    store.upsert_epoch(
        search,
        key,
        int(result["epoch"]),
        train_loss=result.get("train_loss"),
        val_acc=result.get("val_acc"),
        lr=result.get("lr"),
        seconds=result.get("seconds"),
    )
    store.upsert_trial(
        search,
        key,
        val_acc=result.get("val_acc"),
        last_val_acc=result.get("val_acc"),
        tunable_params=result.get("tunable_params"),
        tunable_params_without_head=result.get("tunable_params_without_head"),
        measures={m: result.get(m) for m in MEASURES},
    )


def record_outcome(
    store: Store, search: str, key: str, status: str, result: Mapping[str, Any], error: str | None
) -> None:
    """How a search's trial ended (completed, pruned, failed), from its last result."""
    cost = cost_of(result)
    store.upsert_trial(
        search,
        key,
        status=status,
        val_acc=result.get("val_acc"),
        last_val_acc=result.get("val_acc"),
        best_epoch=result.get("best_epoch"),
        tunable_params=result.get("tunable_params"),
        tunable_params_without_head=result.get("tunable_params_without_head"),
        measures={m: result.get(m) for m in MEASURES},
        cost=cost or None,
        error=error,
    )


def record_run(store: Store, run: EvaluationRun) -> None:
    """Write one run to the store: its evaluation row and, if it succeeded, its weights."""
    job = run.job
    store.upsert_evaluation(
        job.search_name,
        job.trial_key,
        seed=job.seed,
        split=TEST_SPLIT,
        test_acc=run.test_acc,
        metrics=run.metrics,
    )
    if run.error is None:
        store.upsert_artifact(
            job.search_name,
            job.trial_key,
            f"weights-seed{job.seed}",
            job.artifact_dir,
            sha256=run.artifact_sha256,
            size_bytes=run.artifact_bytes,
        )


def default_run_name(task: str, method: str) -> str:
    """``train-<task>-<method>-<local time>-<4 hex>``: unique even for runs in the same second."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"train-{task.replace('/', '-')}-{method}-{stamp}-{uuid.uuid4().hex[:4]}"


class TrainRecorder:
    """Records one ``autopetl train`` run as a one-trial search (trial key ``"0"``).

    Life cycle: :meth:`open` before any work (a bad ``--db`` fails at once), :meth:`begin` just
    before training, :meth:`epoch` per epoch, and the training inside :meth:`recording`, which
    records a failure (then re-raises it) and closes the store; :meth:`completed` at the end.
    """

    TRIAL_KEY = "0"

    def __init__(self, store: Store, name: str, task: str, method: str) -> None:
        self.store = store
        self.name = name
        self.task = task
        self.method = method

    @classmethod
    def open(cls, db: str | None, name: str | None, *, task: str, method: str) -> TrainRecorder:
        from autopetl.store import StoreError, open_store

        store = open_store(db)
        name = name or default_run_name(task, method)
        if store.get_search(name) is not None:
            store.close()
            raise StoreError(f"a search named {name!r} already exists; pick another --name")
        return cls(store, name, task, method)

    def begin(
        self,
        *,
        method_config: dict[str, Any],
        backbone: dict[str, Any],
        train_config: dict[str, Any],
        options: dict[str, Any],
    ) -> None:
        # Claimed atomically: `open` checked the name early for a quick error, but two runs
        # started at once both pass that check (and once shared one row, B's config with A's
        # accuracy); here exactly one of them gets the name, before either trains.
        self.store.upsert_search(
            self.name,
            self.task,
            "train",
            {},
            backbone,
            budget=1,
            options={"command": "train", "train_config": train_config, **options},
            create_only=True,
        )
        # Recorded flat, as a search's trials are; what is not a searched option (seed,
        # precision, device) is kept with the run's options.
        config = TrialConfig(self.method, method_config, train_config).flat()
        self.store.upsert_trial(
            self.name, self.TRIAL_KEY, number=0, method=self.method, config=config, status="running"
        )

    def epoch(self, m: EpochMetrics) -> None:
        self.store.upsert_epoch(
            self.name, self.TRIAL_KEY, m.epoch, m.train_loss, m.val_acc, m.lr, m.seconds
        )

    def completed(self, result: TrainResult, measures: Mapping[str, float] | None = None) -> None:
        """The run finished: its results, costs and measured objectives (inference GFLOPs)."""
        cost = cost_of(dataclasses.asdict(result))
        self.store.upsert_trial(
            self.name,
            self.TRIAL_KEY,
            status="completed",
            val_acc=result.last_val_acc,  # the objective a search ranks by, see docs/STORE.md
            last_val_acc=result.last_val_acc,
            best_epoch=result.best_epoch,
            tunable_params=result.tunable_params,
            tunable_params_without_head=result.tunable_params_without_head,
            measures={m: (measures or {}).get(m) for m in MEASURES},
            cost=cost,
            epochs_done=len(result.epochs),
        )
        self.store.set_search_status(self.name, "completed")

    def failed(self, exc: BaseException) -> None:
        """Record the trial as failed; never raises (the training error is what matters)."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        try:
            error = "interrupted" if interrupted else f"{type(exc).__name__}: {exc}"
            self.store.upsert_trial(self.name, self.TRIAL_KEY, status="failed", error=error)
            self.store.set_search_status(self.name, "interrupted" if interrupted else "failed")
        except Exception:
            log.exception("could not record the failed run %s", self.name)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record a failure of the block (then re-raise it); close the store either way."""
        try:
            yield
        except BaseException as exc:
            self.failed(exc)
            raise
        finally:
            self.store.close()
