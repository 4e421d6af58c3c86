"""``autopetl search`` as a user runs it: mistakes caught before anything is written, and a
driver killed mid-search then resumed to exactly its budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopetl.cli import main
from autopetl.store import open_store


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "vtab/eurosat"], "--data-root"),
        (["--task", "vtab/nope"], "unknown task"),
        (["--task", "vtab/dsprites_loc", "--space", "nope"], "search space 'nope' not found"),
        (["--task", "vtab/dsprites_loc", "--resume"], "--resume needs --name"),
        (["--task", "vtab/dsprites_loc", "--resume", "--name", "ghost"], "no search named 'ghost'"),
        (
            ["--task", "vtab/dsprites_loc", "--address", "auto"],
            "needs a database every node can reach",
        ),
        (["--task", "vtab/dsprites_loc", "--weights", "/no/such.safetensors"], "does not exist"),
        (["--task", "vtab/dsprites_loc", "--img-size", "30"], "not a multiple of"),
        (["--task", "vtab/dsprites_loc", "--cpus-per-trial", "512"], "the largest Ray node has"),
    ],
)
def test_mistakes_fail_cleanly_and_write_nothing(args, message, capsys, tmp_path, sqlite_url):
    assert main(["search", *args, "--smoke-test", "--db", sqlite_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("autopetl: error:") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)
    # Not even an empty database file: a refused command leaves the disk as it found it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_a_refusal_leaves_a_database_that_was_there_as_it_was(capsys, sqlite_url):
    store = open_store(sqlite_url)
    store.upsert_search("kept", "vtab/dsprites_loc", "default", {}, {}, status="completed")
    args = ["search", "--task", "vtab/dsprites_loc", "--smoke-test", "--db", sqlite_url]
    assert main([*args, "--cpus-per-trial", "512"]) == 2
    assert [s.name for s in open_store(sqlite_url).list_searches()] == ["kept"]


def test_a_checkpoint_of_another_backbone_fails_before_ray(tmp_path, capsys, sqlite_url):
    import torch
    from safetensors.torch import save_file

    from autopetl.backbones import SMOKE_BACKBONE, BackboneSpec, build_backbone

    # A DINOv2 model (layer scale) of the smoke model's shape, given to the smoke model.
    dinov2 = BackboneSpec("vit_small_patch14_dinov2", "none", 32, SMOKE_BACKBONE.overrides)
    state = build_backbone(dinov2, 1000).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "d.safetensors"))
    args = ["search", "--task", "vtab/dsprites_loc", "--smoke-test", "--db", sqlite_url]
    assert main([*args, "--weights", str(tmp_path / "d.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "not a checkpoint of vit_tiny_patch16_224" in err[-1] and "ls1.gamma" in err[-1]
    assert "Traceback" not in "\n".join(err) and "Ray" not in "\n".join(err)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    assert torch.is_tensor(state["blocks.0.ls1.gamma"])


def test_malformed_space_file_fails_cleanly(tmp_path, capsys, sqlite_url):
    bad = tmp_path / "space.yaml"
    bad.write_text("methods: {vpt: {prompt_length: {type: int, low: 5, high: 1}}}\n")
    assert (
        main(
            [
                "search",
                "--task",
                "vtab/dsprites_loc",
                "--space",
                str(bad),
                "--smoke-test",
                "--db",
                sqlite_url,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{bad}: methods.vpt.prompt_length: empty range" in err
    assert open_store(sqlite_url).list_searches() == []


def _search(name: str, db: str, budget: int, env: dict, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "autopetl",
        "search",
        "--task",
        "vtab/dsprites_loc",
        "--budget",
        str(budget),
        "--smoke-test",
        "--name",
        name,
        "--db",
        db,
        "--cpus-per-trial",
        "1",
        "--max-concurrent",
        "2",
        *extra,
    ]
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@pytest.mark.slow
def test_driver_killed_then_resumed_meets_the_budget_exactly(tmp_path, sqlite_url):
    # The CLI starts its own local Ray (never the test session's), so killing it kills it all.
    # Ray's token mode (autopetl's default for a local instance), as a user runs it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env |= {"AUTOPETL_HOME": str(tmp_path / "home")}
    budget = 8
    # 8 epochs a trial, not the smoke test's 2: trials on reused workers took tens of ms, and the
    # whole budget could finish between two polls of the store (the kill then came too late).
    slower = ("--epochs", "8")
    first = _search("killme", sqlite_url, budget, env, *slower)
    store = open_store(sqlite_url)
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None:
        done = (
            [t for t in store.trials("killme") if t.status in ("completed", "pruned")]
            if store.get_search("killme")
            else []
        )
        if len(done) >= 2:
            break
        time.sleep(0.1)
    assert first.poll() is None, first.stdout.read()
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the local Ray it started
    first.wait()
    before = store.trials("killme")
    assert 2 <= len([t for t in before if t.status in ("completed", "pruned")]) < budget

    second = _search("killme", sqlite_url, budget, env, *slower)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    trials = store.trials("killme")
    finished = [t for t in trials if t.status in ("completed", "pruned")]
    assert len(finished) == budget, out
    assert not [t for t in trials if t.status == "running"]
    assert len({t.trial_key for t in trials}) == len(trials)
    # What was finished before the kill is kept as it was, not re-run.
    kept = {t.trial_key: t for t in trials}
    for t in before:
        if t.status in ("completed", "pruned"):
            assert kept[t.trial_key].status == t.status and kept[t.trial_key].val_acc == t.val_acc
    assert store.get_search("killme").status == "completed"
    import optuna

    study = optuna.load_study(study_name="killme", storage=store.optuna_storage())
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    assert "Pareto front of killme" in out


def _record(key: str, acc: float, params: int):
    from datetime import datetime, timezone

    from autopetl.store import TrialRecord

    now = datetime.now(timezone.utc)
    return TrialRecord(
        id=int(key), search_name="s", trial_key=key, number=int(key), method="vpt",
        config={"method": "vpt", "lr": 0.001 * int(key)}, status="completed", val_acc=acc,
        last_val_acc=acc, best_epoch=1, tunable_params=params, tunable_params_without_head=params,
        wall_time_s=1.0, images_per_s=1.0, peak_memory_mb=1.0, cost={},
        epochs_done=1, attempts=1, error=None, created_at=now, updated_at=now, finished_at=now,
    )  # fmt: skip


def test_the_summary_shows_each_point_of_the_front_once():
    from rich.console import Console

    from autopetl.cli._search_view import pareto_table
    from autopetl.search.runner import SearchOutcome

    def render(front) -> str:
        console = Console(record=True, width=200)
        console.print(pareto_table(SearchOutcome("s", "completed", {}, front, 1.0, 1)))
        return console.export_text()

    tied = [_record("1", 0.5, 100), _record("2", 0.5, 100), _record("3", 0.5, 100)]
    text = render([*tied, _record("4", 0.7, 200), _record("5", 0.9, 300)])
    rows = [line for line in text.splitlines() if "vpt" in line]
    assert len(rows) == 3, text
    assert "1 (+2 tied)" in rows[0] and "lr=0.001" in rows[0] and "50.00%" in rows[0]
    assert rows[1].split()[1] == "4" and rows[2].split()[1] == "5"
    assert "autopetl trials --search s --pareto" in text
    untied = render([_record("4", 0.7, 200), _record("5", 0.9, 300)])
    assert "tied" not in untied


def test_a_relative_weights_path_reaches_the_workers_as_an_absolute_one(tmp_path, monkeypatch):
    # Ray's workers run in folders of their own: `--weights ../w.safetensors` once made every
    # trial of a search fail with "weights file ... does not exist" after the driver's check passed.
    import argparse

    from autopetl.cli._options import backbone_specs

    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(
        backbone="vit_small_patch14_dinov2,vit_tiny_patch16_224",
        weights="../w.safetensors,hub",
        img_size=28,
        smoke_test=False,
    )
    specs = backbone_specs(args)
    assert specs[0].weights == str(tmp_path.parent / "w.safetensors")
    assert specs[1].weights == "hub"
