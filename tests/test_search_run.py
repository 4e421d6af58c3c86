"""Real searches on a local Ray with Optuna and the store: budgets, ASHA, fake GPUs, failures."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState

from autopetl.backbones import SMOKE_BACKBONE
from autopetl.pipeline import TaskData, load_task_data
from autopetl.search.runner import SearchPlan, run_search
from autopetl.search.samplers import make_sampler
from autopetl.search.space import load_space, parse_space
from autopetl.store import open_store
from autopetl.tasks import SplitData, get_task
from autopetl.trial import flat_of

pytestmark = pytest.mark.slow


def _brightness(n: int, seed: int) -> SplitData:
    """Dim vs bright noise: a random-init ViT separates these, so accuracy depends on lr."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 100, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return SplitData(images + (labels * 120).to(torch.uint8).view(-1, 1, 1, 1), labels)


def _toy_task(n: int = 128) -> TaskData:
    task = get_task("vtab/patch_camelyon")  # 2 classes; the data are ours, not its images
    return TaskData(task, _brightness(n, 0), _brightness(64, 1))


def _space(text: str, name: str = "test"):
    import yaml

    return parse_space(yaml.safe_load(text), name=name, where=f"<{name}>")


def _plan(tmp_path, name, data, space, budget, **kw) -> SearchPlan:
    return SearchPlan(
        name=name,
        data=data,
        space=space,
        budget=budget,
        backbone=SMOKE_BACKBONE,
        storage_path=tmp_path / "ray",
        **kw,
    )


def test_smoke_search_records_exactly_the_budget(ray_session, tmp_path, sqlite_url):
    store = open_store(sqlite_url)
    data = load_task_data(get_task("vtab/dsprites_loc"), 32, train_limit=128)
    from autopetl.search.space import with_epochs

    plan = _plan(tmp_path, "smoke", data, with_epochs(load_space("default"), 2), 6)
    outcome = run_search(plan, store)
    trials = store.trials("smoke")
    assert outcome.status == "completed"
    assert len(trials) == 6 and {t.status for t in trials} <= {"completed", "pruned"}
    assert len({t.trial_key for t in trials}) == 6
    for t in trials:
        # Conditional parameters: only the chosen method's options are in the config.
        prefixes = {k.split(".")[0] for k in t.config if "." in k}
        assert prefixes <= {t.method}, t.config
        assert t.tunable_params and t.tunable_params > 0
        assert [e.epoch for e in store.epochs("smoke", t.trial_key)] == list(
            range(1, t.epochs_done + 1)
        )
    completed = [t for t in trials if t.status == "completed"]
    assert all(t.epochs_done == 2 and t.wall_time_s > 0 and t.images_per_s > 0 for t in completed)
    front = store.pareto_front(search_name="smoke")
    assert front and {t.trial_key for t in front} <= {t.trial_key for t in completed}
    # Optuna's study lives in the same database, with the same trials.
    import optuna

    study = optuna.load_study(study_name="smoke", storage=store.optuna_storage())
    assert len(study.trials) == 6
    # One configuration shape from Optuna to SQL: each row holds exactly what Optuna sampled for
    # its trial number, with the space's fixed values, and no bookkeeping key.
    from optuna.trial import FixedTrial

    space = with_epochs(load_space("default"), 2)
    by_number = {t.number: t for t in study.trials}
    for t in trials:
        sampled = by_number[t.number].params
        assert t.config == flat_of(space(FixedTrial(sampled, number=t.number))), t.config
        assert "trial_number" not in t.config and int(t.trial_key) == t.number


def test_a_worker_runs_several_trials(ray_session, tmp_path, sqlite_url):
    """reuse_actors: a worker process (and the backbone it built) serves trial after trial."""
    import datetime

    store = open_store(sqlite_url)
    space = _space(
        "methods: {linear: {}}\ntrain: {lr: {type: float, low: 1.0e-3, high: 1.0e-2}, epochs: 1}"
    )
    plan = _plan(tmp_path, "reuse", _toy_task(64), space, 8, scheduler="none", max_concurrent=2)
    run_search(plan, store)
    trials = store.trials("reuse")
    assert [t.status for t in trials] == ["completed"] * 8
    workers = {(t.cost["node_id"], t.cost["worker_pid"], t.cost["worker_ready_at"]) for t in trials}
    assert len(workers) < len(trials), workers  # one new worker per trial would be 8
    for t in trials:
        started = t.created_at.replace(tzinfo=t.created_at.tzinfo or datetime.timezone.utc)
        # The worker had imported the trial code before Tune started the trial on it.
        assert t.cost["worker_ready_at"] <= started.timestamp() + 0.5, (t.cost, started)


def test_asha_stopped_trials_never_reach_the_pareto_front(ray_session, tmp_path, sqlite_url):
    from autopetl.search.space import with_epochs

    store = open_store(sqlite_url)
    # Smoke dSprites: accuracies spread between trials, so ASHA (rung at epoch 1 of 3, keeping the
    # top third) stops some; one trial at a time makes every trial meet a filled rung.
    data = load_task_data(get_task("vtab/dsprites_loc"), 32, train_limit=128)
    plan = _plan(
        tmp_path,
        "asha",
        data,
        with_epochs(load_space("default"), 3),
        12,
        max_concurrent=1,
        seed=1,
        scheduler="asha",
        grace_period=1,
    )
    run_search(plan, store)
    trials = store.trials("asha")
    pruned = [t for t in trials if t.status == "pruned"]
    assert len(trials) == 12 and pruned, [(t.method, t.status, t.val_acc) for t in trials]
    assert all(t.epochs_done < 3 for t in pruned)
    front = {t.trial_key for t in store.pareto_front(search_name="asha")}
    assert front and not front & {t.trial_key for t in pruned}
    import optuna

    study = optuna.load_study(study_name="asha", storage=store.optuna_storage())
    states = {str(t.number): t.state for t in study.trials}
    assert all(states[t.trial_key] == TrialState.PRUNED for t in pruned)
    completed = {t.trial_key for t in trials if t.status == "completed"}
    assert all(states[key] == TrialState.COMPLETE for key in completed)


def test_half_gpus_run_four_trials_at_once(ray_session, tmp_path, sqlite_url):
    store = open_store(sqlite_url)
    space = _space("methods: {vpt: {prompt_length: 4}}\ntrain: {lr: 1.0e-3, epochs: 12}")
    running: set[str] = set()
    peak = [0]

    def on_event(event):
        if event.kind == "started":
            running.add(event.key)
        elif event.kind in ("completed", "pruned", "failed"):
            running.discard(event.key)
        peak[0] = max(peak[0], len(running))

    plan = _plan(
        tmp_path,
        "gpus",
        _toy_task(512),
        space,
        4,
        scheduler="none",
        gpus_per_trial=0.5,
        cpus_per_trial=0.5,
    )
    run_search(plan, store, on_event)
    assert peak[0] == 4
    assert [t.status for t in store.trials("gpus")] == ["completed"] * 4


def test_crashed_trials_are_recorded_and_the_search_goes_on(ray_session, tmp_path, sqlite_url):
    store = open_store(sqlite_url)
    # lr 1e38 with SGD overflows the logits, so the loss is NaN: those trials fail; the budget counts the others.
    space = _space(
        "methods: {linear: {}}\ntrain: {optimizer: sgd, lr: {type: categorical, choices: [1.0e-2, 1.0e+38]}, epochs: 1}\nsampler: random"
    )
    plan = _plan(tmp_path, "crash", _toy_task(), space, 3, max_concurrent=2, seed=0, max_failed=20)
    outcome = run_search(plan, store)
    trials = store.trials("crash")
    failed = [t for t in trials if t.status == "failed"]
    assert outcome.status == "completed" and outcome.counts["completed"] == 3
    assert failed and all("loss became nan" in (t.error or "") for t in failed)
    assert all(t.config["lr"] == 1e38 for t in failed)


def test_too_many_failures_end_the_search_as_failed(ray_session, tmp_path, sqlite_url):
    store = open_store(sqlite_url)
    space = _space("methods: {linear: {}}\ntrain: {optimizer: sgd, lr: 1.0e+38, epochs: 1}")
    outcome = run_search(
        _plan(tmp_path, "doomed", _toy_task(), space, 5, max_failed=2, max_concurrent=1), store
    )
    assert (
        outcome.status == "failed"
        and outcome.counts["failed"] == 2
        and outcome.counts["completed"] == 0
    )
    assert store.get_search("doomed").status == "failed"


def test_a_killed_trial_resumes_from_its_last_epoch(ray_session, tmp_path, sqlite_url):
    import os
    import signal

    store = open_store(sqlite_url)
    space = _space("methods: {vpt: {prompt_length: 4}}\ntrain: {lr: 1.0e-3, epochs: 5}")
    seen: list[int] = []
    killed: list[int] = []

    def on_event(event):
        if event.kind == "epoch":
            seen.append(event.epoch)
            if event.epoch == 2 and not killed:
                killed.append(event.pid)
                os.kill(event.pid, signal.SIGKILL)  # the worker dies mid-training

    plan = _plan(tmp_path, "killed", _toy_task(), space, 1, scheduler="none", max_retries=2)
    outcome = run_search(plan, store, on_event)
    (trial,) = store.trials("killed")
    assert killed and outcome.status == "completed"
    assert trial.status == "completed" and trial.attempts == 2
    assert seen[:2] == [1, 2] and seen[-1] == 5
    assert 1 not in seen[2:], f"the trial started over: {seen}"  # resumed, not restarted
    assert [e.epoch for e in store.epochs("killed", trial.trial_key)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("sampler", ["nsga2", "random", "grid"])
def test_every_sampler_runs_a_search(ray_session, tmp_path, sqlite_url, sampler):
    store = open_store(sqlite_url)
    space = _space(
        "methods: {vpt: {prompt_length: {type: categorical, choices: [1, 4]}, deep: false}}\ntrain: {lr: {type: categorical, choices: [1.0e-3, 1.0e-2]}, epochs: 1}"
    )
    outcome = run_search(_plan(tmp_path, sampler, _toy_task(64), space, 4, sampler=sampler), store)
    trials = store.trials(sampler)
    assert outcome.status == "completed" and len(trials) == 4
    if sampler == "grid":  # the grid visits each of its 4 cells once
        cells = {(t.config["vpt.prompt_length"], t.config["lr"]) for t in trials}
        assert len(cells) == 4


def test_a_task_list_runs_one_search_per_task(ray_session, tmp_path, sqlite_url, capsys):
    from autopetl.cli import main

    args = [
        "search",
        "--task",
        "vtab/dsprites_loc,vtab/dsprites_ori",
        "--budget",
        "2",
        "--smoke-test",
        "--epochs",
        "1",
    ]
    assert (
        main([*args, "--db", sqlite_url, "--name", "pair", "--storage", str(tmp_path / "ray")]) == 0
    )
    store = open_store(sqlite_url)
    searches = {s.name: s for s in store.list_searches()}
    assert set(searches) == {"pair-dsprites_loc", "pair-dsprites_ori"}
    assert searches["pair-dsprites_ori"].task == "vtab/dsprites_ori"
    assert all(len(store.trials(name)) == 2 for name in searches)
    out = capsys.readouterr().out
    assert "Pareto front of pair-dsprites_loc" in out and "Pareto front of pair-dsprites_ori" in out


def test_the_same_error_in_the_first_trials_stops_the_search(ray_session, tmp_path, sqlite_url):
    # Labels beyond the task's 2 classes: every trial raises the same IndexError, a mistake no
    # other configuration avoids. The search stops after 3, not after --max-failed (the budget).
    from autopetl.search.multi_searcher import REPEATED_FAILURES

    data = _toy_task(64)
    data.train.labels[:] = 7
    space = _space(
        "methods: {linear: {}}\ntrain: {lr: {type: float, low: 1.0e-3, high: 1.0e-1}, epochs: 1}"
    )
    plan = _plan(tmp_path, "broken", data, space, 10, max_concurrent=1, scheduler="none")
    outcome = run_search(plan, open_store(sqlite_url))
    assert outcome.status == "failed" and outcome.counts["failed"] == REPEATED_FAILURES
    assert outcome.error is not None and "out of bounds" in outcome.error, outcome.error
    assert "\n" not in outcome.error  # the exception's line, not its traceback
    # An error of the trial's own code is not retried (retries are for dead workers): each
    # failed trial ran once, and its record keeps the traceback's last lines.
    failed = open_store(sqlite_url).trials("broken", "failed")
    assert [t.attempts for t in failed] == [1] * REPEATED_FAILURES
    assert all("Traceback" in (t.error or "") and "IndexError" in (t.error or "") for t in failed)


def test_a_search_that_finishes_no_trial_exits_non_zero(ray_session, tmp_path, sqlite_url, capsys):
    from autopetl.cli import main

    space = tmp_path / "nan.yaml"
    space.write_text("methods: {linear: {}}\ntrain: {optimizer: sgd, lr: 1.0e+38, epochs: 1}\n")
    args = ["search", "--task", "vtab/dsprites_loc", "--budget", "2", "--smoke-test"]
    args += ["--space", str(space), "--name", "nan", "--db", sqlite_url]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 1
    out = capsys.readouterr().out
    assert "search nan failed: 0 completed, 0 pruned" in out, out
    assert "error of the failed trials: " in out and "loss became" in out, out
    assert "autopetl serve" not in out and "autopetl evaluate" not in out


def test_a_resumed_search_is_the_same_search_and_continues_to_a_larger_budget(
    ray_session, tmp_path, sqlite_url, capsys
):
    from autopetl.cli import main

    base = ["search", "--task", "vtab/dsprites_loc", "--smoke-test", "--epochs", "1"]
    base += ["--name", "again", "--db", sqlite_url, "--storage", str(tmp_path / "ray")]
    assert main([*base, "--budget", "2"]) == 0
    # Outside a terminal (here: captured) one line per finished trial, none wrapped or cut.
    lines = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("again (vtab/dsprites_loc): trial")
    ]
    assert len(lines) == 2 and lines[-1].endswith(" s") and "finished 2/2" in lines[-1], lines
    # The budget is met: said, and nothing runs.
    assert main([*base, "--budget", "2"]) == 0
    assert "already has 2 finished trials, so a budget of 2 is met" in capsys.readouterr().out
    # Options that contradict the stored search are refused, each difference named.
    assert main([*base, "--budget", "3", "--epochs", "2"]) == 2
    assert "1 epochs (now 2)" in capsys.readouterr().err
    assert main([*base, "--budget", "3", "--img-size", "64"]) == 2
    err = capsys.readouterr().err
    assert (
        "backbone vit_tiny_patch16_224 (random init, 32 px) (now vit_tiny_patch16_224 (random init, 64 px))"
        in err
    ), err
    no_smoke = [a for a in base if a != "--smoke-test"]
    assert main([*no_smoke, "--budget", "3", "--weights", "none"]) == 2
    assert "exists with backbone" in (err := capsys.readouterr().err) and "--smoke-test" in err
    # A larger budget continues it.
    assert main([*base, "--budget", "3"]) == 0
    store = open_store(sqlite_url)
    finished = [t for t in store.trials("again") if t.status in ("completed", "pruned")]
    assert len(finished) == 3


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random", "grid"])
def test_every_sampler_survives_pickling(sampler):
    # Ray Tune pickles the searcher, sampler included, when it builds a Tuner (Optuna 5.1's
    # NSGA-II holds a lock that would make that fail before the first trial).
    import pickle

    space = _space("methods: {vpt: {prompt_length: {type: categorical, choices: [1, 4]}}}")
    import optuna

    copy = pickle.loads(pickle.dumps(make_sampler(sampler, space, seed=0)))
    # The copy still samples (NSGA-II's lock is back).
    study = optuna.create_study(sampler=copy, directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_categorical("x", [1, 4]), 1.0), n_trials=2)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


def test_no_database_password_in_any_file_ray_writes(ray_session, tmp_path, pg_url):
    # Tune pickles the searcher (and with it the study's storage) into tuner.pkl and
    # searcher-state-*.pkl under the storage folder: the database URL must not travel with it.
    from sqlalchemy.engine import make_url

    password = make_url(pg_url).password
    assert password
    space = _space("methods: {linear: {}}\ntrain: {lr: 1.0e-2, epochs: 1}")
    plan = _plan(tmp_path, "secret", _toy_task(64), space, 2, scheduler="none")
    assert run_search(plan, open_store(pg_url)).status == "completed"
    files = [p for p in (tmp_path / "ray").rglob("*") if p.is_file()]
    assert any(p.name == "tuner.pkl" for p in files) and any(
        "searcher-state" in p.name for p in files
    )
    leaks = [p for p in files if password.encode() in p.read_bytes()]
    assert not leaks, f"the database password is in {leaks}"


def test_a_second_driver_is_refused_before_it_touches_the_search(tmp_path, db_url):
    # Two drivers on one search once crashed one of them and left a trial stuck running.
    import subprocess
    import sys

    from autopetl.errors import SearchConflictError
    from autopetl.search.plan import open_search
    from autopetl.store import driver_id

    store = open_store(db_url)
    space = _space("methods: {linear: {}}\ntrain: {lr: 1.0e-2, epochs: 1}")
    plan = _plan(tmp_path, "one", _toy_task(64), space, 2)
    first = driver_id()
    open_search(store, plan, first)
    store.upsert_trial("one", "0", number=0, method="linear", status="running")
    before = store.get_search("one")
    with pytest.raises(SearchConflictError, match="being run by another driver"):
        open_search(store, _plan(tmp_path, "one", _toy_task(64), space, 5), driver_id())
    after = store.get_search("one")
    assert (after.budget, after.status) == (before.budget, before.status) == (2, "running")
    assert [t.status for t in store.trials("one")] == ["running"]  # not marked failed by it
    # Given back, the search is free again; a holder on this machine whose process died
    # (a SIGKILLed driver) is taken over at once, without waiting for its lease to lapse.
    store.release_driver_lease("one", first)
    dead = subprocess.run(
        [sys.executable, "-c", "from autopetl.store import driver_id; print(driver_id())"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert store.take_driver_lease("one", dead, 30.0) is None
    assert store.take_driver_lease("one", driver_id(), 30.0) is None


def test_a_backbone_sweep_runs_one_search_and_front_per_backbone(
    ray_session, tmp_path, sqlite_url, capsys
):
    from autopetl.cli import main

    args = ["search", "--task", "vtab/dsprites_loc", "--budget", "2", "--smoke-test"]
    args += ["--epochs", "1", "--scheduler", "none", "--name", "sweep", "--db", sqlite_url]
    args += ["--backbone", "vit_tiny_patch16_224,vit_small_patch16_224", "--weights", "none"]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    store = open_store(sqlite_url)
    searches = {s.name: s for s in store.list_searches()}
    assert set(searches) == {"sweep-vit_tiny_patch16_224", "sweep-vit_small_patch16_224"}
    assert {s.backbone["name"] for s in searches.values()} == {
        "vit_tiny_patch16_224", "vit_small_patch16_224",
    }  # fmt: skip
    for name in searches:
        assert len(store.trials(name)) == 2 and store.pareto_front(name)
    out = capsys.readouterr().out
    assert "Pareto front of sweep-vit_tiny_patch16_224" in out
    assert "Pareto front of sweep-vit_small_patch16_224" in out


def test_backbone_lists_are_checked_before_anything_runs(sqlite_url, capsys):
    from autopetl.cli import main

    base = ["--task", "vtab/dsprites_loc", "--smoke-test", "--db", sqlite_url]
    two = ["--backbone", "vit_tiny_patch16_224,vit_small_patch16_224"]
    assert main(["search", *base, *two, "--weights", "none,none,none"]) == 2
    assert "3 values for 2 backbones" in capsys.readouterr().err
    assert main(["train", *base, "--method", "linear", *two]) == 2
    assert "takes one backbone" in capsys.readouterr().err
    assert open_store(sqlite_url).list_searches() == []
