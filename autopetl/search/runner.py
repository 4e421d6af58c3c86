"""Run one search: Ray Tune schedules trials, Optuna samples them, the store records them.

Budget: ``budget`` counts trials that *finished*: trained to their last epoch (completed) or
stopped early by the scheduler, MO-ASHA or ASHA (pruned). Failed trials (an exception, a NaN loss, a dead worker) are recorded
with their error but do not count; the search starts replacements until the budget is met or
``max_failed`` trials have failed, whichever comes first.

Resume: a search is continued by running it again under the same name. Trials left ``running``
by a driver that died are marked failed, Optuna's stale RUNNING trials are marked FAIL, and a
new Tuner runs on the same study (its sampler warm-starts from every finished trial); see
shared/ARCHITECTURE.md for why ``Tuner.restore`` is not used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autopetl.backbones import BackboneSpec, describe
from autopetl.errors import AutopetlError, ConfigError, SearchConflictError, error_line
from autopetl.names import folder_name
from autopetl.objectives import DEFAULT_OBJECTIVES, objectives_of, parse_objectives
from autopetl.pipeline import TaskData
from autopetl.search.defaults import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_SCHEDULER,
    SCHEDULERS,
)
from autopetl.search.internals import fail_running_trial
from autopetl.search.recorder import FailureStopper, StoreRecorder, TrialEvent
from autopetl.search.schedulers import make_scheduler
from autopetl.search.searcher import ParetoOptunaSearch
from autopetl.search.space import SearchSpace, max_epochs, parse_space
from autopetl.search.study_storage import DriverStudyStorage
from autopetl.search.trainable import run_trial
from autopetl.store import SearchRecord, Store, TrialRecord
from autopetl.trial import TrialSetup

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchPlan:
    """Everything one search needs, validated before anything is written.

    Attributes:
        name: The search's name in the store (and Optuna's study name).
        data: The task's training and validation splits, in memory.
        space: The search space (``--epochs`` already applied).
        budget: Trials to finish (completed or pruned).
        backbone: The frozen backbone every trial starts from.
        sampler: tpe, nsga2, random or grid.
        scheduler: mo-asha, asha or none (see :mod:`autopetl.search.schedulers`).
        grace_period: Epochs every trial trains before the scheduler may stop it.
        reduction_factor: At each rung the scheduler keeps about 1 in this many trials.
        cpus_per_trial: CPUs Ray reserves for each trial (also its torch threads).
        gpus_per_trial: GPUs per trial; fractions let trials share a GPU.
        max_concurrent: At most this many trials at once (None: as resources allow).
        seed: Seeds the sampler and every trial's initialisation.
        storage_path: Where Ray keeps trial directories and checkpoints: a local path, a path
            every node shares, or a URI pyarrow understands (``s3://bucket/prefix``).
        max_failed: Give up after this many failed trials in one run (None: the budget).
        max_retries: Restarts of a trial whose worker or node died (from its last checkpoint).
        precision: auto, fp32 or bf16.
        objectives: What the search optimises, accuracy first (autopetl/objectives.py).
        options: Extra values recorded with the search (the command line, say).
    """

    name: str
    data: TaskData
    space: SearchSpace
    budget: int
    backbone: BackboneSpec
    sampler: str = "tpe"
    scheduler: str = DEFAULT_SCHEDULER
    grace_period: int = DEFAULT_GRACE_PERIOD
    reduction_factor: float = DEFAULT_REDUCTION_FACTOR
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    seed: int = 0
    storage_path: Path | str = Path("ray_results")
    max_failed: int | None = None
    max_retries: int = 2
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    precision: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"--budget must be at least 1 trial, got {self.budget}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(
                f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"
            )
        if self.grace_period < 1 or self.reduction_factor <= 1:
            raise ConfigError(
                "--grace-period must be at least 1 epoch and --reduction-factor above 1, got "
                f"{self.grace_period} and {self.reduction_factor:g}"
            )
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent must be at least 1, got {self.max_concurrent}")


@dataclass
class SearchOutcome:
    name: str
    status: str
    counts: dict[str, int]
    pareto: list[TrialRecord]
    wall_time_s: float
    runs: int
    error: str | None = None  # what the failed trials said, when the search failed


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


def _quiet_optuna() -> None:
    """Optuna logs every study and trial at INFO."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(name: str, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # multivariate+group model the method's conditional parameters jointly; constant_liar
        # keeps parallel workers from sampling the same point while others are still running.
        # Both are marked experimental, and Optuna warns of it on every construction.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                multivariate=True, group=True, constant_liar=True, seed=seed
            )
    if name == "nsga2":
        return _NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        space.configurations()  # a continuous range is a ConfigError here, not in a worker
        # Exhaustive over the define-by-run space, so a grid may hold several methods, each with
        # its own options (GridSampler crosses every parameter with every other). Experimental.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return _GridSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; choose tpe, nsga2, random or grid")


class _GridSampler(optuna.samplers.BruteForceSampler):
    """Optuna's BruteForceSampler, blind to finished trials that hold no parameters.

    A trial that failed before its first suggestion (its worker died at once, or an earlier
    autopetl marked a queued trial failed) reaches BruteForceSampler as a leaf at the root of
    its tree, and every later suggestion raises "param_name mismatch: method != None" (Optuna
    5.0). Such a trial tried no configuration, so leaving it out of the tree loses nothing.
    Overrides a private static method of Optuna 5.0's sampler.
    """

    @staticmethod
    def _populate_tree(tree: Any, trials: list[Any], params: dict[str, Any]) -> None:
        optuna.samplers.BruteForceSampler._populate_tree(
            tree, [t for t in trials if t.params or not t.state.is_finished()], params
        )


class _NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGAIISampler, picklable again.

    Ray Tune pickles the searcher, and with it the sampler, when a Tuner is built (to save the
    experiment for resuming). Optuna 5.1 gave the genetic samplers a ``threading.Lock``
    (``_thread_lock``), which cannot be pickled, so every NSGA-II search failed before its first
    trial with "cannot pickle '_thread.lock' object". The lock guards a cache only: a copy gets a
    fresh one.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()  # unused by Optuna before 5.1, harmless there


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


def _canonical(space: dict[str, Any]) -> str:
    return json.dumps(space, sort_keys=True, default=str)


def resume_conflicts(
    existing: SearchRecord,
    *,
    task: str,
    space: SearchSpace,
    backbone: BackboneSpec,
    smoke_test: bool,
    objectives: Sequence[str] = DEFAULT_OBJECTIVES,
    train_fraction: float | None = None,
) -> list[str]:
    """What a run asks for that the stored search ``existing`` was not run with.

    A search resumes only as the search it was: its trials are comparable (and its Optuna study
    meaningful) only for one task, space, backbone and input size.
    """
    found = []
    if existing.task != task:
        found.append(f"task {existing.task} (now {task})")
    if existing.space_name != space.name:
        found.append(f"space {existing.space_name!r} (now {space.name!r})")
    elif _canonical(existing.space) != _canonical(space.source):
        before, now = _stored_epochs(existing), max_epochs(space)
        found.append(
            f"{before} epochs (now {now})"
            if before != now
            else f"another version of space {space.name!r}"
        )
    if existing.backbone != backbone.to_dict():
        found.append(f"backbone {describe(existing.backbone)} (now {describe(backbone.to_dict())})")
    if bool(existing.options.get("smoke_test")) != smoke_test:
        found.append("--smoke-test" if smoke_test is False else "no --smoke-test")
    before_objectives = [o.name for o in objectives_of(existing.options)]
    if before_objectives != list(objectives):
        found.append(f"--objectives {','.join(before_objectives)} (now {','.join(objectives)})")
    before_fraction = existing.options.get("train_fraction")
    if before_fraction != train_fraction:
        found.append(f"{_fraction_text(before_fraction)} (now {_fraction_text(train_fraction)})")
    return found


def _fraction_text(fraction: float | None) -> str:
    return "all of train800" if fraction is None else f"--train-fraction {fraction:g}"


def conflict_message(name: str, conflicts: list[str]) -> str:
    return (
        f"search {name!r} exists with {'; '.join(conflicts)}: give its options again to "
        f"continue it, or choose another --name"
    )


def _stored_epochs(search: SearchRecord) -> int | None:
    try:
        return max_epochs(parse_space(search.space, name=search.space_name, where=search.name))
    except AutopetlError:  # a space an older autopetl wrote
        return None


# The driver's lease on its search: renewed every third of it, so a driver that dies frees its
# search within this long (at once when it ran on this machine, whose pids tell).
LEASE_TTL_S = 30.0


def open_search(store: Store, plan: SearchPlan, driver: str) -> None:
    """Create the search record, or check that an existing one is the same search; either way
    take the search's driver lease for ``driver`` before changing anything.

    Raises:
        SearchConflictError: The stored search differs, or another live driver runs it.
    """
    from autopetl.store import StoreError

    values = _search_values(plan)
    existing = store.get_search(plan.name)
    if existing is None:
        try:
            store.upsert_search(**values, create_only=True)
        except StoreError:  # another driver created it a moment ago
            existing = store.get_search(plan.name)
    if existing is not None:
        conflicts = resume_conflicts(
            existing,
            task=plan.data.task.name,
            space=plan.space,
            backbone=plan.backbone,
            smoke_test=bool(plan.options.get("smoke_test")),
            objectives=plan.objectives,
            train_fraction=plan.options.get("train_fraction"),
        )
        if conflicts:
            raise SearchConflictError(conflict_message(plan.name, conflicts))
    other = store.take_driver_lease(plan.name, driver, LEASE_TTL_S)
    if other is not None:
        holder, until = other
        raise SearchConflictError(
            f"search {plan.name!r} is being run by another driver ({holder}, its lease renewed "
            f"until {until:%H:%M:%S} UTC); wait for it to finish, stop it, or pick another --name"
        )
    store.upsert_search(**values)


def _search_values(plan: SearchPlan) -> dict[str, Any]:
    return dict(
        name=plan.name,
        task=plan.data.task.name,
        space_name=plan.space.name,
        space=plan.space.source,
        space_text=plan.space.text or None,
        backbone=plan.backbone.to_dict(),
        budget=plan.budget,
        options=plan.options
        | {
            "sampler": plan.sampler,
            "scheduler": plan.scheduler,
            "grace_period": plan.grace_period,
            "reduction_factor": plan.reduction_factor,
            "seed": plan.seed,
            "objectives": list(plan.objectives),
        },
        status="running",
    )


@contextlib.contextmanager
def _lease_kept(store: Store, name: str, driver: str) -> Iterator[None]:
    """Renew the driver's lease while the block runs; give it back after."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_TTL_S / 3):
            try:
                other = store.take_driver_lease(name, driver, LEASE_TTL_S)
            except Exception as exc:  # the database is away for a moment: try again
                log.warning("search %s: could not renew the driver lease: %s", name, exc)
                continue
            if other is not None:
                log.error("search %s: another driver (%s) took over its lease", name, other[0])

    thread = threading.Thread(target=renew, name=f"lease-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        try:
            store.release_driver_lease(name, driver)
        except Exception as exc:  # it lapses by itself
            log.warning("search %s: could not release the driver lease: %s", name, exc)


def run_search(
    plan: SearchPlan, store: Store, on_event: Callable[[TrialEvent], None] | None = None
) -> SearchOutcome:
    """Run (or continue) a search until ``plan.budget`` trials have finished. Ray must be initialised."""
    from autopetl.store import driver_id

    _tune_environment(plan)
    start = time.perf_counter()
    _quiet_optuna()
    driver = driver_id()
    open_search(store, plan, driver)
    with _lease_kept(store, plan.name, driver):
        return _run_leased(plan, store, on_event, start)


def _run_leased(
    plan: SearchPlan,
    store: Store,
    on_event: Callable[[TrialEvent], None] | None,
    start: float,
) -> SearchOutcome:
    from ray import tune

    # The study is created once here, before any worker starts (parallel creation races).
    storage = store.optuna_storage()
    sampler = make_sampler(plan.sampler, plan.space, plan.seed)
    objectives = parse_objectives(plan.objectives)
    metrics = [o.name for o in objectives]
    modes: list[str] = [o.direction for o in objectives]
    directions = [
        optuna.study.StudyDirection.MAXIMIZE if m == "max" else optuna.study.StudyDirection.MINIMIZE
        for m in modes
    ]
    study = optuna.create_study(
        study_name=plan.name,
        storage=storage,
        sampler=sampler,
        directions=directions,
        load_if_exists=True,
    )
    recovered = _recover(store, study, plan.name, retry=plan.sampler == "grid")
    if recovered:
        log.warning(
            "search %s: %d trial(s) left running by an earlier driver marked failed",
            plan.name,
            recovered,
        )
    # From here on this driver is the study's only writer: reads come from memory.
    driver_storage = DriverStudyStorage(storage, plan.name)

    setup = TrialSetup(
        plan.backbone, plan.data.task.num_classes, plan.seed, plan.precision, plan.cpus_per_trial
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=plan.data, setup=setup),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial},
    )
    horizon = max_epochs(plan.space)
    recorder = StoreRecorder(store, plan.name, on_event)
    counts = _counts(store, plan.name)
    failed_before = counts["failed"]
    max_failed = plan.max_failed if plan.max_failed is not None else plan.budget
    runs = 0
    while True:
        counts = _counts(store, plan.name)
        finished = counts["completed"] + counts["pruned"]
        if finished >= plan.budget or counts["failed"] - failed_before >= max_failed:
            break
        runs += 1
        searcher = ParetoOptunaSearch(
            space=plan.space,
            metric=metrics,
            mode=modes,
            sampler=sampler,
            study_name=plan.name,
            storage=driver_storage,
        )
        scheduler = make_scheduler(
            plan.scheduler,
            max_t=horizon,
            metrics=metrics,
            modes=modes,
            log_metrics=[o.name for o in objectives if o.log_scale],
            grace_period=plan.grace_period,
            reduction_factor=plan.reduction_factor,
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=plan.budget - finished,
                max_concurrent_trials=plan.max_concurrent,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=f"{folder_name(plan.name)}-{int(time.time())}-{runs}",
                storage_path=_storage(plan.storage_path),
                callbacks=[recorder],
                verbose=0,
                # Retries are for dead workers and nodes: the trial resumes from its last epoch.
                failure_config=tune.FailureConfig(max_failures=plan.max_retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                stop=FailureStopper(recorder, max_failed),  # counts failures since this call began
            ),
        )
        try:
            tuner.fit()
        except BaseException:
            store.set_search_status(plan.name, "interrupted")
            raise
        if recorder.repeated_error is not None:
            log.warning(
                "search %s: the first %d trials all failed with %r: stopped",
                plan.name,
                len(recorder.first_errors),
                recorder.repeated_error,
            )
            break

    counts = _counts(store, plan.name)
    finished = counts["completed"] + counts["pruned"]
    status = "completed" if finished >= plan.budget else "failed"
    store.set_search_status(plan.name, status)
    return SearchOutcome(
        plan.name,
        status,
        counts,
        store.pareto_front(search_name=plan.name),
        time.perf_counter() - start,
        runs,
        error=None if status == "completed" else _last_error(recorder, store, plan.name),
    )


def _last_error(recorder: StoreRecorder, store: Store, name: str) -> str | None:
    if recorder.first_errors:
        return recorder.repeated_error or recorder.first_errors[-1]
    failed = store.trials(name, status="failed")
    return error_line(failed[-1].error) if failed else None


def _storage(path: Path | str) -> str:
    """URIs go to Ray as they are (pyarrow filesystems); local paths become absolute."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())
