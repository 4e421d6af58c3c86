"""Replay many searches on recorded learning curves: one shared run against one after another.

A multi-task command runs one search per task. ``autopetl search`` used to run them one after
another, each on every worker, and each ended in a tail where most workers waited for its last
trials; now every search runs inside one Ray Tune run
(:class:`~autopetl.search.multi_searcher.MultiStudySearcher` with a
:class:`~autopetl.search.schedulers.PerSearchScheduler`), and a free worker takes a trial of
whichever search still has trials to start. This module replays both on learning-curve tables
(:mod:`autopetl.search.replay`), with the classes the run uses, to measure what sharing buys:

- ``shared=True``: one MultiStudySearcher over one ParetoOptunaSearch per study, one
  PerSearchScheduler over one scheduler per study, on ``workers`` simulated workers;
- ``shared=False``: each study alone on all ``workers`` (a MultiStudySearcher of one, the same
  engine), one after another; the makespan is the sum of theirs.

The clock and the call order are :func:`~autopetl.search.replay.replay`'s: an epoch ends its
recorded seconds after it began, the scheduler hears of it then, and a trial that ends is told to
the scheduler, then to the searcher. A budget is trials *finished* (completed or pruned), as
``autopetl search --budget`` counts them, not compute. A free worker asks the searcher for a
trial; ``None`` (every trial its budgets allow is running) leaves it idle until the next event.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from autopetl.errors import ConfigError
from autopetl.objectives import DEFAULT_OBJECTIVES, OBJECTIVES
from autopetl.search.multi_searcher import MultiStudySearcher, StudyBudget
from autopetl.search.replay import Curve, CurveTable, Strategy, config_key, front, reference_point
from autopetl.search.samplers import make_sampler
from autopetl.search.schedulers import PerSearchScheduler, make_scheduler
from autopetl.search.searcher import ParetoOptunaSearch
from autopetl.store import hypervolume
from autopetl.store.queries import Point
from autopetl.trial import SEARCH_KEY

# Tables record 16-class tasks (dSprites location and orientation bins); search_quality.py reads
# the same default when a table file does not say.
DEFAULT_NUM_CLASSES = 16


@dataclass(frozen=True)
class TrialRun:
    """One trial of a replay: its study, when it held a worker, and how it ended."""

    study: str
    number: int  # order of start within the replay (the engine call)
    config_key: str
    start: float  # simulated seconds since the run began
    end: float
    status: str  # completed or pruned
    epochs: int
    val_acc: float
    tunable_params: int


@dataclass
class ManyResult:
    """A replay of several studies on shared workers, or of each alone one after another.

    Attributes:
        strategy: The sampler and scheduler every study used.
        workers: Simulated workers.
        shared: One run for all studies (True) or one after another (False).
        constant_liar: Whether TPE counted running trials as the worst outcome.
        studies: Study names, in order (each is ``NN:table``).
        seeds: Each study's sampler seed.
        references: Each study's hypervolume reference point, by study.
        trials: Every finished trial, in the order they ended.
        makespan: Simulated seconds from the first trial's start to the last one's end.
        busy: Busy workers over time: ``(time, busy workers from then on)`` steps.
    """

    strategy: Strategy
    workers: int
    shared: bool
    constant_liar: bool
    studies: list[str]
    seeds: list[int]
    references: dict[str, Point]
    trials: list[TrialRun]
    makespan: float
    busy: list[tuple[float, int]] = field(repr=False)

    @property
    def busy_seconds(self) -> float:
        """Worker-seconds spent training (every epoch of every trial, pruned ones included)."""
        return sum(t.end - t.start for t in self.trials)

    @property
    def busy_share(self) -> float:
        """Busy worker-seconds over ``workers x makespan``: 1.0 is no worker ever idle."""
        return self.busy_seconds / (self.workers * self.makespan) if self.makespan else 0.0

    def finished(self, study: str) -> int:
        return sum(t.study == study for t in self.trials)

    def front(self, study: str) -> list[Point]:
        """The study's reported front: its completed trials only (pruned ones never trained out)."""
        return front(
            (t.val_acc, float(t.tunable_params))
            for t in self.trials
            if t.study == study and t.status == "completed"
        )

    def hypervolume(self, study: str) -> float:
        return hypervolume(self.front(study), self.references[study])

    def hypervolumes(self) -> dict[str, float]:
        """Each study's final hypervolume, by study."""
        return {s: self.hypervolume(s) for s in self.studies}


@dataclass
class _Trial:
    """What Ray Tune's schedulers read of a trial: its id, and its config (PerSearchScheduler
    routes on the search name the searcher wrote into it)."""

    trial_id: str
    config: dict[str, Any]


@dataclass
class _Running:
    trial: _Trial
    study: str
    curve: Curve
    number: int
    start: float


@dataclass(frozen=True)
class _Study:
    name: str
    table: CurveTable
    seed: int


def study_names(tables: Sequence[CurveTable]) -> list[str]:
    """Distinct names for studies that may share a table: their place, then the table's name."""
    return [f"{i:02d}:{t.name}" for i, t in enumerate(tables)]


def replay_many(
    tables: Sequence[CurveTable],
    strategy: Strategy,
    *,
    seeds: Sequence[int],
    workers: int,
    budget: int,
    shared: bool = True,
    constant_liar: bool = True,
    num_classes: int = DEFAULT_NUM_CLASSES,
) -> ManyResult:
    """Replay one study per table (a table may appear several times) on ``workers`` workers.

    Args:
        tables: Each study's learning-curve table.
        strategy: Sampler and scheduler (with its settings), the same for every study.
        seeds: Each study's sampler seed (one per table).
        workers: Simulated workers.
        budget: Trials each study must finish (completed or pruned).
        shared: All studies in one run (the multi-task run), or each alone one after another.
        constant_liar: TPE's constant liar (ignored by the other samplers).
        num_classes: Chance accuracy 1/num_classes is the hypervolume reference's accuracy.

    Returns:
        The trials, makespan and busy workers over time of the whole replay.
    """
    if workers < 1 or budget < 1:
        raise ConfigError(f"workers and budget must be at least 1, got {workers} and {budget}")
    if len(seeds) != len(tables) or not tables:
        raise ConfigError(f"one seed per table: {len(tables)} tables, {len(seeds)} seeds")
    studies = [_Study(n, t, s) for n, t, s in zip(study_names(tables), tables, seeds, strict=True)]
    groups = [studies] if shared else [[s] for s in studies]
    trials: list[TrialRun] = []
    busy: list[tuple[float, int]] = []
    offset = 0.0
    for group in groups:  # one after another: each starts when the one before has ended
        ran, makespan, steps = _simulate(
            group, strategy, workers=workers, budget=budget, constant_liar=constant_liar
        )
        trials += [_shifted(t, offset) for t in ran]
        busy += [(offset + time, n) for time, n in steps]
        offset += makespan
    return ManyResult(
        strategy,
        workers,
        shared,
        constant_liar,
        [s.name for s in studies],
        list(seeds),
        # Per table, as search_quality.py measures a table alone: studies on one table compare.
        {s.name: reference_point([s.table], num_classes) for s in studies},
        trials,
        offset,
        _merged(busy),
    )


def _simulate(
    studies: Sequence[_Study],
    strategy: Strategy,
    *,
    workers: int,
    budget: int,
    constant_liar: bool,
) -> tuple[list[TrialRun], float, list[tuple[float, int]]]:
    """The engine of both modes: ``studies`` in one run on ``workers`` workers, as the multi-task
    run drives them. Returns the finished trials, the makespan and the busy-worker steps."""
    # Ray's ASHA draws its bracket from numpy's global generator; seeding with the first study's
    # seed makes a study alone replay the same whether or not it is part of a sequential run.
    random.seed(studies[0].seed)
    np.random.seed(studies[0].seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metrics = list(DEFAULT_OBJECTIVES)
    modes: list[str] = [OBJECTIVES[m].direction for m in DEFAULT_OBJECTIVES]
    searcher = MultiStudySearcher(
        {
            s.name: ParetoOptunaSearch(
                space=s.table.space,
                metric=metrics,
                mode=modes,
                sampler=make_sampler(
                    strategy.sampler,
                    s.table.space,
                    s.seed,
                    constant_liar=constant_liar,
                    replay=True,
                ),
            )
            for s in studies
        },
        # No trial fails in a replay, so max_failed never binds.
        [StudyBudget(s.name, budget, max_failed=budget) for s in studies],
    )
    scheduler = PerSearchScheduler(
        {
            s.name: make_scheduler(
                strategy.scheduler,
                max_t=s.table.epochs,
                metrics=metrics,
                modes=modes,
                log_metrics=["tunable_params"],
                grace_period=strategy.grace_period,
                reduction_factor=strategy.reduction_factor,
            )
            for s in studies
        }
    )
    tables = {s.name: s.table for s in studies}
    events: list[tuple[float, int, str, int]] = []  # (time, order, trial id, epoch)
    running: dict[str, _Running] = {}
    finished: list[TrialRun] = []
    steps: list[tuple[float, int]] = [(0.0, 0)]
    now, started, order, done = 0.0, 0, 0, False
    while True:
        while not done and len(running) < workers:
            trial_id = f"replay_{started:05d}"
            config = searcher.suggest(trial_id)
            if config is None:
                break  # every trial the budgets allow is running: idle until one ends
            if config == Searcher.FINISHED:
                done = True
                break
            assert isinstance(config, dict)
            study = config[SEARCH_KEY]
            curve = tables[study].lookup(config)
            trial = _Trial(trial_id, config)
            scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
            running[trial_id] = _Running(trial, study, curve, started, now)
            heapq.heappush(events, (now + curve.seconds[0], order, trial_id, 1))
            started += 1
            order += 1
        steps.append((now, len(running)))
        if not events:
            break
        now, _, trial_id, epoch = heapq.heappop(events)
        run = running[trial_id]
        curve = run.curve
        result = curve.result(epoch)
        decision = scheduler.on_trial_result(None, run.trial, result)  # type: ignore[arg-type]
        searcher.on_trial_result(trial_id, result)
        if epoch < curve.epochs and decision != TrialScheduler.STOP:
            heapq.heappush(events, (now + curve.seconds[epoch], order, trial_id, epoch + 1))
            order += 1
            continue
        scheduler.on_trial_complete(None, run.trial, result)  # type: ignore[arg-type]
        searcher.on_trial_complete(trial_id, result)
        del running[trial_id]
        finished.append(
            TrialRun(
                run.study,
                run.number,
                config_key(run.trial.config),
                run.start,
                now,
                "completed" if epoch == curve.epochs else "pruned",
                epoch,
                curve.val_acc[epoch - 1],
                curve.tunable_params,
            )
        )
    unmet = [b.name for b in searcher.budgets if not b.met]
    if unmet:  # a grid smaller than the budget stops its study early; say so, do not hide it
        raise ConfigError(
            f"studies {', '.join(unmet)} stopped before their budget of {budget} trials "
            "(a grid sampler has fewer configurations than the budget)"
        )
    return finished, now, steps


def _shifted(trial: TrialRun, offset: float) -> TrialRun:
    if not offset:
        return trial
    return TrialRun(
        trial.study,
        trial.number,
        trial.config_key,
        trial.start + offset,
        trial.end + offset,
        trial.status,
        trial.epochs,
        trial.val_acc,
        trial.tunable_params,
    )


def _merged(steps: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Steps with one entry per change: the last count at a time wins, repeats are dropped."""
    out: list[tuple[float, int]] = []
    for time, n in steps:
        if out and out[-1][0] == time:
            out.pop()
        if not out or out[-1][1] != n:
            out.append((time, n))
    return out


def busy_at(steps: Sequence[tuple[float, int]], times: Sequence[float]) -> list[int]:
    """Busy workers at each of ``times`` (ascending), from :attr:`ManyResult.busy` steps."""
    out, i, current = [], 0, 0
    for time in times:
        while i < len(steps) and steps[i][0] <= time:
            current = steps[i][1]
            i += 1
        out.append(current)
    return out
