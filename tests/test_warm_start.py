"""Warm starts (issue 31, item 3): a new search seeded with the fronts of finished searches."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from autopetl.backbones import SMOKE_BACKBONE
from autopetl.cli import main
from autopetl.errors import ConfigError
from autopetl.search.space import parse_space
from autopetl.search.warm_start import holds, optuna_params, parse_choice, plan_warm_start
from autopetl.store import open_store

SPACE = parse_space(
    yaml.safe_load(
        """
        methods:
          linear: {}
          lora:
            rank: {type: categorical, choices: [1, 4, 16]}
            alpha: 8.0
        train:
          lr: {type: float, low: 1.0e-3, high: 1.0e-1, log: true}
          epochs: 1
        """
    ),
    name="warm",
    where="<warm>",
)
BACKBONE = SMOKE_BACKBONE.to_dict()
OTHER_SIZE = dataclasses.replace(SMOKE_BACKBONE, img_size=64).to_dict()

LINEAR = {"method": "linear", "lr": 0.01, "epochs": 2}
LORA1 = {"method": "lora", "lora.rank": 1, "lora.alpha": 8.0, "lr": 0.01, "epochs": 2}
LORA4 = {"method": "lora", "lora.rank": 4, "lora.alpha": 8.0, "lr": 0.003, "epochs": 2}
LORA16 = {"method": "lora", "lora.rank": 16, "lora.alpha": 8.0, "lr": 0.001, "epochs": 2}
ADAPTER = {"method": "adapter", "adapter.dim": 8, "lr": 0.01, "epochs": 2}  # not in SPACE
LORA_FAST = {"method": "lora", "lora.rank": 4, "lora.alpha": 8.0, "lr": 0.5, "epochs": 2}


def _search(store, name, task, trials, backbone=BACKBONE, status="completed", kind="search"):
    options = {"command": "train"} if kind == "train" else {}
    store.upsert_search(name, task, "warm", {}, backbone, 8, options, status=status)
    for i, (config, acc, params) in enumerate(trials):
        store.upsert_trial(
            name,
            f"{name}-{i}",
            method=config["method"],
            config=config,
            status="completed",
            val_acc=acc,
            tunable_params=params,
        )


@pytest.fixture
def store(sqlite_url):
    with open_store(sqlite_url) as store:
        # loc's front: LINEAR, LORA1, LORA4 (LORA16 is dominated by LORA4).
        _search(
            store,
            "loc",
            "vtab/dsprites_loc",
            [(LINEAR, 0.3, 100), (LORA1, 0.6, 1000), (LORA4, 0.7, 4000), (LORA16, 0.65, 16000)],
        )
        # ori's front: LORA1 again, LORA16, an adapter SPACE has no room for, and a LoRA whose
        # learning rate lies outside SPACE's range.
        _search(
            store,
            "ori",
            "vtab/dsprites_ori",
            [
                (LORA1, 0.5, 1000),
                (LORA16, 0.8, 16000),
                (ADAPTER, 0.9, 50000),
                (LORA_FAST, 0.45, 900),
            ],
        )
        yield store


def _plan(store, choice, budget=100, task="vtab/smallnorb_azi", backbone=BACKBONE, **kw):
    return plan_warm_start(
        store, choice, task=task, backbone=backbone, space=SPACE, budget=budget, **kw
    )


def test_seeds_are_the_sources_distinct_front_configurations_most_shared_first(store) -> None:
    warm = _plan(store, "auto")
    assert warm.sources == ("loc", "ori")
    # LORA1 sits on both fronts: first. The others once each, in the order they were found.
    assert list(warm.configs) == [LORA1, LINEAR, LORA4, LORA16]
    assert warm.left_out == 2 and warm.capped == 0
    assert warm.lineage() == {"sources": ["loc", "ori"], "seeded": 4, "left_out": 2, "capped": 0}
    assert (
        "4 configurations from the fronts of loc, ori, each trained to its last epoch (2 left out"
        in warm.summary()
    )
    # Named sources give the same, from those only.
    assert list(_plan(store, ("loc",)).configs) == [LINEAR, LORA1, LORA4]


def test_the_cap_is_a_share_of_the_budget(store) -> None:
    warm = _plan(store, "auto", budget=8)  # 25% of 8
    assert list(warm.configs) == [LORA1, LINEAR] and warm.capped == 2
    assert _plan(store, "auto", budget=2).configs == (LORA1,)  # never below one


def test_a_configuration_the_space_cannot_hold_is_left_out() -> None:
    assert holds(SPACE, LORA4) and holds(SPACE, LINEAR)
    assert not holds(SPACE, ADAPTER)  # a method the space lacks
    assert not holds(SPACE, LORA_FAST)  # lr above the range
    assert not holds(SPACE, {**LORA4, "lora.rank": 2})  # not a choice
    assert not holds(SPACE, {**LORA4, "lora.dropout": 0.1})  # a parameter the space lacks
    # Fixed values are the new space's: the source's epochs and alpha do not matter.
    assert holds(SPACE, {**LORA4, "epochs": 10, "lora.alpha": 16.0})
    # What Optuna is given: the sampled parameters only, under the space's names.
    assert optuna_params(SPACE, LORA4) == {"method": "lora", "lora.rank": 4, "lr": 0.003}


def test_auto_reads_finished_searches_of_other_tasks_on_the_same_backbone_only(store) -> None:
    _search(store, "same-task", "vtab/smallnorb_azi", [(LORA16, 0.9, 16000)])
    _search(store, "bigger", "vtab/dsprites_loc", [(LORA16, 0.9, 16000)], backbone=OTHER_SIZE)
    _search(store, "running", "vtab/dsprites_loc", [(LORA16, 0.9, 16000)], status="running")
    _search(store, "a-train-run", "vtab/dsprites_loc", [(LORA16, 0.9, 16000)], kind="train")
    _search(store, "in-this-run", "vtab/dsprites_loc", [(LORA16, 0.9, 16000)])
    assert _plan(store, "auto", exclude=("in-this-run",)).sources == ("loc", "ori")
    # With nothing to read, auto starts cold and says so.
    cold = _plan(store, "auto", backbone=OTHER_SIZE, task="vtab/dsprites_loc")
    assert cold.sources == () and cold.configs == () and "starting cold" in cold.summary()
    assert _plan(store, "none") is None


def test_a_named_source_on_another_input_size_or_unfinished_is_refused(store) -> None:
    _search(store, "running", "vtab/dsprites_loc", [(LORA16, 0.9, 16000)], status="running")
    with pytest.raises(ConfigError, match=r"ran on vit_tiny_patch16_224 .*32 px.*64 px"):
        _plan(store, ("loc",), backbone=OTHER_SIZE)
    with pytest.raises(ConfigError, match="'running' is running, not completed"):
        _plan(store, ("loc", "running"))
    with pytest.raises(ConfigError, match="no search named 'nosuch'"):
        _plan(store, ("nosuch",))
    assert parse_choice(" loc, ori ,") == ("loc", "ori") and parse_choice("auto") == "auto"
    with pytest.raises(ConfigError):
        parse_choice(",")


def test_the_cli_refuses_a_source_on_another_input_size_in_one_line(store, capsys) -> None:
    argv = ["search", "--task", "vtab/dsprites_ori", "--smoke-test", "--db", store.url]
    # The smoke test's backbone is 32 px; this source ran at 64 px.
    _search(store, "at-64px", "vtab/dsprites_loc", [(LORA4, 0.7, 4000)], backbone=OTHER_SIZE)
    assert main([*argv, "--warm-start", "at-64px"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ran on vit_tiny_patch16_224" in err, err
    assert [s.name for s in store.list_searches()] == ["loc", "ori", "at-64px"]  # nothing written


def test_the_lineage_is_listed_by_searches(store, capsys) -> None:
    lineage = {"sources": ["loc", "ori"], "seeded": 4, "left_out": 2, "capped": 0}
    store.upsert_search(
        "seeded", "vtab/smallnorb_azi", "warm", {}, BACKBONE, 8, {"warm_start": lineage}
    )
    assert main(["searches", "--db", store.url]) == 0
    out = capsys.readouterr().out
    assert "seeded from" in out and "loc, ori (4" in out
    assert main(["searches", "--db", store.url, "--format", "json"]) == 0
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["seeded"]["warm_start"] == lineage and rows["loc"]["seeded_from"] == ""
    assert rows["seeded"]["seeded_from"] == "loc, ori (4 configurations)"


@pytest.mark.slow
def test_a_seeded_search_trains_the_seeds_first_as_ordinary_trials(ray_session, store, tmp_path):
    from autopetl.search.runner import SearchPlan, run_search
    from tests.test_search_run import _toy_task

    warm = _plan(store, ("loc",), budget=12)  # cap 3: LINEAR, LORA1, LORA4
    plan = SearchPlan(
        name="seeded",
        data=_toy_task(64),
        space=SPACE,
        budget=4,
        backbone=SMOKE_BACKBONE,
        scheduler="none",
        storage_path=tmp_path / "ray",
        warm_start=warm.configs,
        options={"warm_start": warm.lineage()},
    )
    assert run_search(plan, store).status == "completed"
    trials = sorted(store.trials("seeded"), key=lambda t: t.number)
    assert len(trials) == 4 and all(t.status == "completed" for t in trials)
    # Optuna's first three trials are the seeds, each with the new space's own fixed values.
    fixed = {"epochs": 1}
    seeded = [{**c, **fixed} for c in (LINEAR, LORA1, LORA4)]
    assert [t.config for t in trials[:3]] == seeded
    # Their accuracy is this task's, measured here; the fourth is the sampler's own.
    assert all(t.val_acc is not None and t.epochs_done == 1 for t in trials)
    assert store.get_search("seeded").options["warm_start"]["sources"] == ["loc"]


def test_the_warm_start_benchmark_replays_both_directions(tmp_path) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "warm.json"
    command = [sys.executable, "benchmarks/warm_start.py", "--seeds", "1", "--jobs", "1"]
    command += ["--budget", "0.3"]  # a third of each grid: enough for every part
    run = subprocess.run(
        [*command, "--out", str(out)], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    ratios = report["compute_to_90_warm_over_cold"]
    assert set(ratios) == {"dsprites_loc->dsprites_ori", "dsprites_ori->dsprites_loc"}
    for name, direction in report["directions"].items():
        assert ratios[name] > 0 and direction["seeded_mean"] >= 1
        (run_,) = direction["runs"]
        # The cold and warm studies differ only in their seeds: same sampler seed, same budget.
        assert len(run_["cold"]["curve"]) == len(run_["warm"]["curve"]) == 51
        assert 0 < run_["warm"]["final_hv"] <= 1 and 0 < run_["cold"]["final_hv"] <= 1
        # The bound on any seeding: the target's own true front, every configuration of it.
        target = name.split("->")[1]
        assert run_["seeded_oracle"] >= len(report_front(repo, target))  # ties: one point each
        assert direction["compute_to_90_oracle_over_cold"] > 0


def report_front(repo, task: str) -> list:
    from autopetl.search.replay import load_tables

    path = repo / "benchmarks" / "results" / f"learning_curves_{task}_28px.json"
    return load_tables(path)[0]["default_grid"].front()


def _rung(scheduler, configs: list[dict], first: int = 0) -> list[str]:
    """Each configuration reports its first epoch in order, the later ones less accurate; the
    scheduler's decisions."""
    from autopetl.search.replay import _Trial

    decisions = []
    for i, config in enumerate(configs, start=first):
        trial = _Trial(f"t{i}", config)
        scheduler.on_trial_add(None, trial)
        result = {"training_iteration": 1, "val_acc": 0.9 - 0.1 * i, "tunable_params": 1000}
        decisions.append(scheduler.on_trial_result(None, trial, result))
    return decisions


@pytest.mark.parametrize("name", ["mo-asha", "asha"])
def test_a_seed_is_not_stopped_early_and_still_ranks_the_others(name):
    from autopetl.search.schedulers import SeedsToTheEnd, make_scheduler
    from autopetl.trial import tune_config

    def scheduler():
        return make_scheduler(
            name, max_t=9, metrics=["val_acc", "tunable_params"], modes=["max", "min"],
            grace_period=1, reduction_factor=3,
        )  # fmt: skip

    # Tune configs as the searcher makes them: Optuna's trial 0 is the seed (enqueued first),
    # though it reports last here; 1 to 3 are the sampler's own.
    seed = {**LINEAR, "lr": 0.4}
    others = [tune_config({**LINEAR, "lr": lr}, n) for n, lr in ((1, 0.1), (2, 0.2), (3, 0.3))]
    # Alone, the scheduler stops the last (and least accurate) of four trials at the first rung.
    assert _rung(scheduler(), [*others, tune_config(seed, 0)])[-1] == "STOP"
    wrapped = SeedsToTheEnd(scheduler(), [seed])
    assert _rung(wrapped, [*others, tune_config(seed, 0)])[-1] == "CONTINUE"
    # Another that ranks as badly is stopped (the seed's results entered the rung), and so is the
    # seed's configuration proposed again: only the seeded trial itself trains to the end.
    late = [tune_config({**LINEAR, "lr": 0.5}, 4), tune_config(seed, 5)]
    assert _rung(wrapped, late, first=4) == ["STOP", "STOP"]


def test_a_warm_started_search_schedules_its_seeds_to_the_end(tmp_path):
    from autopetl.search.runner import SearchPlan, _scheduler
    from autopetl.search.schedulers import SeedsToTheEnd
    from autopetl.trial import flat_key
    from tests.test_search_run import _toy_task

    plan = SearchPlan(
        name="s", data=_toy_task(8), space=SPACE, budget=4, backbone=SMOKE_BACKBONE,
        scheduler="mo-asha", storage_path=tmp_path, warm_start=(LINEAR,),
    )  # fmt: skip
    scheduler = _scheduler(plan)
    assert isinstance(scheduler, SeedsToTheEnd) and scheduler.seeds == {flat_key(LINEAR)}
    assert not isinstance(_scheduler(dataclasses.replace(plan, warm_start=())), SeedsToTheEnd)


def test_in_a_replay_every_seed_trains_to_the_end():
    from pathlib import Path

    from autopetl.search.replay import Strategy, load_tables, replay

    path = Path(__file__).resolve().parents[1] / "benchmarks/results"
    table = load_tables(path / "learning_curves_dsprites_ori_28px.json")[0]["default_grid"]
    seeds = [c.config for c in table.curves[::6]]  # 10 configurations, every method
    runs = {
        to_the_end: replay(
            table, Strategy("tpe", "mo-asha"), seed=0, workers=4,
            max_compute=table.cost() / 4, warm_start=seeds, seeds_to_the_end=to_the_end,
        ).trials
        for to_the_end in (True, False)
    }  # fmt: skip
    first = {t.number: t for t in runs[True] if t.number < len(seeds)}
    assert len(first) == len(seeds) and all(t.status == "completed" for t in first.values())
    # Left to MO-ASHA from grace 1, most seeds are stopped at the first rung.
    early = [t for t in runs[False] if t.number < len(seeds)]
    assert sum(t.status == "pruned" for t in early) >= len(seeds) // 2
