"""Run the searches of one command in one Ray Tune run: Tune schedules trials, one Optuna study
per search samples them, the store records them.

Every search of a command (tasks x backbones x data fractions) runs inside one Tuner on one set of
workers: :class:`~autopetl.search.multi_searcher.MultiStudySearcher` gives each trial Tune asks for
to the search furthest behind its share of its budget, and
:class:`~autopetl.search.schedulers.PerSearchScheduler` ranks a trial at a rung only against
trials of its own search. A single search is the case of one. docs/SEARCH.md says why one Tuner
and not one per search (Ray's FAQ calls several Tuners on one cluster unsupported).

Budget: ``budget`` counts trials that *finished*: trained to their last epoch (completed) or
stopped early by the scheduler, MO-ASHA or ASHA (pruned). Failed trials (an exception, a NaN loss,
a dead worker) are recorded with their error but do not count; the search starts replacements
until the budget is met or ``max_failed`` trials have failed, whichever comes first; a search that
stops (its failures) leaves the others of its run going.

Resume: a search is continued by running it again under the same name. Trials left ``running``
by a driver that died are marked failed, Optuna's stale RUNNING trials are marked FAIL, and a
new Tuner runs on the same study (its sampler warm-starts from every finished trial); see
shared/ARCHITECTURE.md for why ``Tuner.restore`` is not used. A search of the run whose budget is
already met takes no trial.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler

from autopetl.errors import ConfigError, error_line
from autopetl.names import folder_name
from autopetl.objectives import parse_objectives
from autopetl.search.internals import fail_running_trial
from autopetl.search.multi_searcher import MultiStudySearcher, StudyBudget
from autopetl.search.plan import SearchOutcome, SearchPlan, leases_kept, open_searches
from autopetl.search.recorder import StoreRecorder, TrialEvent
from autopetl.search.samplers import make_sampler, quiet_optuna
from autopetl.search.schedulers import PerSearchScheduler, SeedsToTheEnd, make_scheduler
from autopetl.search.searcher import ParetoOptunaSearch
from autopetl.search.space import max_epochs
from autopetl.search.study_storage import DriverStudyStorage
from autopetl.search.trainable import run_trial
from autopetl.search.warm_start import optuna_params
from autopetl.store import Store
from autopetl.trial import TrialSetup

__all__ = ["SearchOutcome", "SearchPlan", "run_search", "run_searches"]

log = logging.getLogger(__name__)

# What every search of one run must share: one Tuner sizes, places and stores all its trials.
RUN_SETTINGS = (
    "cpus_per_trial",
    "gpus_per_trial",
    "max_concurrent",
    "storage_path",
    "max_retries",
)


def _tune_environment(plan: SearchPlan) -> None:
    """Ray Tune settings read from the environment when a Tuner starts."""
    import ray

    # No CSV/JSON/TensorBoard files per trial: the store is the record. (Tune's result grid then
    # warns that it found no result.json for each trial; that warning is expected, so hidden.)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Ctrl+C should stop the search (and mark it interrupted), not start Tune's graceful stop
    # after which the budget loop would start a new Tuner.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # Our own live view replaces Tune's tables.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # With a searcher Tune keeps one trial pending at a time, so workers start one by one; let as
    # many trials wait as can run at once.
    cpus = ray.cluster_resources().get("CPU", 1) / plan.cpus_per_trial
    gpus = (
        ray.cluster_resources().get("GPU", 0) / plan.gpus_per_trial if plan.gpus_per_trial else cpus
    )
    parallel = int(min(cpus, gpus, plan.max_concurrent or cpus))
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, parallel))


def _counts(store: Store, name: str) -> dict[str, int]:
    counts = {s: 0 for s in ("running", "completed", "pruned", "failed")}
    for trial in store.trials(name):
        counts[trial.status] = counts.get(trial.status, 0) + 1
    return counts


def _recover(store: Store, study: optuna.Study, name: str, *, retry: bool = False) -> int:
    """Mark what a dead driver left running as failed, in the store and in Optuna.

    With ``retry`` (the grid sampler) their configurations are queued again: the grid visits a
    configuration once, and one a dead driver interrupted would otherwise never be trained.
    """
    stale = store.trials(name, status="running")
    for trial in stale:
        store.upsert_trial(
            name,
            trial.trial_key,
            status="failed",
            error="interrupted: the search driver stopped before this trial finished",
        )
    # Queued (WAITING) trials never started: the next Tuner asks for them as they are.
    for ot in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        fail_running_trial(study, ot)
        if retry and ot.params:
            study.enqueue_trial(ot.params, skip_if_exists=False)
    return len(stale)


def run_search(
    plan: SearchPlan, store: Store, on_event: Callable[[TrialEvent], None] | None = None
) -> SearchOutcome:
    """Run (or continue) one search until ``plan.budget`` trials have finished. Ray must be
    initialised."""
    return run_searches([plan], store, on_event)[0]


def run_searches(
    plans: Sequence[SearchPlan],
    store: Store,
    on_event: Callable[[TrialEvent], None] | None = None,
) -> list[SearchOutcome]:
    """Run (or continue) every search of ``plans`` in one Ray Tune run until each has finished
    its budget (or stopped on failures). Ray must be initialised.

    Every search's driver lease is taken before anything starts; a search another driver runs
    refuses the whole run (:class:`~autopetl.errors.SearchConflictError`), having changed nothing.
    """
    from autopetl.store import driver_id

    if not plans:
        return []
    _check_run_settings(plans)
    start = time.perf_counter()
    quiet_optuna()
    driver = driver_id()
    open_searches(store, plans, driver)
    with leases_kept(store, [p.name for p in plans], driver):
        _tune_environment(plans[0])
        return _run_leased(plans, store, on_event, start)


def _check_run_settings(plans: Sequence[SearchPlan]) -> None:
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise ConfigError(f"one run holds each search once, got {', '.join(names)}")
    for setting in RUN_SETTINGS:
        values = {repr(getattr(p, setting)) for p in plans}
        if len(values) > 1:
            raise ConfigError(f"the searches of one run must share {setting}, got {values}")


def _open_study(plan: SearchPlan, store: Store) -> optuna.samplers.BaseSampler:
    """Create (or load) the search's Optuna study once, here, before any worker starts (parallel
    creation races), mark what a dead driver left running failed, and give its sampler."""
    storage = store.optuna_storage()
    sampler = make_sampler(plan.sampler, plan.space, plan.seed)
    directions = [
        optuna.study.StudyDirection.MAXIMIZE
        if o.direction == "max"
        else optuna.study.StudyDirection.MINIMIZE
        for o in parse_objectives(plan.objectives)
    ]
    study = optuna.create_study(
        study_name=plan.name,
        storage=storage,
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )
    if plan.warm_start and not study.get_trials(deepcopy=False):
        # A new study only: Optuna's ask() hands these out before the sampler proposes anything.
        for config in plan.warm_start:
            study.enqueue_trial(optuna_params(plan.space, config))
    recovered = _recover(store, study, plan.name, retry=plan.sampler == "grid")
    if recovered:
        log.warning(
            "search %s: %d trial(s) left running by an earlier driver marked failed",
            plan.name,
            recovered,
        )
    return sampler


def _searcher(
    plan: SearchPlan, store: Store, sampler: optuna.samplers.BaseSampler
) -> ParetoOptunaSearch:
    objectives = parse_objectives(plan.objectives)
    return ParetoOptunaSearch(
        space=plan.space,
        metric=[o.name for o in objectives],
        mode=[o.direction for o in objectives],
        sampler=sampler,
        study_name=plan.name,
        # From here on this driver is the study's only writer: reads come from memory.
        storage=DriverStudyStorage(store.optuna_storage(), plan.name),
    )


def _scheduler(plan: SearchPlan) -> TrialScheduler:
    objectives = parse_objectives(plan.objectives)
    scheduler = make_scheduler(
        plan.scheduler,
        max_t=max_epochs(plan.space),
        metrics=[o.name for o in objectives],
        modes=[o.direction for o in objectives],
        log_metrics=[o.name for o in objectives if o.log_scale],
        grace_period=plan.grace_period,
        reduction_factor=plan.reduction_factor,
    )
    # A warm start's seeds train to the end: ranked against each other at the first rung, most
    # would be stopped there unreported (benchmarks/warm_start.py measures both).
    return SeedsToTheEnd(scheduler, plan.warm_start) if plan.warm_start else scheduler


def _finished(counts: dict[str, int]) -> int:
    return counts["completed"] + counts["pruned"]


def _run_leased(
    plans: Sequence[SearchPlan],
    store: Store,
    on_event: Callable[[TrialEvent], None] | None,
    start: float,
) -> list[SearchOutcome]:
    import ray
    from ray import tune

    first = plans[0]
    samplers = {p.name: _open_study(p, store) for p in plans}
    budgets = [
        StudyBudget(
            p.name,
            p.budget,
            p.max_failed if p.max_failed is not None else p.budget,
            finished=_finished(_counts(store, p.name)),
        )
        for p in plans
    ]
    # Each task's tensors go to the object store once; a trial fetches its own search's only
    # (trainable.task_data). Searches that share one TaskData share one object.
    refs: dict[int, ray.ObjectRef] = {}
    for p in plans:
        if id(p.data) not in refs:
            refs[id(p.data)] = ray.put(p.data)
    data = {p.name: refs[id(p.data)] for p in plans}
    setups = {
        p.name: TrialSetup(
            p.backbone, p.data.task.num_classes, p.seed, p.precision, p.cpus_per_trial
        )
        for p in plans
    }
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data, setups=setups),
        {"cpu": first.cpus_per_trial, "gpu": first.gpus_per_trial},
    )
    recorder = StoreRecorder(store, on_event)
    runs = 0
    while any(not b.met and b.stopped is None for b in budgets):
        runs += 1
        for budget in budgets:  # a new Tuner: what the last one ran has ended
            budget.running = 0
            budget.finished = _finished(_counts(store, budget.name))
        before = sum(b.finished + b.failed for b in budgets)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=MultiStudySearcher(
                    {p.name: _searcher(p, store, samplers[p.name]) for p in plans}, budgets
                ),
                scheduler=PerSearchScheduler({p.name: _scheduler(p) for p in plans}),
                num_samples=-1,  # the searcher says when every search is done
                max_concurrent_trials=first.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{_run_folder(plans)}-{int(time.time())}-{runs}",
                storage_path=_storage(first.storage_path),
                callbacks=[recorder],
                verbose=0,
                # Retries are for dead workers and nodes: the trial resumes from its last epoch.
                failure_config=tune.FailureConfig(max_failures=first.max_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
        try:
            tuner.fit()
        except BaseException:
            for plan in plans:
                store.set_search_status(plan.name, "interrupted")
            raise
        if sum(b.finished + b.failed for b in budgets) == before:
            break  # Tune ended without a trial ending: another run would do the same
    outcomes = []
    for plan, budget in zip(plans, budgets, strict=True):
        if budget.repeated_error is not None:
            log.warning(
                "search %s: its first %d trials all failed with %r: stopped",
                plan.name,
                len(budget.first_errors),
                budget.repeated_error,
            )
        counts = _counts(store, plan.name)
        status = "completed" if _finished(counts) >= plan.budget else "failed"
        store.set_search_status(plan.name, status)
        outcomes.append(
            SearchOutcome(
                plan.name,
                status,
                counts,
                store.pareto_front(search_name=plan.name),
                time.perf_counter() - start,
                runs,
                error=None if status == "completed" else _last_error(budget, store, plan.name),
            )
        )
    return outcomes


def _run_folder(plans: Sequence[SearchPlan]) -> str:
    name = folder_name(plans[0].name)
    return name if len(plans) == 1 else f"{name}-and-{len(plans) - 1}-more"


def _last_error(budget: StudyBudget, store: Store, name: str) -> str | None:
    if budget.first_errors:
        return budget.repeated_error or budget.first_errors[-1]
    failed = store.trials(name, status="failed")
    return error_line(failed[-1].error) if failed else None


def _storage(path: Path | str) -> str:
    """URIs go to Ray as they are (pyarrow filesystems); local paths become absolute."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())
