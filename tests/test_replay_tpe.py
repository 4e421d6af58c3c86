"""The replay's TPE proposes exactly what Optuna's TPESampler proposes, only faster."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autopetl.search import samplers
from autopetl.search.replay import Strategy, load_tables, replay
from autopetl.search.replay_tpe import ReplayTPESampler

TABLE = (
    Path(__file__).resolve().parents[1]
    / "benchmarks"
    / "results"
    / "learning_curves_dsprites_ori_28px.json"
)
_MAKE_SAMPLER = samplers.make_sampler


def _replay_with(
    monkeypatch, fast: bool, strategy: Strategy, fraction: float, workers: int, seeded=False
):
    def make(name, space, seed, **options):
        options["replay"] = fast  # the replay asks for the fast one: compare it with Optuna's
        sampler = _MAKE_SAMPLER(name, space, seed, **options)
        assert isinstance(sampler, ReplayTPESampler) == fast
        return sampler

    monkeypatch.setattr(samplers, "make_sampler", make)
    table = load_tables(TABLE)[0]["default_grid"]
    # Seeded: waiting (enqueued) trials in the study before the sampler's first proposal.
    warm = [c.config for c in table.curves[::20]] if seeded else []
    budget = table.cost() * fraction
    return replay(
        table, strategy, seed=3, workers=workers, max_compute=budget, warm_start=warm
    ).trials


@pytest.mark.parametrize(
    ("scheduler", "fraction", "workers", "seeded"),
    [
        ("asha", 0.2, 4, False),  # hundreds of pruned one-epoch trials: what it was made for
        ("mo-asha", 0.5, 4, False),
        ("mo-asha", 0.3, 4, True),  # a warm start's enqueued trials first
        ("none", 0.5, 1, False),  # one worker: no trial is running when another is proposed
    ],
)
def test_every_trial_of_a_replay_is_the_one_optunas_tpe_proposes(
    monkeypatch, scheduler, fraction, workers, seeded
):
    strategy = Strategy("tpe", scheduler)
    fast = _replay_with(monkeypatch, True, strategy, fraction, workers, seeded)
    plain = _replay_with(monkeypatch, False, strategy, fraction, workers, seeded)
    assert len(fast) > 40  # past TPE's 10 random start-up trials, into its model
    assert fast == plain  # configuration, epochs, accuracy and finishing time of every trial


def test_without_constant_liar_it_proposes_what_optuna_proposes():
    """The sampler alone, outside a replay: an ask-and-tell study with a conditional space."""

    def run(sampler: optuna.samplers.BaseSampler) -> list[dict]:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        for _ in range(60):
            trial = study.ask()
            method = trial.suggest_categorical("method", ["a", "b"])
            size = trial.suggest_categorical(f"{method}.size", [1, 2, 4, 8])
            lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            if trial.number % 4 == 3:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, [size * lr * (2 if method == "a" else 1), size])
        return [t.params for t in study.trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"multivariate": True, "group": True, "constant_liar": False, "seed": 5}
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        plain = optuna.samplers.TPESampler(**options)
    assert run(ReplayTPESampler(**options)) == run(plain)


def test_the_replay_speed_benchmark_times_both_samplers_on_the_same_replay(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "speed.json"
    command = [
        sys.executable,
        "benchmarks/replay_speed.py",
        "--fraction",
        "0.05",
        "--out",
        str(out),
    ]
    run = subprocess.run(command, cwd=TABLE.parents[2], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["identical"] is True and report["trials"] > 10
    assert report["optuna_seconds"] > 0 and report["replay_tpe_seconds"] > 0
    assert "faster; every trial the same: True" in run.stdout
