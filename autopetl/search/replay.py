"""Replay a search strategy on recorded learning curves instead of training.

A learning-curve table is a recorded search over a finite space in which every trial trained to
its last epoch (``--scheduler none``): for each configuration, its val accuracy and seconds per
epoch and its tunable parameters. Replaying a strategy on it is how Syne Tune's simulator backend
and the tabular benchmarks (HPOBench, LCBench, YAHPO Gym) compare optimisers: the real sampler
proposes, the real scheduler continues or stops each trial as its recorded curve unfolds, and a
simulated clock with ``workers`` parallel workers charges every epoch its recorded seconds, so
hundreds of trials replay in seconds, deterministically for a seed.

The classes are those ``autopetl search`` runs: :class:`~autopetl.search.searcher.ParetoOptunaSearch`
with a sampler from :func:`~autopetl.search.samplers.make_sampler`, and a scheduler from
:func:`~autopetl.search.schedulers.make_scheduler`. They are called in the order Ray Tune's
``TuneController`` calls them (the scheduler first, the searcher's ``on_trial_complete`` once a
trial ends), with a plain record in place of Tune's ``Trial``: the schedulers read only its
``trial_id``. The replay is of one seed of training: a configuration proposed twice gets the same
curve, and its cost is charged twice, as a real search would pay it.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import TrialScheduler

from autopetl.errors import ConfigError
from autopetl.objectives import DEFAULT_OBJECTIVES, OBJECTIVES
from autopetl.search.schedulers import SeedsToTheEnd, make_scheduler
from autopetl.search.searcher import ParetoOptunaSearch
from autopetl.search.space import SearchSpace, parse_space
from autopetl.search.warm_start import optuna_params
from autopetl.store import hypervolume, non_dominated
from autopetl.store.queries import Point
from autopetl.trial import flat_key

TABLE_FORMAT = "autopetl-learning-curves/1"


def config_key(config: dict[str, Any]) -> str:
    """A configuration's identity in a table: its parameters, bookkeeping keys left out."""
    return flat_key(config)


@dataclass(frozen=True)
class Curve:
    """One configuration's recorded training: per-epoch val accuracy and seconds."""

    config: dict[str, Any]
    tunable_params: int
    val_acc: tuple[float, ...]
    seconds: tuple[float, ...]

    @property
    def epochs(self) -> int:
        return len(self.val_acc)

    def result(self, epoch: int) -> dict[str, Any]:
        """What the trainable reports to Tune after ``epoch`` (1-based) of this curve."""
        return {
            "training_iteration": epoch,
            "epoch": epoch,
            "epochs": self.epochs,
            "val_acc": self.val_acc[epoch - 1],
            "tunable_params": self.tunable_params,
        }


@dataclass
class CurveTable:
    """The curves of one finite space, recorded on one task, backbone and input size."""

    name: str
    space: SearchSpace
    curves: list[Curve]
    meta: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, Curve] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {config_key(c.config): c for c in self.curves}
        epochs = {c.epochs for c in self.curves}
        if len(epochs) > 1:
            raise ConfigError(
                f"table {self.name!r}: every curve must run the same epochs, got {sorted(epochs)}"
            )

    @property
    def epochs(self) -> int:
        return self.curves[0].epochs if self.curves else 0

    def lookup(self, config: dict[str, Any]) -> Curve:
        curve = self._index.get(config_key(config))
        if curve is None:
            raise ConfigError(
                f"table {self.name!r} has no curve for {config_key(config)}: replay only the "
                "space the table was recorded on"
            )
        return curve

    def cost(self) -> float:
        """Seconds to train every configuration to its last epoch (the whole grid)."""
        return sum(sum(c.seconds) for c in self.curves)

    def points(self) -> list[Point]:
        """(final val accuracy, tunable parameters) of every configuration."""
        return [(c.val_acc[-1], float(c.tunable_params)) for c in self.curves]

    def front(self) -> list[Point]:
        """The table's true front: what training every configuration to the end finds."""
        return front(self.points())

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space.source,
            "meta": self.meta,
            "curves": [
                {
                    "config": c.config,
                    "tunable_params": c.tunable_params,
                    "val_acc": list(c.val_acc),
                    "seconds": list(c.seconds),
                }
                for c in self.curves
            ],
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> CurveTable:
        space = parse_space(data["space"], name=name, where=f"table {name}")
        curves = [
            Curve(
                c["config"],
                int(c["tunable_params"]),
                tuple(float(v) for v in c["val_acc"]),
                tuple(float(s) for s in c["seconds"]),
            )
            for c in data["curves"]
        ]
        return cls(name, space, curves, dict(data.get("meta", {})))


def save_tables(path: Path, tables: dict[str, CurveTable], meta: dict[str, Any]) -> None:
    body = {
        "format": TABLE_FORMAT,
        **meta,
        "tables": {name: t.to_dict() for name, t in tables.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=1, sort_keys=False) + "\n")


def load_tables(path: Path) -> tuple[dict[str, CurveTable], dict[str, Any]]:
    """The tables in a file written by :func:`save_tables`, and the file's metadata."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read learning-curve table {path}: {exc}") from exc
    if data.get("format") != TABLE_FORMAT:
        raise ConfigError(f"{path} is not a learning-curve table (format {TABLE_FORMAT})")
    tables = {name: CurveTable.from_dict(name, t) for name, t in data["tables"].items()}
    meta = {k: v for k, v in data.items() if k not in ("format", "tables")}
    return tables, meta


# --- the replay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strategy:
    """A search strategy: a sampler and a scheduler with its settings."""

    sampler: str
    scheduler: str
    grace_period: int = 1
    reduction_factor: float = 3

    @property
    def label(self) -> str:
        extra = (
            f" g{self.grace_period} rf{self.reduction_factor:g}"
            if self.scheduler != "none" and (self.grace_period, self.reduction_factor) != (1, 3)
            else ""
        )
        return f"{self.sampler}+{self.scheduler}{extra}"


@dataclass(frozen=True)
class Finished:
    """A trial as the replayed search finished it."""

    number: int
    config_key: str
    status: str  # completed or pruned
    epochs: int
    val_acc: float
    tunable_params: int
    end_time: float  # simulated seconds since the search began
    compute: float  # worker-seconds spent by all trials when it ended


@dataclass
class ReplayResult:
    strategy: Strategy
    seed: int
    workers: int
    trials: list[Finished]

    def front_at(self, compute: float = math.inf) -> list[Point]:
        """The reported front once ``compute`` worker-seconds were spent: completed trials only."""
        return front(
            (t.val_acc, float(t.tunable_params))
            for t in self.trials
            if t.status == "completed" and t.compute <= compute
        )

    def hypervolume_curve(self, reference: Point, levels: Sequence[float]) -> list[float]:
        """Hypervolume of the reported front at each compute level (ascending)."""
        completed = sorted(
            (t for t in self.trials if t.status == "completed"), key=lambda t: t.compute
        )
        out: list[float] = []
        current: list[Point] = []
        i = 0
        for level in levels:
            arrived = []
            while i < len(completed) and completed[i].compute <= level:
                arrived.append((completed[i].val_acc, float(completed[i].tunable_params)))
                i += 1
            if arrived or not out:
                current = front([*current, *arrived])  # the front so far is all that counts
                out.append(hypervolume(current, reference))
            else:
                out.append(out[-1])
        return out


def reference_point(tables: Iterable[CurveTable], num_classes: int) -> Point:
    """The fixed corner hypervolumes on these tables are measured from: chance accuracy, and 10x
    the largest parameter count rounded up to a power of ten (so every point adds area)."""
    largest = max(c.tunable_params for t in tables for c in t.curves)
    return 1.0 / num_classes, float(10 ** math.ceil(math.log10(10 * largest)))


def front(points: Iterable[Point]) -> list[Point]:
    """The distinct non-dominated (val accuracy, parameters) points, fewest parameters first."""
    unique = sorted(set(points), key=lambda p: (p[1], -p[0]))
    return non_dominated(unique, unique)


@dataclass
class _Trial:
    """What Ray Tune's schedulers read of a trial."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)


def replay(
    table: CurveTable,
    strategy: Strategy,
    *,
    seed: int,
    workers: int,
    max_compute: float,
    max_trials: int = 100_000,
    warm_start: Sequence[dict[str, Any]] = (),
    seeds_to_the_end: bool = True,
) -> ReplayResult:
    """Run ``strategy`` on ``table`` until ``max_compute`` worker-seconds are spent; a
    ``warm_start`` is enqueued first and, with ``seeds_to_the_end`` (what ``autopetl search
    --warm-start`` does), never stopped early.

    Each worker trains one trial at a time; an epoch ends ``seconds`` after it began, and the
    scheduler hears of it then. A trial that would start after the budget is spent is not
    started; trials running when it runs out end there (their last epochs are not counted).
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    # Ray's ASHA draws its bracket from numpy's global generator; seed everything a run touches.
    random.seed(seed)
    np.random.seed(seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from autopetl.search.samplers import make_sampler

    searcher = ParetoOptunaSearch(
        space=table.space,
        metric=list(DEFAULT_OBJECTIVES),
        mode=[OBJECTIVES[m].direction for m in DEFAULT_OBJECTIVES],
        sampler=make_sampler(strategy.sampler, table.space, seed, replay=True),
        points_to_evaluate=[optuna_params(table.space, c) for c in warm_start] or None,
    )
    scheduler = make_scheduler(
        strategy.scheduler,
        max_t=table.epochs,
        metrics=list(DEFAULT_OBJECTIVES),
        modes=[OBJECTIVES[m].direction for m in DEFAULT_OBJECTIVES],
        log_metrics=["tunable_params"],
        grace_period=strategy.grace_period,
        reduction_factor=strategy.reduction_factor,
    )
    if warm_start and seeds_to_the_end:  # as `autopetl search --warm-start` schedules them
        scheduler = SeedsToTheEnd(scheduler, warm_start)
    if strategy.sampler == "grid":  # each configuration once, as `autopetl search` budgets it
        max_trials = min(max_trials, len(table.space.configurations()))
    events: list[tuple[float, int, str, int]] = []  # (time, order, trial id, epoch)
    running: dict[str, tuple[Curve, int, str, _Trial]] = {}  # id -> (curve, number, key, trial)
    finished: list[Finished] = []
    now, spent, started, order = 0.0, 0.0, 0, 0
    while True:
        while len(running) < workers and started < max_trials and spent < max_compute:
            trial_id = f"replay_{started:05d}"
            config = searcher.suggest(trial_id)
            if config is None:
                break
            curve = table.lookup(config)
            trial = _Trial(trial_id, config)
            scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
            running[trial_id] = (curve, started, config_key(config), trial)
            heapq.heappush(events, (now + curve.seconds[0], order, trial_id, 1))
            started += 1
            order += 1
        if not events:
            break
        end, _, trial_id, epoch = heapq.heappop(events)
        curve, number, key, trial = running[trial_id]
        epoch_cost = curve.seconds[epoch - 1]
        if spent + epoch_cost > max_compute:
            break  # the budget ends during this epoch: nothing more is learnt
        now, spent = end, spent + epoch_cost
        result = curve.result(epoch)
        decision = scheduler.on_trial_result(None, trial, result)  # type: ignore[arg-type]
        if epoch < curve.epochs and decision != TrialScheduler.STOP:
            heapq.heappush(events, (now + curve.seconds[epoch], order, trial_id, epoch + 1))
            order += 1
            continue
        scheduler.on_trial_complete(None, trial, result)  # type: ignore[arg-type]
        searcher.on_trial_complete(trial_id, result)
        del running[trial_id]
        finished.append(
            Finished(
                number,
                key,
                "completed" if epoch == curve.epochs else "pruned",
                epoch,
                curve.val_acc[epoch - 1],
                curve.tunable_params,
                now,
                spent,
            )
        )
    return ReplayResult(strategy, seed, workers, finished)
