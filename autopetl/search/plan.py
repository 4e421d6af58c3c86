"""What one search is, checked before anything runs, and how a driver takes it.

:class:`SearchPlan` is one search of a command, validated on construction; :func:`open_search`
creates its record, or checks that a stored search of that name is the same search (a resume),
and takes its driver lease; :func:`leases_kept` renews the leases of every search of a run while
it runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopetl.backbones import BackboneSpec, describe
from autopetl.errors import AutopetlError, ConfigError, SearchConflictError
from autopetl.objectives import DEFAULT_OBJECTIVES, objectives_of
from autopetl.pipeline import TaskData
from autopetl.search.defaults import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_SCHEDULER,
    SCHEDULERS,
)
from autopetl.search.space import SearchSpace, max_epochs, parse_space
from autopetl.store import SearchRecord, Store, TrialRecord

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
        warm_start: Configurations a new study is seeded with before its sampler proposes
            anything (:mod:`autopetl.search.warm_start`); a resumed study takes none.
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
    warm_start: tuple[dict[str, Any], ...] = ()

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
    _claim(store, plan, driver)
    store.upsert_search(**_search_values(plan))


def _claim(store: Store, plan: SearchPlan, driver: str) -> None:
    """Check a stored search of the plan's name is the same search (creating it if there is
    none), then take its driver lease; nothing of an existing search is changed but its lease."""
    from autopetl.store import StoreError

    existing = store.get_search(plan.name)
    if existing is None:
        try:
            store.upsert_search(**_search_values(plan), create_only=True)
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


def open_searches(store: Store, plans: Sequence[SearchPlan], driver: str) -> None:
    """:func:`open_search` for every search of a run, before any of them starts: the run takes
    all its leases or none, and a refused run changes no search. The searches that exist are
    claimed first (a conflict or another driver on any of them refuses the run before a new
    search's row is created), and no record is updated until every lease is held; a refusal
    gives back the leases already taken."""
    taken: list[str] = []
    stored = {p.name for p in plans if store.get_search(p.name) is not None}
    try:
        for plan in sorted(plans, key=lambda p: p.name not in stored):  # stable: stored first
            _claim(store, plan, driver)
            taken.append(plan.name)
    except BaseException:
        for name in taken:
            _release(store, name, driver)
        raise
    for plan in plans:
        store.upsert_search(**_search_values(plan))


def _release(store: Store, name: str, driver: str) -> None:
    try:
        store.release_driver_lease(name, driver)
    except Exception as exc:  # it lapses by itself
        log.warning("search %s: could not release the driver lease: %s", name, exc)


@contextlib.contextmanager
def leases_kept(store: Store, names: Sequence[str], driver: str) -> Iterator[None]:
    """Renew the driver's lease on every search in ``names`` while the block runs; give them
    back after."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_TTL_S / 3):
            for name in names:
                try:
                    other = store.take_driver_lease(name, driver, LEASE_TTL_S)
                except Exception as exc:  # the database is away for a moment: try again
                    log.warning("search %s: could not renew the driver lease: %s", name, exc)
                    continue
                if other is not None:
                    log.error("search %s: another driver (%s) took over its lease", name, other[0])

    thread = threading.Thread(target=renew, name="leases", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        for name in names:
            _release(store, name, driver)
