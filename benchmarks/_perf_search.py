"""benchmarks/perf.py, part 3: what a search costs beyond the training its trials do.

Smoke searches (SMOKE_BACKBONE, 1 epoch, default space) through ``run_search`` on a private local
Ray, so nearly all of their wall time is the machinery itself: Tune scheduling, the Optuna
sampler and its RDB storage, the store recorder, checkpoints, worker start, the data hand-off
through the object store and the backbone copy per trial.

Overhead definition. A search with ``slots`` trials able to run at once (CPUs / CPUs per trial)
holds ``wall x slots`` slot-seconds; the trials' training (``train()``'s own wall time, validation
included, as recorded in the store) uses ``sum(train)``; the rest is overhead:
``overhead/trial = (wall x slots - sum(train)) / trials``. Idle slots count as overhead (a search
that cannot keep its slots busy is slow), so this is an upper bound on the per-trial hand-off cost.
Fixed costs (Tuner start, the workers' start, Tune's teardown) are paid once per search; the store's
timestamps split them from the cost between trials (see ``_timed_search``), and the warm-worker
ablation (``warm_worker_search``) takes the workers' start out to show what remains. (A slope
between two search sizes would split them too, but Tune sometimes runs a short search on one
worker and sometimes on two, which makes such a slope meaningless.) ``ray.init`` is timed on its
own (once per session, not per search).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _timed_search(name: str, trials: int, data: Any, store: Any, tmp: Path, cpus: int) -> dict:
    """One smoke search through ``run_search``, and its overhead split by the store's records."""
    from autopetl.backbones import SMOKE_BACKBONE
    from autopetl.search.runner import SearchPlan, run_search
    from autopetl.search.space import load_space, with_epochs

    plan = SearchPlan(
        name=name,
        data=data,
        space=with_epochs(load_space("default"), 1),
        budget=trials,
        backbone=SMOKE_BACKBONE,
        scheduler="none",
        cpus_per_trial=1.0,
        storage_path=tmp / "ray",
        seed=0,
    )
    started_at = time.time()
    t1 = time.perf_counter()
    outcome = run_search(plan, store)
    wall = time.perf_counter() - t1
    records = store.trials(name)
    train_s = sum(t.wall_time_s or 0.0 for t in records)
    spans = [(t.finished_at - t.created_at).total_seconds() for t in records if t.finished_at]
    # The trial phase: from the first trial's start to the last one's end (the driver's clock, as
    # the wall time). Before it: Tuner start and the workers' processes (Python, torch and timm
    # imports, the data, the backbone); after it, Tune's teardown.
    phase = (
        max(t.finished_at for t in records if t.finished_at is not None)
        - min(t.created_at for t in records)
    ).total_seconds()
    # Each trial records its worker (pid, and when that process had imported the trial code).
    workers = {
        (t.cost or {}).get("worker_pid"): (t.cost or {}).get("worker_ready_at") for t in records
    }
    ready = [at for at in workers.values() if at is not None]
    slots = cpus  # one CPU per trial
    run = {
        "trials": trials,
        "status": outcome.status,
        "counts": outcome.counts,
        "wall_s": wall,
        "slots": slots,
        "sum_train_s": train_s,
        "overhead_per_trial_s": (wall * slots - train_s) / trials,
        "trial_phase_s": phase,
        "fixed_s": wall - phase,
        # Slot-seconds of the trial phase not spent training, per trial: the hand-off between
        # trials (scheduling, recording, backbone copy).
        "steady_overhead_per_trial_s": (phase * slots - train_s) / trials,
        # The store's start (Tune's on_trial_start) to finish, minus training: what recording
        # costs once a trial runs, not the hand-off before it.
        "recorded_span_minus_train_per_trial_s": (sum(spans) - train_s) / trials,
        # How many worker processes ran trials (Tune can leave a slot idle: see PERFORMANCE.md),
        # and how long after the search began the first of them was ready (its start, paid by
        # this search), or how long before (a warm worker, started earlier).
        "workers_used": len(workers),
        "first_worker_ready_after_start_s": (min(ready) - started_at) if ready else None,
        "warm_workers": sum(at < started_at for at in ready),
    }
    print(
        f"  search of {trials} smoke trials: {wall:.1f} s wall, {train_s:.1f} s training, "
        f"overhead {run['overhead_per_trial_s']:.3f} s/trial; fixed {wall - phase:.1f} s, then "
        f"{run['steady_overhead_per_trial_s']:.3f} s/trial between trials; "
        f"{len(workers)} worker(s), {run['warm_workers']} warm",
        flush=True,
    )
    return run


def _smoke_session(cpus: int, train_images: int, tmp: Path, **ray_options: Any) -> tuple:
    """A private local Ray, a SQLite store in ``tmp`` and the smoke task's data."""
    import ray

    from autopetl.backbones import SMOKE_BACKBONE
    from autopetl.pipeline import load_task_data
    from autopetl.store import open_store
    from autopetl.tasks import get_task

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["AUTOPETL_CACHE"] = str(tmp / "cache")  # never the user's cache
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        **ray_options,
    )
    ray_init_s = time.perf_counter() - t0
    store = open_store(f"sqlite:///{tmp / 'perf.db'}")
    data = load_task_data(
        get_task("vtab/dsprites_loc"), SMOKE_BACKBONE.img_size, train_limit=train_images
    )
    return ray_init_s, store, data


def search_overhead(sizes: list[int], cpus: int, train_images: int = 64) -> dict[str, Any]:
    import ray

    cache_before = os.environ.get("AUTOPETL_CACHE")
    with tempfile.TemporaryDirectory(prefix="autopetl-perf-") as tmp:
        try:
            ray_init_s, store, data = _smoke_session(cpus, train_images, Path(tmp))
            runs = [_timed_search(f"perf-{n}", n, data, store, Path(tmp), cpus) for n in sizes]
            store.close()
        finally:
            ray.shutdown()
            if cache_before is None:
                os.environ.pop("AUTOPETL_CACHE", None)
            else:
                os.environ["AUTOPETL_CACHE"] = cache_before
    return {
        "backbone": "SMOKE_BACKBONE (vit_tiny 4x64, 32 px, random init)",
        "space": "default, 1 epoch, scheduler none",
        "train_images": train_images,
        "cpus": cpus,
        "ray_init_s": ray_init_s,
        "runs": runs,
        "target_s": 0.1,
    }


def warm_worker_search(
    trials: int, cpus: int, train_images: int = 64, wait_s: float = 10.0, attempts: int = 3
) -> dict:
    """The same smoke search with the workers' start taken out of it, then again with it in.

    An ablation, not what autopetl does: it isolates the one fixed cost a search pays, its worker
    processes' start. In a fresh Ray session (a child process: a session prestarts workers only
    once) whose prestarted workers import the trial code before they take work (Ray's
    ``preload_python_modules``), the benchmark waits ``wait_s`` for them, then runs the search: its
    trials find their workers warm. A second search in the same session finds none (the first
    one's workers are gone with its Tuner) and pays the start as every search in autopetl does.

    Each trial's record says whether its worker was warm (``worker_ready_at`` before the start).
    Now and then (a few sessions in a dozen here; the cause is not known) Tune's actors do not land
    on the prestarted workers at all. Such a session measures nothing warm, so it is started again,
    up to ``attempts`` times, and every session is kept in the result.
    """
    command = [sys.executable, __file__, "warm", str(trials), str(cpus), str(train_images)]
    sessions = []
    for _ in range(attempts):
        done = subprocess.run([*command, str(wait_s)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the warm-worker search failed:\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            if not line.startswith("{"):
                print(line, flush=True)
        sessions.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if sessions[-1]["warm"]["warm_workers"]:
            break
    return {**sessions[-1], "sessions": len(sessions), "earlier_sessions": sessions[:-1]}


def _warm_child(trials: int, cpus: int, train_images: int, wait_s: float) -> dict:
    import ray
    from ray.tune.execution import class_cache

    # Tune starts its trial actors with one env var (PL_DISABLE_FORK, for PyTorch Lightning), a
    # runtime env that Ray's prestarted workers do not have; without it the actors take them.
    class_cache.DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)
    with tempfile.TemporaryDirectory(prefix="autopetl-perf-") as tmp:
        try:
            preload = {"preload_python_modules": ["autopetl.search.trainable"]}
            ray_init_s, store, data = _smoke_session(
                cpus, train_images, Path(tmp), _system_config=preload
            )
            time.sleep(wait_s)
            warm = _timed_search("warm", trials, data, store, Path(tmp), cpus)
            cold = _timed_search("cold", trials, data, store, Path(tmp), cpus)
            store.close()
        finally:
            ray.shutdown()
    return {"ray_init_s": ray_init_s, "wait_s": wait_s, "warm": warm, "cold": cold}


def optuna_storage_cost(trials: int = 64, parallel: int = 2) -> dict[str, Any]:
    """Driver time per trial of Optuna alone (ask, the default space's suggestions, tell), with
    ``parallel`` trials in flight as in a search, on each storage: RDBStorage over SQLite (what the
    driver used before), autopetl's DriverStudyStorage on it (what it uses now), and memory."""
    import random

    import optuna

    from autopetl.search.samplers import make_sampler
    from autopetl.search.space import load_space, with_epochs
    from autopetl.search.study_storage import DriverStudyStorage
    from autopetl.store import open_store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = with_epochs(load_space("default"), 1)
    out: dict[str, Any] = {"trials": trials, "parallel": parallel}
    with tempfile.TemporaryDirectory(prefix="autopetl-perf-") as tmp:
        store = open_store(f"sqlite:///{Path(tmp) / 'optuna.db'}")
        try:
            for label in ("rdb_sqlite", "driver_storage_sqlite", "in_memory"):
                rdb = store.optuna_storage()
                optuna.create_study(
                    storage=rdb, study_name=label, directions=["maximize", "minimize"]
                )
                storage: Any = {
                    "rdb_sqlite": rdb,
                    "driver_storage_sqlite": DriverStudyStorage(rdb, label),
                    "in_memory": optuna.storages.InMemoryStorage(),
                }[label]
                if label == "in_memory":
                    optuna.create_study(
                        storage=storage, study_name=label, directions=["maximize", "minimize"]
                    )
                study = optuna.load_study(
                    study_name=label, storage=storage, sampler=make_sampler("tpe", space, 0)
                )
                rng = random.Random(0)
                t0 = time.perf_counter()
                pending: list[Any] = []
                for _ in range(trials):
                    trial = study.ask()
                    space(trial)
                    pending.append(trial)
                    if len(pending) >= parallel:
                        study.tell(pending.pop(0), [rng.random(), rng.randint(1, 10**6)])
                for trial in pending:
                    study.tell(trial, [rng.random(), rng.randint(1, 10**6)])
                out[f"{label}_ms_per_trial"] = (time.perf_counter() - t0) / trials * 1e3
                print(
                    f"  Optuna on {label}: {out[f'{label}_ms_per_trial']:.1f} ms/trial", flush=True
                )
        finally:
            store.close()
    out["rdb_over_driver_storage"] = (
        out["rdb_sqlite_ms_per_trial"] / out["driver_storage_sqlite_ms_per_trial"]
    )
    return out


if __name__ == "__main__":  # the warm-worker search's child process
    _, kind, n, cpus, images, wait = sys.argv
    assert kind == "warm", kind
    print(json.dumps(_warm_child(int(n), int(cpus), int(images), float(wait))), flush=True)
