"""The VTAB-1k protocol's last step: re-train chosen configurations on train800val200, test once.

A search ranks configurations by their accuracy on val200 after training on train800. What papers
publish is different: each chosen configuration is trained again, with the same hyper-parameters
and epochs, on all 1000 images (train800val200), once per seed, and its accuracy on the test split
is measured once, after training has ended (docs/PROTOCOL.md).

The test split is reachable from one function only, :func:`_test_split`, called by
:func:`run_job` after :func:`autopetl.training.train` has returned; training gets no evaluation
split at all (``val_data=None``), so no epoch can be chosen by test accuracy. Selection
(:func:`select_configurations`) reads trials and their validation accuracy, never evaluations.

Runs go to Ray as tasks (``num_cpus`` / ``num_gpus`` per run; a run asking for a GPU falls back to
the CPU where CUDA is missing), or run in this process with ``use_ray=False``. The driver is the
only writer to the store: each finished run becomes an evaluation row (split ``test``) and its
tunable weights an artifact (``weights-seed<k>``) that serving loads with
:func:`autopetl.methods.io.load_tunable`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopetl.errors import AutopetlError, ConfigError
from autopetl.names import folder_name
from autopetl.pipeline import SMOKE_SEARCH_TRAIN_IMAGES
from autopetl.recording import TEST_SPLIT, record_run  # record_run: re-exported
from autopetl.tasks import SplitData, get_task, load_split
from autopetl.tasks.data import default_cache_dir
from autopetl.trial import TrialConfig

if TYPE_CHECKING:
    from autopetl.store import SearchRecord, Store, TrialRecord

SELECTIONS = ("pareto", "best", "trial")
TRAIN_SPLIT = "train800val200"
# Searches load their splits with the data seed 0 (the dSprites permutation), whatever --seed is;
# evaluation must read the same images, so the run seed never reaches the data.
DATA_SEED = 0
# Test images of a procedural task (dSprites' full test part is 73,728 images, 11 GB at 224 px).
PROCEDURAL_TEST_SIZE = 4096
# --smoke-test: the same training subset as a smoke search, and a small test set.
SMOKE_TRAIN_LIMIT = SMOKE_SEARCH_TRAIN_IMAGES
SMOKE_TEST_SIZE = 1024


class EvaluationError(AutopetlError):
    """Nothing to evaluate: no completed trials, an unknown trial key, a bad selection."""


@dataclass(frozen=True)
class EvaluationJob:
    """One re-training run: a configuration of a search with one seed (small and picklable).

    Attributes:
        search_name: The search the configuration comes from.
        trial_key: Its trial in that search.
        method: The PETL method's name.
        config: The trial's flat config (method options and training hyper-parameters).
        seed: Seeds the parameter initialisation, the shuffling and dropout.
        task: The task's name (``vtab/...``).
        backbone: The search's ``BackboneSpec.to_dict()``.
        train_limit: Train on the first this many train800val200 images (smoke tests), or all.
        test_size: Test images (None: the whole test split).
        data_root: Root of the VTAB-1k folders, for non-procedural tasks.
        precision: auto, fp32 or bf16.
        cpus: CPUs for the run (also its torch threads).
        gpus: GPUs for the run; 0 trains on the CPU.
        artifact_dir: Where the tunable weights are saved.
        smoke_test: Recorded with the evaluation.
        cache_dir: The driver's tensor cache; a local Ray's workers may have started with
            another environment, and must read the same cache.
    """

    search_name: str
    trial_key: str
    method: str
    config: dict[str, Any]
    seed: int
    task: str
    backbone: dict[str, Any]
    train_limit: int | None
    test_size: int | None
    data_root: str | None
    precision: str
    cpus: float
    gpus: float
    artifact_dir: str
    smoke_test: bool = False
    cache_dir: str | None = None


@dataclass(frozen=True)
class EvaluationRun:
    """What one run scored (``test_acc`` is None when it failed; ``error`` says why)."""

    job: EvaluationJob
    test_acc: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    artifact_sha256: str | None = None
    artifact_bytes: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ConfigurationResult:
    """One evaluated configuration: its test accuracy over seeds, from the store.

    ``std`` is the sample standard deviation over seeds (0 with one seed). ``artifacts`` maps each
    seed to the directory of its saved tunable weights.
    """

    search_name: str
    task: str
    trial_key: str
    method: str
    config: dict[str, Any]
    backbone: dict[str, Any]
    seeds: tuple[int, ...]
    test_accs: tuple[float, ...]
    mean: float
    std: float
    tunable_params: int | None
    tunable_params_without_head: int | None
    artifacts: dict[int, str] = field(default_factory=dict)


# -- selection (validation accuracy only) ---------------------------------------------------------
def select_configurations(
    store: Store, search_name: str, selection: str = "pareto", trial_key: str | None = None
) -> list[TrialRecord]:
    """The trials of a search to evaluate, chosen from validation accuracy alone.

    Args:
        store: The store.
        search_name: The search.
        selection: ``pareto`` (the front on val accuracy and tunable parameters), ``best`` (the
            highest val accuracy; fewer parameters break ties) or ``trial`` (``trial_key``).
        trial_key: The trial, with ``selection="trial"``.

    Raises:
        StoreError: There is no such search.
        EvaluationError: No completed trial, an unknown or unfinished trial, a bad selection.
    """
    if selection not in SELECTIONS:
        raise EvaluationError(
            f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}"
        )
    completed = store.trials(search_name, status="completed")  # raises on an unknown search
    if selection == "trial":
        if trial_key is None:
            raise EvaluationError("selection 'trial' needs a trial key")
        trial = store.trial(search_name, str(trial_key))
        if trial is None:
            raise EvaluationError(
                f"search {search_name!r} has no trial {trial_key!r}; "
                f"`autopetl trials --search {search_name}` lists them"
            )
        if trial.status != "completed":
            raise EvaluationError(
                f"trial {trial_key!r} of search {search_name!r} is {trial.status}; "
                f"only completed trials (trained to their last epoch) can be evaluated"
            )
        return [trial]
    ranked = [t for t in completed if t.val_acc is not None and not math.isnan(t.val_acc)]
    if not ranked:
        raise EvaluationError(
            f"search {search_name!r} has no completed trials to evaluate; "
            f"run or resume it first (`autopetl search --name {search_name} ...`)"
        )
    if selection == "best":
        best = max(
            ranked,
            key=lambda t: (
                t.val_acc,
                -(t.tunable_params if t.tunable_params is not None else math.inf),
                -(t.number if t.number is not None else 0),
            ),
        )
        return [best]
    front = store.pareto_front(search_name=search_name)
    if not front:
        raise EvaluationError(f"search {search_name!r} has no Pareto front to evaluate")
    return front


def _search(store: Store, name: str) -> SearchRecord:
    found = store.get_search(name)
    if found is None:
        from autopetl.store import StoreError

        raise StoreError(f"no search named {name!r}; `autopetl searches` lists them")
    return found


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
    search = _search(store, search_name)
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
        )
        for t in trials
        for seed in seeds
    ]


# -- one run ------------------------------------------------------------------------------------
def load_train_split(job: EvaluationJob) -> SplitData:
    """train800val200 of the job's task at its backbone's input size (the smoke subset if set)."""
    data = load_split(
        get_task(job.task),
        TRAIN_SPLIT,
        img_size=int(job.backbone["img_size"]),
        seed=DATA_SEED,
        data_root=Path(job.data_root) if job.data_root else None,
        cache_dir=Path(job.cache_dir) if job.cache_dir else None,
    )
    return data.subset(job.train_limit) if job.train_limit else data


def _test_split(job: EvaluationJob) -> SplitData:
    """The test split: called by :func:`run_job` only, after training has returned."""
    return load_split(
        get_task(job.task),
        TEST_SPLIT,
        img_size=int(job.backbone["img_size"]),
        seed=DATA_SEED,
        test_size=job.test_size,
        data_root=Path(job.data_root) if job.data_root else None,
        cache_dir=Path(job.cache_dir) if job.cache_dir else None,
    )


def run_job(job: EvaluationJob, train_data: SplitData | None = None) -> EvaluationRun:
    """Re-train one configuration with one seed, then measure test accuracy once and save it.

    Runs in a Ray worker or in this process. A diverging loss is returned as a failed run;
    anything else raises.

    Args:
        job: The run.
        train_data: train800val200 already in memory (the driver shares it); loaded when None.
    """
    import torch

    from autopetl.backbones import BackboneSpec, input_stats
    from autopetl.errors import TrainingDivergedError
    from autopetl.methods import build_method
    from autopetl.methods.io import (
        WEIGHTS_FILE,
        backbone_init_record,
        file_sha256,
        save_tunable,
    )
    from autopetl.pipeline import attach
    from autopetl.training import evaluate, train
    from autopetl.trial import TrialSetup, cached_backbone, split_config, train_config_of

    torch.set_num_threads(max(1, int(job.cpus)))
    device = "cuda" if job.gpus > 0 and torch.cuda.is_available() else "cpu"
    task = get_task(job.task)
    spec = BackboneSpec(**job.backbone)
    setup = TrialSetup(spec, task.num_classes, job.seed, job.precision, job.cpus)
    # The searched hyper-parameters and epochs, with this run's seed.
    train_config = train_config_of(job.config, setup, device)
    method_name, options, _ = split_config(job.config)
    method = build_method(method_name, options)
    train_data = train_data if train_data is not None else load_train_split(job)
    backbone = cached_backbone(spec, task.num_classes)
    # A random-init backbone comes from a fixed seed (cached_backbone); recorded with the
    # artifact, serving rebuilds exactly these frozen weights, and tasks share one trunk.
    backbone_init = backbone_init_record(spec, backbone)
    model = attach(backbone, method, seed=job.seed)
    mean, std = input_stats(backbone)
    try:
        # No evaluation split: nothing during training can look at held-out images.
        result = train(model, train_data, None, train_config, mean=mean, std=std)
    except TrainingDivergedError as exc:
        return EvaluationRun(job, None, {"error": str(exc), "seed": job.seed}, error=str(exc))

    t0 = time.perf_counter()
    test = _test_split(job)  # the only read of the test split, after training has ended
    test_acc = evaluate(
        model,
        test,
        mean,
        std,
        batch_size=train_config.eval_batch_size,
        device=device,
        precision=job.precision,
    )
    test_seconds = time.perf_counter() - t0
    out = save_tunable(
        model, method, job.backbone, task.num_classes, job.artifact_dir, backbone_init=backbone_init
    )
    weights = out / WEIGHTS_FILE
    metrics = {
        "method": job.method,
        "config": job.config,
        "task": job.task,
        "backbone": job.backbone,
        "train_split": TRAIN_SPLIT,
        "train_images": len(train_data),
        "test_images": len(test),
        "epochs": train_config.epochs,
        "final_train_loss": result.epochs[-1].train_loss,
        "tunable_params": result.tunable_params,
        "tunable_params_without_head": result.tunable_params_without_head,
        "wall_time_s": result.wall_time_s,
        "test_seconds": test_seconds,
        "images_per_s": result.images_per_s,
        "peak_memory_mb": result.peak_memory_mb,
        "device": result.device,
        "precision": result.precision,
        "smoke_test": job.smoke_test,
        "artifact": str(out),
    }
    return EvaluationRun(job, test_acc, metrics, file_sha256(weights), weights.stat().st_size)


# -- many runs ----------------------------------------------------------------------------------
def _failed(job: EvaluationJob, exc: BaseException) -> EvaluationRun:
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return EvaluationRun(job, None, {"error": message, "seed": job.seed}, error=message)


def evaluate_jobs(
    store: Store,
    jobs: Sequence[EvaluationJob],
    *,
    use_ray: bool = True,
    on_result: Callable[[EvaluationRun], None] | None = None,
) -> list[EvaluationRun]:
    """Run the jobs (in parallel on Ray, or one by one here) and record each as it finishes.

    With ``use_ray`` Ray must be initialised (:func:`autopetl.search.cluster.connect`); the
    train800val200 tensors are loaded once here and shared through Ray's object store. A run that
    fails is recorded with ``test_acc`` None and its error, and the others go on.

    Returns:
        The runs, in the order they finished.
    """
    if use_ray:
        import ray

        if not ray.is_initialized():
            raise ConfigError("Ray is not running: call autopetl.search.cluster.connect first")
    trains: dict[tuple[Any, ...], Any] = {}

    def train_of(job: EvaluationJob) -> Any:
        key = (job.task, job.backbone["img_size"], job.train_limit, job.data_root)
        if key not in trains:
            data = load_train_split(job)
            trains[key] = ray.put(data) if use_ray else data
        return trains[key]

    runs: list[EvaluationRun] = []

    def finish(run: EvaluationRun) -> None:
        record_run(store, run)
        runs.append(run)
        if on_result is not None:
            on_result(run)

    if not use_ray:
        for job in jobs:
            try:
                run = run_job(job, train_of(job))
            except Exception as exc:  # recorded as a failed run; the next configuration goes on
                run = _failed(job, exc)
            finish(run)
        return runs

    remote = ray.remote(run_job)
    pending = {
        remote.options(num_cpus=job.cpus, num_gpus=job.gpus, max_retries=0).remote(  # type: ignore[call-arg]
            job, train_of(job)
        ): job
        for job in jobs
    }
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            job = pending.pop(ref)
            try:
                run = ray.get(ref)
            except Exception as exc:  # a worker's error; keep the other runs going
                run = _failed(job, exc)
            finish(run)
    return runs


# -- reading evaluations back ---------------------------------------------------------------------
def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def configuration_results(
    store: Store, search_name: str, trial_keys: Iterable[str] | None = None
) -> list[ConfigurationResult]:
    """The evaluated configurations of a search (test split, successful runs), by trial number."""
    search = _search(store, search_name)
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
