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
Fixed costs (Tuner start, study creation, worker start) are paid once per search; two search sizes
separate them: the marginal overhead per trial is the slope between the two sizes, the fixed cost
the intercept. ``ray.init`` is timed on its own (once per session, not per search).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any


def search_overhead(sizes: list[int], cpus: int, train_images: int = 64) -> dict[str, Any]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cache_before = os.environ.get("AUTOPETL_CACHE")
    with tempfile.TemporaryDirectory(prefix="autopetl-perf-") as tmp:
        os.environ["AUTOPETL_CACHE"] = str(Path(tmp) / "cache")  # never the user's cache
        import ray

        from autopetl.backbones import SMOKE_BACKBONE
        from autopetl.pipeline import load_task_data
        from autopetl.search.runner import SearchPlan, run_search
        from autopetl.search.space import load_space, with_epochs
        from autopetl.store import open_store
        from autopetl.tasks import get_task

        t0 = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
        ray_init_s = time.perf_counter() - t0
        try:
            store = open_store(f"sqlite:///{Path(tmp) / 'perf.db'}")
            data = load_task_data(
                get_task("vtab/dsprites_loc"), SMOKE_BACKBONE.img_size, train_limit=train_images
            )
            space = with_epochs(load_space("default"), 1)
            runs = []
            for n in sizes:
                name = f"perf-{n}"
                plan = SearchPlan(
                    name=name,
                    data=data,
                    space=space,
                    budget=n,
                    backbone=SMOKE_BACKBONE,
                    scheduler="none",
                    cpus_per_trial=1.0,
                    storage_path=Path(tmp) / "ray",
                    seed=0,
                )
                t1 = time.perf_counter()
                outcome = run_search(plan, store)
                wall = time.perf_counter() - t1
                trials = store.trials(name)
                train_s = sum(t.wall_time_s or 0.0 for t in trials)
                spans = [
                    (t.finished_at - t.created_at).total_seconds()
                    for t in trials
                    if t.finished_at is not None
                ]
                # The trial phase: from the first trial's start to the last one's end (the
                # driver's clock, as the wall time). Before it: Tuner start and the workers'
                # processes (Python, torch and timm imports, the data, the backbone); after it,
                # Tune's teardown.
                phase = (
                    max(t.finished_at for t in trials if t.finished_at is not None)
                    - min(t.created_at for t in trials)
                ).total_seconds()
                slots = cpus  # one CPU per trial
                runs.append(
                    {
                        "trials": n,
                        "status": outcome.status,
                        "counts": outcome.counts,
                        "wall_s": wall,
                        "slots": slots,
                        "sum_train_s": train_s,
                        "overhead_per_trial_s": (wall * slots - train_s) / n,
                        "trial_phase_s": phase,
                        "fixed_s": wall - phase,
                        # Slot-seconds of the trial phase not spent training, per trial: the
                        # hand-off between trials (scheduling, recording, backbone copy).
                        "steady_overhead_per_trial_s": (phase * slots - train_s) / n,
                        # The store's start (Tune's on_trial_start) to finish, minus training:
                        # what recording costs once a trial runs, not the hand-off before it.
                        "recorded_span_minus_train_per_trial_s": (sum(spans) - train_s) / n,
                    }
                )
                print(
                    f"  search of {n} smoke trials: {wall:.1f} s wall, "
                    f"{train_s:.1f} s training, overhead {runs[-1]['overhead_per_trial_s']:.3f} "
                    f"s/trial; fixed {wall - phase:.1f} s, then "
                    f"{runs[-1]['steady_overhead_per_trial_s']:.3f} s/trial between trials",
                    flush=True,
                )
        finally:
            ray.shutdown()
            if cache_before is None:
                os.environ.pop("AUTOPETL_CACHE", None)
            else:
                os.environ["AUTOPETL_CACHE"] = cache_before
    marginal = fixed = None
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        cost_a = a["wall_s"] * a["slots"] - a["sum_train_s"]
        cost_b = b["wall_s"] * b["slots"] - b["sum_train_s"]
        marginal = (cost_b - cost_a) / (b["trials"] - a["trials"])
        fixed = cost_a - marginal * a["trials"]
    return {
        "backbone": "SMOKE_BACKBONE (vit_tiny 4x64, 32 px, random init)",
        "space": "default, 1 epoch, scheduler none",
        "train_images": train_images,
        "cpus": cpus,
        "ray_init_s": ray_init_s,
        "runs": runs,
        "marginal_overhead_per_trial_s": marginal,
        "fixed_overhead_slot_s": fixed,
        "target_s": 0.1,
    }


def optuna_storage_cost(trials: int = 64, parallel: int = 2) -> dict[str, Any]:
    """Driver time per trial of Optuna alone (ask, the default space's suggestions, tell), with
    ``parallel`` trials in flight as in a search, on each storage: RDBStorage over SQLite (what the
    driver used before), autopetl's DriverStudyStorage on it (what it uses now), and memory."""
    import random

    import optuna

    from autopetl.search.runner import make_sampler
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
