"""Reading evaluations back: each configuration's test accuracy over seeds, the one ranking of
configurations, and the one to serve."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from autopetl.errors import ConfigError
from autopetl.evaluation.jobs import ConfigurationResult
from autopetl.evaluation.select import search_named
from autopetl.recording import TEST_SPLIT
from autopetl.tasks import get_task

if TYPE_CHECKING:
    from autopetl.store import Store


# -- reading evaluations back ---------------------------------------------------------------------
def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def configuration_results(
    store: Store, search_name: str, trial_keys: Iterable[str] | None = None
) -> list[ConfigurationResult]:
    """The evaluated configurations of a search (test split, successful runs), by trial number."""
    search = search_named(store, search_name)
    wanted = None if trial_keys is None else {str(k) for k in trial_keys}
    by_trial: dict[str, list[Any]] = {}
    for ev in store.evaluations(search_name):
        keep = wanted is None or ev.trial_key in wanted
        if keep and ev.split == TEST_SPLIT and _finite(ev.test_acc):
            by_trial.setdefault(ev.trial_key, []).append(ev)
    if not by_trial:
        return []
    artifacts: dict[str, dict[int, str]] = {}
    for art in store.artifacts(search_name):
        if art.kind.startswith("weights-seed"):
            seed = int(art.kind.removeprefix("weights-seed"))
            artifacts.setdefault(art.trial_key, {})[seed] = art.path
    out = []
    for trial in store.trials(search_name):
        evs = sorted(by_trial.get(trial.trial_key, []), key=lambda e: e.seed)
        if not evs:
            continue
        accs = tuple(float(e.test_acc) for e in evs)
        metrics = evs[-1].metrics
        out.append(
            ConfigurationResult(
                search_name=search_name,
                task=search.task,
                trial_key=trial.trial_key,
                method=trial.method or str(trial.config.get("method", "?")),
                config=dict(trial.config),
                backbone=dict(search.backbone),
                seeds=tuple(e.seed for e in evs),
                test_accs=accs,
                mean=statistics.fmean(accs),
                std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
                tunable_params=metrics.get("tunable_params", trial.tunable_params),
                tunable_params_without_head=metrics.get(
                    "tunable_params_without_head", trial.tunable_params_without_head
                ),
                artifacts={
                    s: p
                    for s, p in artifacts.get(trial.trial_key, {}).items()
                    if s in {e.seed for e in evs}
                },
                train_fraction=search.options.get("train_fraction"),
            )
        )
    return out


def evaluated_configurations(store: Store, task: str | None = None) -> list[ConfigurationResult]:
    """Every evaluated configuration in the store, optionally of one task (every search pooled)."""
    name = get_task(task).name if task is not None else None
    out: list[ConfigurationResult] = []
    for search in store.list_searches():
        if name is None or search.task == name:
            out.extend(configuration_results(store, search.name))
    return out


def rank_key(result: ConfigurationResult) -> tuple[float, float, int, str, str]:
    """The one ordering of evaluated configurations (smallest first is best): higher mean test
    accuracy, then fewer tunable parameters, then more seeds; names keep it deterministic.
    Serving, ``best_configuration`` and the report's cells all choose by it."""
    params = result.tunable_params if result.tunable_params is not None else math.inf
    return (-result.mean, params, -len(result.seeds), result.search_name, result.trial_key)


def best_configuration(
    store: Store, task: str, max_params: int | None = None
) -> ConfigurationResult | None:
    """The configuration of a task to serve: the best mean test accuracy within a budget.

    Every evaluated configuration of the task counts, from every search of it. Ties go to fewer
    tunable parameters, then more seeds.

    Args:
        store: The store.
        task: A task name (``vtab/dsprites_loc`` or ``dsprites_loc``).
        max_params: Keep configurations with at most this many tunable parameters, head
            included (the search's second objective); None: no budget.

    Returns:
        The configuration, or None when no evaluated configuration fits.
    """
    if max_params is not None and max_params < 0:
        raise ConfigError(f"--max-params must be >= 0, got {max_params}")
    candidates = [
        r
        for r in evaluated_configurations(store, task)
        if max_params is None or (r.tunable_params is not None and r.tunable_params <= max_params)
    ]
    return min(candidates, key=rank_key) if candidates else None
