"""Trial schedulers: which trials train on and which stop early.

``mo-asha`` is multi-objective asynchronous successive halving (Schmucker et al. 2021,
"Multi-objective multi-fidelity hyperparameter optimization with application to fairness";
Salinas et al. 2021; Syne Tune's ``MOASHA``): the rungs of ASHA, but a trial is promoted when its
*non-dominated rank* on (val accuracy at the rung, tunable parameters) is in the top
1/reduction_factor of the trials recorded at that rung, instead of when its accuracy alone is.
ASHA on accuracy alone stops the cheap configurations first (a linear probe, one prompt, LoRA
rank 1), although they belong on the accuracy/parameters front the search reports.

Both ``autopetl search`` and the replay benchmark (:mod:`autopetl.search.replay`) build their
schedulers here, so the benchmark measures the classes the search runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from autopetl.errors import ConfigError
from autopetl.search.defaults import DEFAULT_GRACE_PERIOD, DEFAULT_REDUCTION_FACTOR, SCHEDULERS
from autopetl.trial import flat_key, search_of, trial_number_of


def nondominated_order(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of ``points`` (every objective minimised) best first.

    Sorted by non-dominated front (NSGA-II's rank), and within a front by a greedy epsilon-net
    (Clarkson 2005, as Syne Tune's ``nondominated_sort``): the first point is the front's best on
    the first objective, each next one the farthest from those already taken, on objectives
    scaled to [0, 1] over all points. A front's spread is kept when only some of it is promoted.
    Deterministic: ties keep the order of ``points``.
    """
    x = np.asarray(points, dtype=float)
    if x.size == 0:
        return []
    span = x.max(axis=0) - x.min(axis=0)
    scaled = (x - x.min(axis=0)) / np.where(span > 0, span, 1.0)
    # dominated_by[i, j]: j dominates i (no worse everywhere, better somewhere). O(n^2) in numpy:
    # MO-ASHA calls this once per result, with every trial recorded at a rung.
    le = np.all(x[None, :, :] <= x[:, None, :], axis=2)
    lt = np.any(x[None, :, :] < x[:, None, :], axis=2)
    dominated_by = le & lt
    remaining = np.ones(len(x), dtype=bool)
    order: list[int] = []
    while remaining.any():
        front = np.flatnonzero(remaining & ~(dominated_by[:, remaining].any(axis=1)))
        # Positions within the front: the best on the first objective, then each time the point
        # farthest from all taken ones (argmax takes the earlier of ties).
        pick = int(np.lexsort((front, x[front, 0]))[0])
        taken = [pick]
        nearest = np.linalg.norm(scaled[front] - scaled[front[pick]], axis=1)
        nearest[pick] = -1.0
        for _ in range(len(front) - 1):
            pick = int(np.argmax(nearest))
            taken.append(pick)
            nearest = np.minimum(
                nearest, np.linalg.norm(scaled[front] - scaled[front[pick]], axis=1)
            )
            nearest[taken] = -1.0
        taken = [int(front[i]) for i in taken]
        order.extend(taken)
        remaining[front] = False
    return order


class MOASHAScheduler(FIFOScheduler):
    """Asynchronous successive halving by non-dominated rank (see the module docstring).

    One bracket. Rung levels are ``grace_period * reduction_factor**k`` below ``max_t``. When a
    trial first reports at or past a rung level, its objectives are recorded at that rung and it
    goes on only if its 0-based place in :func:`nondominated_order` over the rung's records
    (itself included), divided by their number, is at most ``1 / reduction_factor``; a trial that
    is the first to reach a rung goes on. Decisions are final, as in ASHA: a stopped trial is never resumed.

    Args:
        metrics: Result keys of the objectives, e.g. ``["val_acc", "tunable_params"]``.
        modes: ``max`` or ``min`` for each metric.
        log_metrics: Metrics compared on a log10 scale (parameter counts span five decades; on a
            linear scale every small configuration would look alike).
        time_attr: The result key that counts progress (Tune's ``training_iteration``: epochs).
        max_t: Trials stop here (the last epoch).
        grace_period: The first rung.
        reduction_factor: Keep the top 1/reduction_factor at each rung.
    """

    def __init__(
        self,
        metrics: Sequence[str],
        modes: Sequence[str],
        *,
        log_metrics: Sequence[str] = (),
        time_attr: str = "training_iteration",
        max_t: int = 10,
        grace_period: int = 1,
        reduction_factor: float = 3,
    ) -> None:
        if len(metrics) != len(modes) or not all(m in ("max", "min") for m in modes):
            raise ConfigError("MO-ASHA needs one mode, max or min, per metric")
        if not 0 < grace_period <= max_t or reduction_factor <= 1:
            raise ConfigError(
                "MO-ASHA needs 0 < grace_period <= max_t and a reduction factor above 1"
            )
        super().__init__()
        self._metrics = list(metrics)
        self._signs = [-1.0 if m == "max" else 1.0 for m in modes]  # everything minimised
        self._log = {m for m in log_metrics}
        self._time_attr = time_attr
        self._max_t = max_t
        self._rf = float(reduction_factor)
        levels = []
        level = float(grace_period)
        while level < max_t:
            levels.append(level)
            level *= self._rf
        # rung level -> {trial id: objectives (minimised)}
        self._rungs: dict[float, dict[str, list[float]]] = {lv: {} for lv in levels}
        self._num_stopped = 0

    def _objectives(self, result: dict[str, Any]) -> list[float] | None:
        values = []
        for metric, sign in zip(self._metrics, self._signs, strict=True):
            value = result.get(metric)
            if value is None or not math.isfinite(float(value)):
                return None
            value = float(value)
            if metric in self._log:
                value = math.log10(max(value, 1.0))
            values.append(sign * value)
        return values

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        progress = result.get(self._time_attr)
        if progress is None:
            return TrialScheduler.CONTINUE
        if progress >= self._max_t:
            return TrialScheduler.STOP
        objectives = self._objectives(result)
        if objectives is None:
            return TrialScheduler.CONTINUE  # nothing to rank by (an error result): Tune decides
        action = TrialScheduler.CONTINUE
        # The highest rung this result reaches that the trial has not been ranked at yet.
        for level in sorted(self._rungs, reverse=True):
            recorded = self._rungs[level]
            if progress < level or trial.trial_id in recorded:
                continue
            if recorded:
                ids = [*recorded, trial.trial_id]
                order = nondominated_order([*recorded.values(), objectives])
                # Syne Tune's rule: go on if the trial's 0-based place, as a fraction of the
                # rung's trials, is at most 1/reduction_factor (ASHA's percentile cut, by rank).
                place = order.index(len(ids) - 1)
                if place / len(ids) > 1 / self._rf:
                    action = TrialScheduler.STOP
            recorded[trial.trial_id] = objectives
            break
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def debug_string(self) -> str:
        sizes = ", ".join(f"{lv:g}: {len(r)}" for lv, r in sorted(self._rungs.items()))
        return f"Using MO-ASHA: num_stopped={self._num_stopped} (trials per rung {sizes})"


class PerSearchScheduler(FIFOScheduler):
    """One scheduler per search of a multi-task run, inside one Tuner.

    Tune has one scheduler per Tuner; several searches share it in a multi-task run
    (:mod:`autopetl.search.multi_searcher`). A trial is ranked at a rung only against trials of
    its own search: each search has its own scheduler (its own MO-ASHA or ASHA rungs), and every
    event is routed to it by the search name in the trial's config. Which pending trial runs
    next stays FIFO: the searcher already chose the search when it created the trial.

    Args:
        schedulers: Each search's scheduler, by search name (from :func:`make_scheduler`).
    """

    def __init__(self, schedulers: dict[str, TrialScheduler]) -> None:
        super().__init__()
        self.schedulers = dict(schedulers)

    def _of(self, trial: Any) -> TrialScheduler:
        return self.schedulers[search_of(trial.config)]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # each search's scheduler was built with its metrics and modes

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{name}: {s.debug_string()}" for name, s in self.schedulers.items())


class SeedsToTheEnd(FIFOScheduler):
    """A search's scheduler that never stops a warm start's seeded configurations early.

    A warm start (``--warm-start``) enqueues the configurations on related tasks' fronts first.
    Under early stopping they reach the first rung together and are ranked against each other,
    so most of them are stopped there and never reported: the transfer is lost
    (docs/SEARCH.md, "Warm starts"). Here the seeded trials (a new study's first Optuna trials,
    each with a seed's configuration) train to their last epoch; their results still enter the
    inner scheduler's rungs, so other trials are ranked against them as before. Every other
    trial is the inner scheduler's to stop, a seed's configuration proposed again included (else
    a sampler could repeat a cheap seed forever, each time trained to the end).

    Args:
        inner: The search's scheduler (from :func:`make_scheduler`).
        seeds: The seeded configurations, in the flat form the searcher gives Tune.
    """

    def __init__(self, inner: TrialScheduler, seeds: Sequence[dict[str, Any]]) -> None:
        super().__init__()
        self.inner = inner
        self.seeds = frozenset(flat_key(c) for c in seeds)
        self.count = len(seeds)  # Optuna hands the enqueued seeds out first: trials 0..count-1

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        decision = self.inner.on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and self.seeded(trial.config):
            return TrialScheduler.CONTINUE  # its last epoch still ends it: the trainable returns
        return decision

    def seeded(self, config: dict[str, Any]) -> bool:
        """Whether the trial of this Tune config is one of the seeds."""
        return trial_number_of(config) < self.count and flat_key(config) in self.seeds

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.inner.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return f"{self.inner.debug_string()}; {len(self.seeds)} seeded configurations to the end"


def make_scheduler(
    name: str,
    *,
    max_t: int,
    metrics: Sequence[str],
    modes: Sequence[str],
    log_metrics: Sequence[str] = (),
    grace_period: int = DEFAULT_GRACE_PERIOD,
    reduction_factor: float = DEFAULT_REDUCTION_FACTOR,
) -> TrialScheduler:
    """The scheduler ``name`` over a horizon of ``max_t`` epochs; the first metric is accuracy."""
    if name not in SCHEDULERS:
        raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {name!r}")
    if name == "none" or max_t <= 1:
        return FIFOScheduler()
    # A grace period as long as the run would leave no rung: short runs (--epochs 2, smoke
    # tests) keep one, at the last epoch but one.
    grace_period = min(grace_period, max_t - 1)
    if name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            metric=metrics[0],
            mode=modes[0],
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
    return MOASHAScheduler(
        metrics,
        modes,
        log_metrics=log_metrics,
        max_t=max_t,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )
