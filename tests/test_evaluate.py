"""``autopetl evaluate``: the VTAB-1k protocol's re-training on train800val200 and one test pass.

One small smoke search (3 trials, 2 epochs, tiny ViT) is shared by the module; each test works on
its own copy of that database.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import sys
from pathlib import Path

import pytest
import torch

import autopetl.evaluation as evaluation
import autopetl.tasks.data
import autopetl.training
from autopetl.backbones import SMOKE_BACKBONE, build_backbone, describe, input_stats
from autopetl.cli import main
from autopetl.cli._invocation import command
from autopetl.evaluation import (
    best_configuration,
    configuration_results,
    evaluate_jobs,
    plan_evaluation,
    select_configurations,
)
from autopetl.methods import build_method
from autopetl.methods.io import WEIGHTS_FILE, load_tunable
from autopetl.pipeline import attach
from autopetl.store import open_store
from autopetl.tasks import SplitData
from autopetl.training import TrainConfig, train

pytestmark = pytest.mark.slow

SEARCH = "ev"
_ORIGINAL_LOAD_SPLIT = autopetl.tasks.data.load_split


def _record_splits(monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    """Record every split any autopetl module loads (each module holds its own name for it)."""

    def recording(task, split, **kwargs):
        events.append(split)
        return _ORIGINAL_LOAD_SPLIT(task, split, **kwargs)

    for name, module in list(sys.modules.items()):
        if (
            name.startswith("autopetl")
            and getattr(module, "load_split", None) is _ORIGINAL_LOAD_SPLIT
        ):
            monkeypatch.setattr(module, "load_split", recording)


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    """A finished smoke search (no ASHA: all 3 trials complete) and the splits its driver read."""
    base = tmp_path_factory.getbasetemp()
    db = tmp_path_factory.mktemp("search") / "autopetl.db"
    events: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        # The autouse isolation fixture is per test; a module fixture sets the same places.
        mp.setenv("AUTOPETL_CACHE", str(base / "cache"))
        mp.setenv("AUTOPETL_HOME", str(base / "home"))
        mp.delenv("AUTOPETL_DATA", raising=False)
        mp.delenv("AUTOPETL_DB", raising=False)
        _record_splits(mp, events)
        argv = ["search", "--task", "vtab/dsprites_loc", "--smoke-test", "--budget", "3"]
        argv += ["--scheduler", "none", "--name", SEARCH, "--db", f"sqlite:///{db}"]
        assert main(argv) == 0
    return db, events


@pytest.fixture
def search_db(searched, tmp_path) -> str:
    """This test's own copy of the searched database (SQLite's backup API copies the WAL too)."""
    src, _ = searched
    dst = tmp_path / "autopetl.db"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return f"sqlite:///{dst}"


def test_evaluate_pareto_three_seeds_then_report(search_db, tmp_path, capsys):
    store = open_store(search_db)
    front = store.pareto_front(search_name=SEARCH)
    assert front
    artifacts = tmp_path / "artifacts"
    argv = ["evaluate", "--search", SEARCH, "--pareto", "--seeds", "3", "--smoke-test"]
    assert main([*argv, "--db", search_db, "--artifacts", str(artifacts)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "±" in out and "test accuracy of ev" in out
    # Outside a terminal (captured here) one line per finished run, as it finishes.
    runs_said = [line for line in captured.err.splitlines() if line.startswith("run ")]
    assert len(runs_said) == 3 * len(front) and runs_said[-1].startswith(f"run {len(runs_said)}/")
    assert all(": test " in line for line in runs_said), runs_said

    evaluations = store.evaluations(SEARCH)
    assert len(evaluations) == 3 * len(front)
    for trial in front:
        runs = [e for e in evaluations if e.trial_key == trial.trial_key]
        assert sorted(e.seed for e in runs) == [0, 1, 2]
        for e in runs:
            assert e.split == "test" and 0.0 <= e.test_acc <= 1.0
            assert e.metrics["tunable_params"] == trial.tunable_params
            assert e.metrics["train_split"] == "train800val200"
            assert e.metrics["train_images"] == evaluation.SMOKE_TRAIN_LIMIT
            assert e.metrics["test_images"] == evaluation.SMOKE_TEST_SIZE
            assert e.metrics["epochs"] == trial.config["epochs"] == 2
            assert e.metrics["wall_time_s"] > 0
    # Every run's weights are saved, recorded with their digest, and load back.
    arts = store.artifacts(SEARCH)
    assert len(arts) == len(evaluations)
    for art in arts:
        weights = Path(art.path) / WEIGHTS_FILE
        assert Path(art.path).is_relative_to(artifacts)
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == art.sha256
        assert weights.stat().st_size == art.size_bytes
    first = arts[0]
    trial = store.trial(SEARCH, first.trial_key)
    loaded = load_tunable(first.path, backbone=build_backbone(SMOKE_BACKBONE, 16))
    assert loaded.method.name == trial.method and loaded.num_classes == 16

    results = configuration_results(store, SEARCH)
    assert {r.trial_key for r in results} == {t.trial_key for t in front}
    assert all(len(r.seeds) == 3 and r.std >= 0 for r in results)
    best = best_configuration(store, "dsprites_loc")
    assert best is not None and best.mean == max(r.mean for r in results)

    assert main(["report", "--format", "md", "--db", search_db]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    column = head.index("dsprites_loc")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    # Each row names its method and the one backbone (weights, input size) it was measured on.
    shown = describe(results[0].backbone)
    assert {r[0] for r in rows} == {f"{t.method} · {shown}" for t in front}
    for row in rows:
        # The cell is the method's best configuration's mean over seeds, in percent ("m ± s").
        method = row[0].split(" · ")[0]
        mine = [r for r in results if r.method == method]
        mean = float(row[column].split("±")[0])
        assert mean == pytest.approx(100 * max(r.mean for r in mine), abs=0.051)


def test_missing_search_is_a_clear_error(sqlite_url, capsys):
    open_store(sqlite_url).close()  # an existing, empty database
    assert main(["evaluate", "--search", "ghost", "--db", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The fix is named as the user can run it (plain `autopetl` once the venv is activated).
    fix = command("searches")
    assert err == [f"autopetl: error: no search named 'ghost'; `{fix}` lists them"]


def test_search_without_completed_trials_is_a_clear_error(sqlite_url, capsys):
    store = open_store(sqlite_url)
    store.upsert_search("empty", "vtab/dsprites_loc", "default", {}, SMOKE_BACKBONE.to_dict())
    store.upsert_trial("empty", "0", number=0, method="vpt", status="failed", error="boom")
    store.upsert_trial("empty", "1", number=1, method="vpt", status="pruned", val_acc=0.9)
    for extra in ([], ["--best"]):
        assert main(["evaluate", "--search", "empty", *extra, "--db", sqlite_url]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "has no completed trials to evaluate" in err[0], err
    assert main(["evaluate", "--search", "empty", "--trial", "1", "--db", sqlite_url]) == 2
    assert "is pruned; only completed trials" in capsys.readouterr().err
    assert main(["evaluate", "--search", "empty", "--trial", "7", "--db", sqlite_url]) == 2
    assert "has no trial '7'" in capsys.readouterr().err
    assert store.evaluations("empty") == []


def test_no_path_reaches_the_test_split_before_training_ends(
    searched, search_db, tmp_path, monkeypatch
):
    """The search and the selection never read the test split; evaluation reads it only after
    training has returned, and training gets no evaluation split at all."""
    _, search_events = searched
    assert search_events and "test" not in search_events
    assert set(search_events) == {"train800", "val200"}

    events: list[str] = []
    _record_splits(monkeypatch, events)
    trained_with: list[object] = []

    def recording_train(model, train_data, val_data, config, **kwargs):
        trained_with.append(val_data)
        result = train(model, train_data, val_data, config, **kwargs)
        events.append("train ended")
        return result

    monkeypatch.setattr(autopetl.training, "train", recording_train)
    store = open_store(search_db)
    chosen = select_configurations(store, SEARCH, "pareto")
    chosen += select_configurations(store, SEARCH, "best")
    assert "test" not in events  # selection reads the store, never data
    best = select_configurations(store, SEARCH, "best")
    jobs = plan_evaluation(
        store, SEARCH, best, [0, 1], smoke_test=True, artifacts_dir=tmp_path / "a"
    )
    assert "test" not in events
    runs = evaluate_jobs(store, jobs, use_ray=False)
    assert all(r.error is None for r in runs)
    assert trained_with == [None, None]
    # Each test read comes right after a training run ended, never before the first one.
    assert events.count("test") == 2
    for i, event in enumerate(events):
        if event == "test":
            assert events[i - 1] == "train ended", events
    assert events.index("train ended") < events.index("test")


def test_selection_ignores_test_accuracy(sqlite_url):
    """Evaluation rows (even perfect test scores) never change what pareto or best select."""
    store = open_store(sqlite_url)
    store.upsert_search("s", "vtab/dsprites_loc", "default", {}, SMOKE_BACKBONE.to_dict())
    points = {"0": (0.9, 100), "1": (0.5, 1000), "2": (0.7, 50), "3": (0.95, 5000)}
    for key, (acc, params) in points.items():
        store.upsert_trial(
            "s",
            key,
            number=int(key),
            method="vpt",
            config={"method": "vpt"},
            status="completed",
            val_acc=acc,
            tunable_params=params,
        )
    before = {
        mode: [t.trial_key for t in select_configurations(store, "s", mode)]
        for mode in ("pareto", "best")
    }
    assert before == {"pareto": ["2", "0", "3"], "best": ["3"]}
    # The dominated trial gets a perfect test score, the val-best the worst one.
    for seed in range(3):
        store.upsert_evaluation("s", "1", seed=seed, split="test", test_acc=1.0)
        store.upsert_evaluation("s", "3", seed=seed, split="test", test_acc=0.0)
    after = {
        mode: [t.trial_key for t in select_configurations(store, "s", mode)]
        for mode in ("pareto", "best")
    }
    assert after == before


def test_best_per_method_is_each_methods_best_validation_accuracy(sqlite_url):
    store = open_store(sqlite_url)
    store.upsert_search("m", "vtab/dsprites_loc", "default", {}, SMOKE_BACKBONE.to_dict())
    points = {"0": ("vpt", 0.6, 10), "1": ("vpt", 0.8, 99), "2": ("lora", 0.7, 5),
              "3": ("lora", 0.7, 3), "4": ("linear", 0.2, 1)}  # fmt: skip
    for key, (method, acc, params) in points.items():
        store.upsert_trial("m", key, number=int(key), method=method, config={"method": method},
                           status="completed", val_acc=acc, tunable_params=params)  # fmt: skip
    chosen = select_configurations(store, "m", "best-per-method")
    # One per method; a tie in val accuracy goes to fewer parameters.
    assert sorted((t.method, t.trial_key) for t in chosen) == [
        ("linear", "4"), ("lora", "3"), ("vpt", "1")
    ]  # fmt: skip


def test_training_without_a_validation_split():
    """val_data=None trains the same way and reports no accuracy, so nothing picks an epoch."""
    torch.manual_seed(0)
    backbone = build_backbone(SMOKE_BACKBONE, 2)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=g)
    data = SplitData(torch.randint(0, 255, (64, 3, 32, 32), generator=g, dtype=torch.uint8), labels)
    mean, std = input_stats(backbone)
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-3)
    results = []
    for val in (None, data):
        model = attach(backbone, build_method("linear"), seed=0)
        results.append((model, train(model, data, val, config, mean=mean, std=std)))
    (m_none, r_none), (m_val, r_val) = results
    assert [math.isnan(e.val_acc) for e in r_none.epochs] == [True, True]
    assert r_none.best_epoch == 2 and math.isnan(r_none.last_val_acc)
    assert [e.train_loss for e in r_none.epochs] == [e.train_loss for e in r_val.epochs]
    for a, b in zip(
        m_none.tunable_state_dict().values(), m_val.tunable_state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "names",
    [
        ("a/b\\c", "a_b_c", "a%2Fb%5Cc", "a.b", "a_b"),
        ("..", ".", "", "%", "%25"),
        ("été", "ete", "e%C3%A9te"),
    ],
)
def test_artifact_folders_are_inside_the_root_and_never_shared(tmp_path, names):
    root = tmp_path / "artifacts"
    folders = [evaluation.artifact_dir(root, name, "0", 0) for name in names]
    assert len(set(folders)) == len(names)  # no two names share a folder
    for folder in folders:
        assert folder.resolve().is_relative_to(root.resolve())
        assert folder.parent.parent.parent == root  # exactly ROOT/<search>/<trial>/seed0
