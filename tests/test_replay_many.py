"""The replay of many studies on shared workers (autopetl/search/replay_many.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import yaml

from autopetl.errors import ConfigError
from autopetl.search.replay import Curve, CurveTable, Strategy
from autopetl.search.replay_many import busy_at, replay_many
from autopetl.search.space import parse_space

SPACE = """
sampler: tpe
methods:
  linear: {}
  vpt:
    prompt_length: {type: categorical, choices: [1, 10]}
  lora:
    rank: {type: categorical, choices: [1, 4, 16]}
train:
  lr: {type: categorical, choices: [1.0e-3, 3.0e-3, 1.0e-2]}
  epochs: 6
"""
DEFAULT = Strategy("tpe", "mo-asha", grace_period=1, reduction_factor=3)


def _table(name: str = "t", *, shift: float = 0.0, seconds: float | None = None) -> CurveTable:
    """18 configurations whose curves a search can learn; ``shift`` moves every accuracy,
    ``seconds`` makes every epoch cost the same (else bigger methods are slower)."""
    space = parse_space(yaml.safe_load(SPACE), name="many_test", where="<many_test>")
    curves = []
    for i, config in enumerate(space.configurations()):
        method = config["method"]
        size = {"linear": 1.0, "vpt": 1.5 + config.get("vpt.prompt_length", 0) / 10, "lora": 2.0}
        final = {"linear": 0.3, "vpt": 0.55, "lora": 0.6}[method] + 0.1 * (config["lr"] > 5e-3)
        final += 0.01 * (i % 3) + shift
        acc = tuple(final * (1 - math.exp(-3 * (e + 1) / 6)) for e in range(6))
        params = int(6_000 * size[method] * (1 + config.get("lora.rank", 0)))
        cost = seconds if seconds is not None else size[method]
        curves.append(Curve(config, params, acc, (cost,) * 6))
    return CurveTable(name, space, curves)


def test_a_shared_replay_finishes_exactly_each_studys_budget():
    tables = [_table("a"), _table("b"), _table("c")]
    result = replay_many(tables, DEFAULT, seeds=[1, 2, 3], workers=4, budget=12)
    assert [result.finished(s) for s in result.studies] == [12, 12, 12]
    assert {t.status for t in result.trials} == {"completed", "pruned"}
    assert all(t.end > t.start >= 0 for t in result.trials)
    # Never more trials at once than workers, and the busy steps integrate to the busy time.
    assert max(n for _, n in result.busy) <= 4
    steps = [*result.busy, (result.makespan, 0)]
    area = sum((t1 - t0) * n for (t0, n), (t1, _) in itertools.pairwise(steps))
    assert math.isclose(area, result.busy_seconds)
    assert 0 < result.busy_share <= 1
    assert all(hv > 0 for hv in result.hypervolumes().values())


def test_sharing_the_workers_removes_the_tails_of_one_study_after_another():
    # Every trial trains 6 epochs of 1 s. Alone, a study of 6 trials on 4 workers runs 4 and
    # then 2, leaving two workers idle for half its time: 12 s, busy 0.75. Shared, 18 trials
    # run 4, 4, 4, 4 and 2 at a time: 30 s instead of 36, busy 0.9.
    tables = [_table(n, seconds=1.0) for n in "abc"]
    fifo = Strategy("random", "none")
    alone = replay_many(tables, fifo, seeds=[0, 1, 2], workers=4, budget=6, shared=False)
    shared = replay_many(tables, fifo, seeds=[0, 1, 2], workers=4, budget=6)
    assert alone.makespan == pytest.approx(36) and alone.busy_share == pytest.approx(0.75)
    assert shared.makespan == pytest.approx(30) and shared.busy_share == pytest.approx(0.9)
    assert busy_at(alone.busy, [0, 6.5, 12.5]) == [4, 2, 4]


def test_one_study_after_another_is_each_study_replayed_alone_end_to_end():
    tables = [_table("a"), _table("b", shift=0.05), _table("c")]
    seeds = [5, 6, 7]
    sequential = replay_many(tables, DEFAULT, seeds=seeds, workers=3, budget=10, shared=False)
    alone = [
        replay_many([t], DEFAULT, seeds=[s], workers=3, budget=10)
        for t, s in zip(tables, seeds, strict=True)
    ]
    assert sequential.makespan == pytest.approx(sum(r.makespan for r in alone))
    for i, (name, single) in enumerate(zip(sequential.studies, alone, strict=True)):
        ran = [(t.config_key, t.status, t.epochs) for t in sequential.trials if t.study == name]
        assert ran == [(t.config_key, t.status, t.epochs) for t in single.trials], i
        assert sequential.hypervolume(name) == pytest.approx(
            single.hypervolumes()[f"00:{name[3:]}"]
        )


def test_a_replay_is_deterministic_for_its_seeds():
    tables = [_table("a"), _table("b")]
    runs = [
        replay_many(tables, DEFAULT, seeds=seeds, workers=3, budget=12)
        for seeds in ([1, 2], [1, 2], [3, 4])
    ]
    assert runs[0].trials == runs[1].trials and runs[0].busy == runs[1].busy
    assert [t.config_key for t in runs[0].trials] != [t.config_key for t in runs[2].trials]


def test_a_trial_is_ranked_at_a_rung_only_within_its_own_study():
    # Study b's curves are study a's less 0.25 accuracy, and both sample the same configurations
    # (random search, one seed). Ranked among its own trials, each b trial fares exactly as its
    # twin in a (MO-ASHA ranks by order, which a shift keeps); ranked against a's trials, a b
    # trial would be dominated and stopped at every rung a's trials had reached.
    tables = [_table("a", shift=0.25), _table("b")]
    strategy = Strategy("random", "mo-asha", grace_period=1, reduction_factor=3)
    result = replay_many(tables, strategy, seeds=[9, 9], workers=4, budget=16)
    a, b = ([(t.config_key, t.status, t.epochs) for t in result.trials if t.study == s]
            for s in result.studies)  # fmt: skip
    assert sorted(a) == sorted(b)
    assert sum(status == "completed" for _, status, _ in b) >= 3


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ConfigError, match="one seed per table"):
        replay_many([_table()], DEFAULT, seeds=[1, 2], workers=2, budget=4)
    with pytest.raises(ConfigError, match="at least 1"):
        replay_many([_table()], DEFAULT, seeds=[1], workers=0, budget=4)
