"""Planning: the jobs (configuration x seed) of an evaluation and where their weights go."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from autopetl.errors import ConfigError
from autopetl.evaluation.jobs import (
    PROCEDURAL_TEST_SIZE,
    SMOKE_TEST_SIZE,
    SMOKE_TRAIN_LIMIT,
    EvaluationJob,
)
from autopetl.evaluation.select import search_named
from autopetl.names import folder_name
from autopetl.tasks import get_task
from autopetl.tasks.data import default_cache_dir
from autopetl.trial import TrialConfig

if TYPE_CHECKING:
    from autopetl.store import Store, TrialRecord


# -- planning -------------------------------------------------------------------------------------
def default_artifacts_dir() -> Path:
    """``artifacts/`` beside the default database file (``$AUTOPETL_HOME`` when set)."""
    from autopetl.store import default_db_path

    return default_db_path().parent / "artifacts"


def artifact_dir(root: str | Path, search_name: str, trial_key: str, seed: int) -> Path:
    """Where one run's tunable weights go: ``ROOT/<search>/<trial>/seed<k>``, always in ROOT."""
    return Path(root) / folder_name(search_name) / folder_name(str(trial_key)) / f"seed{seed}"


def plan_evaluation(
    store: Store,
    search_name: str,
    trials: Sequence[TrialRecord],
    seeds: Iterable[int],
    *,
    smoke_test: bool | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    precision: str = "auto",
    data_root: str | Path | None = None,
    test_size: int | None = None,
    artifacts_dir: str | Path | None = None,
) -> list[EvaluationJob]:
    """One job per (configuration, seed), with the search's backbone and task.

    Args:
        store: The store.
        search_name: The search the trials belong to.
        trials: The configurations (from :func:`select_configurations`).
        seeds: The seeds; every configuration runs once per seed.
        smoke_test: Train on the smoke search's subset and test on a small test set. None follows
            the search (a ``--smoke-test`` search is evaluated the same way).
        cpus_per_trial: CPUs per run.
        gpus_per_trial: GPUs per run (fractions share a GPU).
        precision: auto, fp32 or bf16.
        data_root: Root of the VTAB-1k folders (non-procedural tasks).
        test_size: Test images; None: all of them (4096 for procedural dSprites, 1024 smoke).
        artifacts_dir: Root of the saved weights (default :func:`default_artifacts_dir`).

    Raises:
        StoreError: There is no such search.
        ConfigError: Bad seeds or resources.
    """
    search = search_named(store, search_name)
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ConfigError("--seeds must be at least 1")
    if cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if test_size is not None and test_size < 1:
        raise ConfigError(f"--test-size must be at least 1, got {test_size}")
    task = get_task(search.task)
    smoke = bool(search.options.get("smoke_test")) if smoke_test is None else smoke_test
    if test_size is None:
        test_size = SMOKE_TEST_SIZE if smoke else PROCEDURAL_TEST_SIZE if task.procedural else None
    root = Path(artifacts_dir) if artifacts_dir is not None else default_artifacts_dir()
    # `autopetl train` records the data root it used; searches read theirs from the command line.
    data_root = data_root or search.options.get("data_root") or None
    return [
        EvaluationJob(
            search_name=search_name,
            trial_key=t.trial_key,
            method=t.method or t.config["method"],
            config=TrialConfig.from_record(t.config).flat(),
            seed=seed,
            task=task.name,
            backbone=dict(search.backbone),
            train_limit=SMOKE_TRAIN_LIMIT if smoke else None,
            test_size=test_size,
            data_root=str(data_root) if data_root is not None else None,
            precision=precision,
            cpus=cpus_per_trial,
            gpus=gpus_per_trial,
            artifact_dir=str(artifact_dir(root, search_name, t.trial_key, seed)),
            smoke_test=smoke,
            cache_dir=str(default_cache_dir()),
            # Re-trained at the data scale it was chosen at (a search with --train-fraction).
            train_fraction=search.options.get("train_fraction"),
        )
        for t in trials
        for seed in seeds
    ]
