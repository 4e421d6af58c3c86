"""Many tasks, one run: every search of a command shares one Tuner and its workers.

What is checked: the searcher hands each search exactly its budget, furthest-behind first, and
replaces failures; a trial is ranked at a rung only against its own search; a multi-task smoke
search is one Tune run whose two tasks' trials overlap; a SIGKILLed multi-search driver resumes
every search to exactly its budget, leaving a finished one untouched; a second driver on any
search of a run is refused; on a 3-node cluster with fake GPUs both tasks' trials run at once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from autopetl.search.multi_searcher import MultiStudySearcher, StudyBudget, pick
from autopetl.search.schedulers import MOASHAScheduler, PerSearchScheduler
from autopetl.search.searcher import ParetoOptunaSearch
from autopetl.search.space import parse_space
from autopetl.store import open_store
from autopetl.trial import SEARCH_KEY, flat_of

from .conftest import REPO

SPACE = parse_space(
    yaml.safe_load("methods: {lora: {rank: {type: int, low: 1, high: 8}}}\ntrain: {epochs: 3}"),
    name="t",
    where="<t>",
)


def _searcher(name: str, seed: int = 0) -> ParetoOptunaSearch:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return ParetoOptunaSearch(
        space=SPACE,
        metric=["val_acc", "tunable_params"],
        mode=["max", "min"],
        sampler=optuna.samplers.RandomSampler(seed=seed),
        study_name=name,
    )


def _done(epochs: int = 3, **extra: object) -> dict:
    return {"epoch": epochs, "epochs": epochs, "val_acc": 0.5, "tunable_params": 10, **extra}


def test_the_search_furthest_behind_its_budget_takes_the_next_trial() -> None:
    a, b = StudyBudget("a", 4, 4), StudyBudget("b", 2, 2)
    assert pick([a, b]) is a  # a tie (both at 0): the command's order
    a.running = 1
    assert pick([a, b]) is b  # a is 1/4 along, b 0/2
    b.running = 1
    assert pick([a, b]) is a  # 1/4 < 1/2
    a.running, b.running = 3, 1
    assert pick([a, b]) is b
    b.running, a.running, a.finished = 0, 0, 4
    b.finished = 2
    assert pick([a, b]) is None  # both budgets met


def test_each_search_gets_exactly_its_budget_and_failures_are_replaced() -> None:
    searcher = MultiStudySearcher(
        {"a": _searcher("a"), "b": _searcher("b", 1)},
        [StudyBudget("a", 3, 5), StudyBudget("b", 2, 5)],
    )
    handed = []
    while (config := searcher.suggest(f"t{len(handed)}")) is not None:
        assert config != Searcher.FINISHED
        handed.append((f"t{len(handed)}", config[SEARCH_KEY]))
        assert flat_of(config)["method"] == "lora" and SEARCH_KEY not in flat_of(config)
    # Never more in flight than a budget: 3 + 2, alternating by share (a, b, a, b, a).
    assert [s for _, s in handed] == ["a", "b", "a", "b", "a"]
    # A failed trial of b is replaced by one of b; a's finished trials free nothing.
    searcher.on_trial_complete(handed[1][0], {"epoch": 0, "error": "boom", "raised": True})
    searcher.on_trial_complete(handed[0][0], _done())
    replacement = searcher.suggest("r")
    assert replacement is not None and replacement[SEARCH_KEY] == "b"
    assert searcher.suggest("none") is None  # trials still run: wait
    for trial_id, _ in [*handed[2:], ("r", "b")]:
        searcher.on_trial_complete(trial_id, _done())
    assert searcher.suggest("end") == Searcher.FINISHED
    assert [(b.name, b.finished, b.failed) for b in searcher.budgets] == [("a", 3, 0), ("b", 2, 1)]
    # Each study holds its own trials only.
    a_study, b_study = (searcher.searchers[n]._ot_study for n in ("a", "b"))
    assert len(a_study.trials) == 3 and len(b_study.trials) == 3


def test_a_search_whose_first_trials_fail_alike_stops_and_the_others_go_on() -> None:
    searcher = MultiStudySearcher(
        {"bad": _searcher("bad"), "good": _searcher("good")},
        [StudyBudget("bad", 10, 10), StudyBudget("good", 2, 2)],
    )
    failed = 0
    while failed < 3:
        config = searcher.suggest(f"t{failed}")
        assert config is not None and config != Searcher.FINISHED
        if config[SEARCH_KEY] == "bad":
            searcher.on_trial_complete(f"t{failed}", {"error": "IndexError: x", "raised": True})
            failed += 1
        else:
            searcher.on_trial_complete(f"t{failed}", _done())
    bad = searcher.budgets[0]
    assert bad.stopped and bad.repeated_error == "IndexError: x" and bad.wanted == 0
    rest = searcher.suggest("next")
    assert rest is not None and rest != Searcher.FINISHED and rest[SEARCH_KEY] == "good"


class _Trial:
    def __init__(self, trial_id: str, search: str) -> None:
        self.trial_id, self.config = trial_id, {SEARCH_KEY: search}


def _moasha() -> MOASHAScheduler:
    return MOASHAScheduler(
        ["val_acc", "tunable_params"], ["max", "min"], max_t=9, grace_period=1, reduction_factor=3
    )


def test_mo_asha_ranks_a_trial_only_against_its_own_search() -> None:
    def result(acc: float) -> dict:
        return {"training_iteration": 1, "val_acc": acc, "tunable_params": 100}

    shared, per_search = _moasha(), PerSearchScheduler({"a": _moasha(), "b": _moasha()})
    # Study a: three strong trials reach the first rung.
    for i, acc in enumerate((0.9, 0.8, 0.7)):
        for s in (shared, per_search):
            s.on_trial_result(None, _Trial(f"a{i}", "a"), result(acc))
    # Study b's first trial is weak beside a's, but the first of its own search at the rung.
    weak = _Trial("b0", "b")
    assert shared.on_trial_result(None, weak, result(0.1)) == TrialScheduler.STOP
    assert per_search.on_trial_result(None, weak, result(0.1)) == TrialScheduler.CONTINUE
    # And b's rung ranks b's trials: a weaker second trial of b stops there.
    second = per_search.on_trial_result(None, _Trial("b1", "b"), result(0.05))
    assert second == TrialScheduler.STOP
    assert per_search.schedulers["a"]._rungs[1.0].keys() == {"a0", "a1", "a2"}


def test_a_multitask_smoke_search_is_one_tune_run_with_both_tasks_at_once(
    ray_session, tmp_path, sqlite_url, capsys
):
    from autopetl.cli import main

    storage = tmp_path / "ray"
    args = ["search", "--task", "vtab/dsprites_loc,vtab/dsprites_ori", "--budget", "6"]
    args += ["--smoke-test", "--epochs", "3", "--name", "two", "--db", sqlite_url]
    code = main([*args, "--storage", str(storage), "--max-concurrent", "4"])
    captured = capsys.readouterr()
    told = captured.out[-3000:] + captured.err[-3000:]  # what a failure below shows
    assert code == 0, told
    # One Tune run: one experiment folder for both searches.
    assert len([p for p in storage.iterdir() if p.is_dir()]) == 1, (list(storage.iterdir()), told)
    store = open_store(sqlite_url)
    names = ("two-dsprites_loc", "two-dsprites_ori")
    trials = {n: store.trials(n) for n in names}
    for name in names:
        finished = [t for t in trials[name] if t.status in ("completed", "pruned")]
        assert len(finished) == 6 and len(trials[name]) == 6, (name, told)
        assert store.get_search(name).status == "completed", told
    # The two searches went on together: each one's first trial started before the other's last
    # trial ended (one after another, every trial of the first would end before the second's
    # began). Not "two trials at once": on a loaded 2-core machine Tune's actor reuse may hand
    # every short trial to the one worker that started first.
    loc, ori = trials[names[0]], trials[names[1]]
    assert min(t.created_at for t in ori) < max(t.finished_at for t in loc), told
    assert min(t.created_at for t in loc) < max(t.finished_at for t in ori), told
    said = [line for line in captured.err.splitlines() if ": trial " in line]
    epochs = [line for line in said if re.search(r": trial \d+ \w+ epoch \d", line)]
    lines = [line for line in said if line not in epochs]
    assert len(lines) == 12 and all("(vtab/dsprites_" in line for line in lines), lines
    # A log is not silent while trials train: their epochs before the last are said too.
    assert any(" epoch 1/3: val " in line for line in epochs), said
    assert not any(" epoch 3/3" in line for line in epochs)
    assert "searches of this run" in captured.out and "1 Tuner run(s)" in captured.out, told
    assert "autopetl serve --task vtab/dsprites_loc vtab/dsprites_ori" in captured.out


def test_a_second_driver_on_any_search_of_a_run_is_refused(tmp_path, sqlite_url) -> None:
    from autopetl.errors import SearchConflictError
    from autopetl.search.plan import open_searches
    from autopetl.store import driver_id
    from tests.multitask_scenario import plans

    store = open_store(sqlite_url)
    first = plans(str(tmp_path), {"a": 2, "b": 2})
    open_searches(store, first, "host:1:first")
    before = store.get_search("a")
    # d (new) comes first in the command, b is held by the first driver, a would be resumed
    # with a larger budget: the run is refused before d is created or a is changed.
    second = plans(str(tmp_path), {"d": 2, "b": 2, "a": 5})
    with pytest.raises(SearchConflictError, match="search 'b' is being run by another driver"):
        open_searches(store, second, driver_id())
    assert store.get_search("d") is None
    after = store.get_search("a")
    assert (after.budget, after.status, after.updated_at) == (2, before.status, before.updated_at)
    # All or nothing: a lease taken before b refused is given back (the first driver's stays).
    third = plans(str(tmp_path), {"c": 2, "b": 2})
    open_searches(store, third[:1], "host:2:other")
    store.release_driver_lease("c", "host:2:other")
    with pytest.raises(SearchConflictError, match="search 'b'"):
        open_searches(store, third, driver_id())
    assert store.take_driver_lease("c", "host:3:third", 30.0) is None


def _scenario(kind: str, db: str, storage: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_AUTH_MODE": "disabled"
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.multitask_scenario", kind, db, storage],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_a_killed_multitask_driver_resumes_every_search_to_its_budget(tmp_path, sqlite_url):
    from tests.multitask_scenario import LOCAL

    first = _scenario("local", sqlite_url, str(tmp_path / "ray"))
    store = open_store(sqlite_url)
    deadline = time.time() + 400

    def finished(name: str) -> int:
        if store.get_search(name) is None:
            return 0
        return len([t for t in store.trials(name) if t.status in ("completed", "pruned")])

    while time.time() < deadline and first.poll() is None:
        if finished("short") >= LOCAL["short"] and finished("loc") + finished("ori") >= 4:
            break
        time.sleep(0.1)
    assert first.poll() is None, first.communicate()[1][-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
    first.wait()
    before = {n: store.trials(n) for n in LOCAL}
    # Killed mid-run: the two longer searches have budget left (and, most likely, trials running).
    assert sum(finished(n) for n in ("loc", "ori")) < LOCAL["loc"] + LOCAL["ori"]

    second = _scenario("local", sqlite_url, str(tmp_path / "ray"))
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == {n: "completed" for n in LOCAL}
    for name, budget in LOCAL.items():
        trials = report["trials"][name]
        done = [t for t in trials if t["status"] in ("completed", "pruned")]
        assert len(done) == budget, (name, trials)
        assert not [t for t in trials if t["status"] == "running"]
        assert len({t["key"] for t in trials}) == len(trials)
        study = optuna.load_study(study_name=name, storage=store.optuna_storage())
        assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    # The search that had finished before the kill was not touched by the resumed run.
    short_before = {t.trial_key: t.updated_at.timestamp() for t in before["short"]}
    assert {t["key"]: t["updated"] for t in report["trials"]["short"]} == short_before


@pytest.mark.slow
def test_both_tasks_run_at_once_on_a_three_node_cluster_with_fake_gpus(tmp_path, sqlite_url):
    from tests.multitask_scenario import CLUSTER

    proc = _scenario("cluster", sqlite_url, str(tmp_path / "ray"))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["status"] == {n: "completed" for n in CLUSTER} and report["runs"] == [1]
    loc, ori = (report["trials"][n] for n in CLUSTER)
    assert len(loc) == len(ori) == 6
    # Trials of both tasks ran at the same time, on the worker nodes (the head has no GPU). Not
    # necessarily on both: with reuse_actors, Tune gives a pending trial the worker of a trial
    # that just ended and drops the one it was starting (docs/PERFORMANCE.md, section 4), so
    # when the second node's workers start slowly (a loaded CI machine) the first node's two
    # may run every short trial. That is Tune's scheduling, not the multi-task run's.
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for a in loc for b in ori)
    assert 1 <= len({t["node"] for t in loc + ori}) <= 2


def test_the_live_view_has_a_row_per_search_and_a_log_line_names_the_task() -> None:
    from rich.console import Console

    from autopetl.cli._search_view import RunView, SearchRow
    from autopetl.search.recorder import TrialEvent

    view = RunView(
        {
            "s-loc": SearchRow("s-loc", "vtab/dsprites_loc", 2),
            "s-ori": SearchRow("s-ori", "vtab/dsprites_ori", 2),
        }
    )
    config = {"method": "lora"}
    events = [
        TrialEvent("started", "s-loc", "0", "lora", config),
        TrialEvent("started", "s-ori", "0", "lora", config),
        TrialEvent("started", "s-loc", "1", "vpt", config),
        TrialEvent("completed", "s-loc", "0", "lora", config, 0.61, 1000, 3),
        TrialEvent("pruned", "s-ori", "0", "lora", config, 0.2, 1000, 1),
        TrialEvent("failed", "s-loc", "1", "vpt", config, error="Traceback\nValueError: bad"),
    ]
    for event in events:
        view.on_event(event)
    console = Console(record=True, width=200)
    console.print(view.render())
    rows = {line.split()[0]: line.split() for line in console.export_text().splitlines()[:4]}
    # search, task, state, finished, running, stopped early, failed, best val, front
    assert rows["s-loc"][1:9] == [
        "vtab/dsprites_loc",
        "waiting",
        "1/2",
        "0",
        "0",
        "1",
        "61.0%",
        "1",
    ]
    assert rows["s-ori"][1:9] == ["vtab/dsprites_ori", "waiting", "1/2", "0", "1", "0", "-", "0"]
    line = view.line(events[-1])
    assert line.startswith("s-loc (vtab/dsprites_loc): trial 1 vpt failed: ValueError: bad")
    assert line.endswith("| run 2/4")


def test_a_worker_fetches_and_holds_only_its_own_tasks_data(ray_session) -> None:
    import ray

    from autopetl.search import trainable
    from tests.test_search_run import _toy_task

    loc, ori = _toy_task(32), _toy_task(48)
    refs = {"loc": ray.put(loc), "ori": ray.put(ori)}
    trainable._DATA.clear()
    first = trainable.task_data(refs["loc"])
    assert len(first.train) == 32 and list(trainable._DATA) == [refs["loc"].hex()]
    assert trainable.task_data(refs["loc"]) is first  # the next trial of the task: no new fetch
    second = trainable.task_data(refs["ori"])
    assert len(second.train) == 48 and list(trainable._DATA) == [refs["ori"].hex()]
    trainable._DATA.clear()
