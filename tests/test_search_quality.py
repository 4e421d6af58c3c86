"""MO-ASHA, finite spaces and the replay of strategies on learning-curve tables."""

from __future__ import annotations

import math

import pytest
import yaml

from autopetl.errors import ConfigError
from autopetl.search.replay import (
    Curve,
    CurveTable,
    Strategy,
    config_key,
    front,
    load_tables,
    replay,
    save_tables,
)
from autopetl.search.schedulers import MOASHAScheduler, make_scheduler, nondominated_order
from autopetl.search.space import parse_space
from autopetl.store import hypervolume

OBJECTIVES = dict(metrics=["val_acc", "tunable_params"], modes=["max", "min"])


class _Trial:
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def _rung_decisions(scheduler, points: list[tuple[float, int]]) -> list[str]:
    """Each point reports its first epoch, in order; the scheduler's decision for each."""
    decisions = []
    for i, (acc, params) in enumerate(points):
        trial = _Trial(f"t{i}")
        scheduler.on_trial_add(None, trial)
        result = {"training_iteration": 1, "val_acc": acc, "tunable_params": params}
        decisions.append(scheduler.on_trial_result(None, trial, result))
    return decisions


def test_nondominated_order_puts_each_front_before_the_next():
    # minimised: (-acc, log params); b is dominated by a, d by everything
    points = [(-0.6, 5.0), (-0.5, 5.5), (-0.2, 3.8), (-0.1, 6.0)]
    order = nondominated_order(points)
    assert order[:2] == [0, 2]  # front 1: best accuracy first, then the cheap one
    assert order[2:] == [1, 3]


def test_mo_asha_keeps_the_cheapest_trial_that_asha_stops():
    """A linear probe: far behind on accuracy, but the cheapest point, so on the front."""
    leaders = [(0.60, 100_000), (0.55, 200_000), (0.50, 300_000)]
    probe = (0.20, 6_000)
    asha = make_scheduler("asha", max_t=9, grace_period=1, **OBJECTIVES)
    mo_asha = make_scheduler(
        "mo-asha", max_t=9, grace_period=1, log_metrics=["tunable_params"], **OBJECTIVES
    )
    assert isinstance(mo_asha, MOASHAScheduler)
    assert _rung_decisions(asha, [*leaders, probe])[-1] == "STOP"
    assert _rung_decisions(mo_asha, [*leaders, probe])[-1] == "CONTINUE"


def test_mo_asha_stops_a_dominated_trial_and_lets_the_first_of_a_rung_go_on():
    scheduler = make_scheduler("mo-asha", max_t=9, grace_period=1, **OBJECTIVES)
    decisions = _rung_decisions(
        scheduler, [(0.6, 50_000), (0.55, 40_000), (0.5, 30_000), (0.3, 500_000)]
    )
    assert decisions[0] == "CONTINUE"  # nothing to compare with yet
    assert decisions[-1] == "STOP"  # worse and bigger than every other trial
    last = scheduler.on_trial_result(
        None, _Trial("t0"), {"training_iteration": 9, "val_acc": 0.7, "tunable_params": 50_000}
    )
    assert last == "STOP"  # the horizon


def test_schedulers_refuse_bad_settings():
    with pytest.raises(ConfigError, match="one of mo-asha, asha, none"):
        make_scheduler("hyperband", max_t=9, **OBJECTIVES)
    with pytest.raises(ConfigError, match="reduction factor"):
        make_scheduler("mo-asha", max_t=9, reduction_factor=1, **OBJECTIVES)
    assert type(make_scheduler("asha", max_t=1, **OBJECTIVES)).__name__ == "FIFOScheduler"
    short = make_scheduler("mo-asha", max_t=2, grace_period=3, **OBJECTIVES)
    assert isinstance(short, MOASHAScheduler) and list(short._rungs) == [1.0]  # one rung kept


# --- finite spaces -----------------------------------------------------------------------------

GRID_SPACE = """
sampler: grid
methods:
  linear: {}
  vpt:
    prompt_length: {type: categorical, choices: [1, 10]}
    deep: {type: categorical, choices: [true, false]}
  lora:
    rank: {type: int, low: 1, high: 3}
train:
  lr: {type: categorical, choices: [1.0e-3, 1.0e-2]}
  epochs: 6
"""


def _grid_space():
    return parse_space(yaml.safe_load(GRID_SPACE), name="grid_test", where="<grid_test>")


def test_a_finite_space_lists_each_method_with_its_own_options_only():
    configs = _grid_space().configurations()
    # linear 2 lrs + vpt 2x2x2 + lora 3x2: methods are not crossed with each other's options
    assert len(configs) == 2 + 8 + 6
    assert len({config_key(c) for c in configs}) == len(configs)
    assert {k for k in configs[0] if k != "method"} == {"lr", "epochs"}


def test_a_sub_space_keeps_some_methods_with_the_same_configurations():
    from autopetl.search.space import restricted_to

    space = _grid_space()
    sub = restricted_to(space, ["linear", "lora"])
    assert sub.configurations() == [c for c in space.configurations() if c["method"] != "vpt"]
    assert set(sub.source["methods"]) == {"linear", "lora"}
    with pytest.raises(ConfigError, match="has methods linear, vpt, lora"):
        restricted_to(space, ["adapter"])


# --- learning-curve tables and their replay ----------------------------------------------------


def _synthetic_table(space=None) -> CurveTable:
    """Curves with a shape a search can learn: prompts learn slowly, lr 1e-2 beats 1e-3."""
    space = space or _grid_space()
    curves = []
    for i, config in enumerate(space.configurations()):
        method = config["method"]
        size = {"linear": 1.0, "vpt": 1.5 + config.get("vpt.prompt_length", 0) / 10, "lora": 2.0}
        final = {"linear": 0.3, "vpt": 0.55, "lora": 0.6}[method] + (
            0.1 if config["lr"] > 5e-3 else 0
        )
        final += 0.01 * (i % 3)  # distinct points
        epochs = config["epochs"]
        acc = tuple(final * (1 - math.exp(-3 * (e + 1) / epochs)) for e in range(epochs))
        params = int(6_000 * size[method] * (1 + config.get("lora.rank", 0)))
        curves.append(Curve(config, params, acc, tuple([size[method]] * epochs)))
    return CurveTable("synthetic", space, curves)


@pytest.mark.parametrize("workers", [1, 3])
def test_grid_without_early_stopping_reproduces_the_tables_front(workers):
    table = _synthetic_table()
    result = replay(table, Strategy("grid", "none"), seed=0, workers=workers, max_compute=1e9)
    assert sorted(t.config_key for t in result.trials) == sorted(
        config_key(c.config) for c in table.curves
    )
    assert all(t.status == "completed" for t in result.trials)
    assert result.front_at() == table.front()
    assert math.isclose(result.trials[-1].compute, table.cost())


@pytest.mark.parametrize("strategy", [Strategy("tpe", "mo-asha"), Strategy("nsga2", "asha")])
def test_replay_is_deterministic_for_a_seed(strategy):
    table = _synthetic_table()
    runs = [
        replay(table, strategy, seed=seed, workers=2, max_compute=table.cost() / 2)
        for seed in (7, 7, 8)
    ]
    assert runs[0].trials == runs[1].trials
    assert [t.config_key for t in runs[0].trials] != [t.config_key for t in runs[2].trials]
    # the budget is respected and early stopping happened
    assert runs[0].trials[-1].compute <= table.cost() / 2
    assert any(t.status == "pruned" for t in runs[0].trials)


def test_hypervolume_curve_grows_to_the_front_it_reports():
    table = _synthetic_table()
    result = replay(table, Strategy("random", "none"), seed=0, workers=2, max_compute=table.cost())
    reference = (0.0, 1e6)
    levels = [table.cost() * f for f in (0.1, 0.5, 1.0)]
    curve = result.hypervolume_curve(reference, levels)
    assert curve == sorted(curve)
    assert math.isclose(curve[-1], hypervolume(result.front_at(), reference))
    assert curve[-1] <= hypervolume(table.front(), reference) + 1e-12


def test_a_table_round_trips_through_its_file(tmp_path):
    table = _synthetic_table()
    path = tmp_path / "curves.json"
    save_tables(path, {"main": table}, {"task": "vtab/test"})
    (loaded,), meta = list(load_tables(path)[0].values()), load_tables(path)[1]
    assert meta == {"task": "vtab/test"}
    assert loaded.curves == table.curves and loaded.front() == table.front()
    with pytest.raises(ConfigError, match="no curve"):
        loaded.lookup({"method": "linear", "lr": 0.5, "epochs": 6})


def test_front_keeps_each_point_once():
    assert front([(0.5, 10.0), (0.5, 10.0), (0.4, 20.0), (0.6, 30.0)]) == [(0.5, 10.0), (0.6, 30.0)]


# --- real searches: MO-ASHA in `autopetl search`, and a table recorded by one ------------------


@pytest.mark.slow
def test_a_mo_asha_smoke_search_finishes_its_budget(ray_session, tmp_path, sqlite_url):
    from autopetl.cli import main
    from autopetl.store import open_store

    args = ["search", "--task", "vtab/dsprites_loc", "--budget", "8", "--smoke-test"]
    args += ["--scheduler", "mo-asha", "--name", "mo", "--db", sqlite_url]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    store = open_store(sqlite_url)
    trials = store.trials("mo")
    assert len(trials) == 8 and {t.status for t in trials} <= {"completed", "pruned"}
    assert store.get_search("mo").options["scheduler"] == "mo-asha"


@pytest.mark.slow
def test_a_recorded_grid_search_is_a_table_whose_replay_gives_its_front(
    ray_session, tmp_path, sqlite_url
):
    from autopetl.cli import main
    from autopetl.search.replay_tables import table_from_store
    from autopetl.store import open_store

    space = tmp_path / "tiny_grid.yaml"
    space.write_text(
        "methods:\n  linear: {}\n  vpt: {prompt_length: 1, deep: false}\n"
        "train: {lr: {type: categorical, choices: [1.0e-3, 1.0e-1]}, epochs: 2}\nsampler: grid\n"
    )
    args = ["search", "--task", "vtab/dsprites_loc", "--space", str(space), "--budget", "99"]
    args += ["--smoke-test", "--scheduler", "none", "--name", "table", "--db", sqlite_url]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    store = open_store(sqlite_url)
    assert len(store.trials("table")) == 4  # the budget was cut to the grid's 4 configurations
    table = table_from_store(store, "table")
    assert table.meta["missing"] == 0 and len(table.curves) == 4 and table.epochs == 2
    recorded_front = front(
        (t.val_acc, float(t.tunable_params)) for t in store.pareto_front("table")
    )
    assert table.front() == recorded_front
    result = replay(table, Strategy("grid", "none"), seed=3, workers=2, max_compute=1e9)
    assert result.front_at() == recorded_front


def test_a_grid_search_resumed_after_its_driver_died_trains_the_interrupted_configuration(
    sqlite_url,
):
    import optuna

    from autopetl.search.runner import _recover
    from autopetl.search.samplers import make_sampler
    from autopetl.store import open_store

    store = open_store(sqlite_url)
    space = _grid_space()
    store.upsert_search("g", "vtab/dsprites_loc", space.name, space.source, {}, status="running")
    study = optuna.create_study(
        study_name="g",
        storage=store.optuna_storage(),
        sampler=make_sampler("grid", space, 0),
        directions=["maximize", "minimize"],
    )
    asked = study.ask()
    config = space(asked)  # the grid's first configuration, left running by a dead driver
    store.upsert_trial("g", "0", number=0, method=config["method"], config=config, status="running")
    assert _recover(store, study, "g", retry=True) == 1
    assert store.trials("g")[0].status == "failed"
    again = study.ask()
    assert again.number == 1 and space(again) | {"trial_number": 0} == config


def test_the_search_quality_benchmark_reports_what_the_defaults_rest_on(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    table = tmp_path / "curves.json"
    save_tables(table, {"main": _synthetic_table()}, {"task": "vtab/test", "img_size": 28})
    out = tmp_path / "quality.json"
    command = [sys.executable, "benchmarks/search_quality.py", "--quick", "--table", str(table)]
    run = subprocess.run(
        [*command, "--out", str(out)], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["default_strategy"] in report["strategies"]
    assert report["baseline_final_hv"] == pytest.approx(1.0)  # the whole grid finds the front
    reach = report["default_compute_to_reach_grid_hv"]
    assert reach is None or 0 < reach <= 1
    assert report["default_over_random_hv_auc"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    rows = [line for line in run.stdout.splitlines() if "final hv" in line]
    assert len(rows) == 1 + len(report["strategies"])  # the baseline, then one per strategy
    assert all(len(line) < 200 for line in run.stdout.splitlines())  # a line per step, whole

    # Every replay is kept beside the report; --resume replays none of them again and reports
    # the same figures (a long run goes on where it stopped).
    kept = out.with_suffix(".runs.jsonl").read_text().splitlines()
    assert len(kept) == 3 * (1 + len(report["strategies"]))  # 3 seeds: the baseline, each strategy
    again = subprocess.run(
        [*command, "--out", str(out), "--resume"], cwd=repo, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"resuming: {len(kept)} replays" in again.stdout
    assert out.with_suffix(".runs.jsonl").read_text().splitlines() == kept
    resumed = json.loads(out.read_text())
    assert (
        resumed["strategies"] == report["strategies"] and resumed["baseline"] == report["baseline"]
    )

    # The table docs/SEARCH.md shows, from the report: the baseline, then each strategy.
    md = subprocess.run(
        [sys.executable, "benchmarks/search_quality.py", "--out", str(out), "--markdown"],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = md.stdout.splitlines()
    assert md.returncode == 0 and len(lines) == 3 + len(report["strategies"])
    default = next(line for line in lines if "(the default)" in line)
    area = f"{report['strategies'][report['default_strategy']]['hv_auc']:.3f}"
    assert default.startswith(f"| **{report['default_strategy']}") and area in default

    partial = _synthetic_table()
    partial.meta["missing"], partial.meta["configurations"] = 3, 19
    save_tables(table, {"main": partial}, {})
    run = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "misses 3 of its 19 configurations" in run.stdout


def test_the_grid_ignores_a_trial_that_failed_before_its_first_suggestion():
    import optuna

    from autopetl.search.samplers import make_sampler

    space = _grid_space()
    study = optuna.create_study(
        sampler=make_sampler("grid", space, 0), directions=["maximize", "minimize"]
    )
    # failed with no parameters at all (a dead worker, or a queued trial an older version failed)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    seen = {config_key(space(study.ask())) for _ in range(3)}
    assert len(seen) == 3  # BruteForceSampler alone raises "param_name mismatch" here
