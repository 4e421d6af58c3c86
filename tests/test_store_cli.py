"""``autopetl train`` records its run; ``searches``, ``trials``, ``export`` and ``db`` read it back;
database mistakes are one clear line each."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from autopetl.cli import main
from autopetl.store import default_db_path, open_store
from autopetl.store._migrate import VERSION_TABLE

SMOKE = ["train", "--task", "vtab/dsprites_loc", "--method", "linear", "--smoke-test"]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("autopetl: error: ")
    return err


def test_train_is_recorded_then_listed_and_exported(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main([*SMOKE, "--db", db, "--name", "smoke-run"]) == 0
    # Outside a terminal: a line per epoch, and what the cached backbone pass cost.
    captured = capsys.readouterr()
    assert "linear on vtab/dsprites_loc: epoch 2/2 loss" in captured.err
    assert (
        "for the head alone" in captured.out and "the frozen backbone ran once over" in captured.out
    )
    assert "recorded as search smoke-run" in captured.err

    with open_store(db) as store:
        search = store.get_search("smoke-run")
        [trial] = store.trials("smoke-run")
        epochs = store.epochs("smoke-run", trial.trial_key)
    assert search is not None and search.status == "completed" and search.budget == 1
    assert search.task == "vtab/dsprites_loc" and search.weights_source == "none"
    assert (trial.method, trial.status, trial.epochs_done) == ("linear", "completed", 2)
    # Recorded flat, as a search trial: method, its options, the searched training options.
    assert trial.config["method"] == "linear" and trial.config["epochs"] == 2
    assert trial.tunable_params == 1040
    assert trial.wall_time_s is not None and trial.cost["device"] == "cpu"
    assert [e.epoch for e in epochs] == [1, 2]

    assert main(["searches", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "smoke-run" in out and "completed" in out
    assert main(["trials", "--search", "smoke-run", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "linear" in out and "completed" in out and "1,040" in out
    assert main(["trials", "--search", "smoke-run", "--pareto", "--db", db]) == 0
    assert "Pareto front" in capsys.readouterr().out

    output = tmp_path / "out" / "trials.json"
    assert (
        main(
            [
                "export",
                "--search",
                "smoke-run",
                "--format",
                "json",
                "--output",
                str(output),
                "--db",
                db,
            ]
        )
        == 0
    )
    [row] = json.loads(output.read_text())
    assert row["config"]["method"] == "linear" and row["status"] == "completed"
    assert row["val_acc"] == trial.val_acc and row["tunable_params"] == 1040

    capsys.readouterr()
    assert main(["export", "--search", "smoke-run", "--format", "csv", "--db", db]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["trial_key"] == "0" and row["status"] == "completed"
    assert row["tunable_params"] == "1040" and json.loads(row["config"])["method"] == "linear"


def test_a_failed_run_is_recorded_then_reraised(tmp_path: Path, monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("autopetl.pipeline.train_one", boom)  # train imports it on run
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(RuntimeError, match="boom"):
        main([*SMOKE, "--db", db, "--name", "broken"])
    with open_store(db) as store:
        [trial] = store.trials("broken")
        assert store.get_search("broken").status == "failed"  # type: ignore[union-attr]
    assert (trial.status, trial.error) == ("failed", "RuntimeError: boom")
    assert trial.finished_at is not None


def test_default_database_and_name(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUTOPETL_HOME", str(tmp_path / "home"))  # this test's own default DB
    assert main([*SMOKE, "--epochs", "1"]) == 0
    assert default_db_path() == tmp_path / "home" / "autopetl.db"
    assert default_db_path().exists()
    with open_store() as store:
        [search] = store.list_searches()
    assert search.name.startswith("train-vtab-dsprites_loc-linear-")
    monkeypatch.delenv("AUTOPETL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "autopetl" / "autopetl.db"


def test_db_current_and_upgrade(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["db", "current", "--db", db]) == 2  # reading creates no database
    assert "no autopetl database at" in capsys.readouterr().err
    (tmp_path / "x.db").touch()  # an empty SQLite file: no tables yet
    assert main(["db", "current", "--db", db]) == 0
    assert "none (no autopetl tables yet)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "revision: 0005" in out and "up to date" in out


def test_a_bad_url_is_one_clear_line(capsys) -> None:
    assert main(["searches", "--db", "notadb://somewhere"]) == 2
    assert "unsupported database 'notadb'" in _one_error_line(capsys)
    assert main([*SMOKE, "--db", "mysql://me:hunter2@localhost/db"]) == 2  # before any training
    err = _one_error_line(capsys)
    assert "hunter2" not in err and "***" in err


def test_an_unreachable_server_is_one_clear_line_without_the_password(capsys) -> None:
    # Port 1 on localhost: nothing listens, so the connection is refused at once.
    url = "postgresql+psycopg://alice:s3cr3t@127.0.0.1:1/autopetl"
    assert main(["trials", "--search", "x", "--db", url]) == 2
    err = _one_error_line(capsys)
    assert "cannot open database" in err and "alice:***@127.0.0.1:1" in err
    assert "s3cr3t" not in err


def test_a_database_from_a_newer_autopetl_is_one_clear_line(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'new.db'}"
    with open_store(db) as store, store.engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'f00d'"))
    assert main(["searches", "--db", db]) == 2
    assert "newer than this autopetl" in _one_error_line(capsys)


def test_an_unknown_search_is_one_clear_line(tmp_path: Path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'e.db'}"
    open_store(db).close()
    assert main(["trials", "--search", "nope", "--db", db]) == 2
    assert "no search named 'nope'" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "command",
    [
        ["searches"],
        ["trials", "--search", "s"],
        ["export", "--search", "s"],
        ["db", "current"],
        ["report"],
        ["evaluate", "--search", "s"],
        ["serve", "--search", "s"],
    ],
)
def test_reading_commands_never_create_a_database(command, tmp_path: Path, capsys) -> None:
    typo = tmp_path / "runs.db"  # a path, where a URL or an existing file was meant
    assert main([*command, "--db", str(typo)]) == 2
    err = _one_error_line(capsys)
    assert f"no autopetl database at {typo}" in err
    assert not typo.exists()


def test_searches_show_the_backbone_and_list_train_runs_apart(tmp_path: Path, capsys) -> None:
    from autopetl.backbones import SMOKE_BACKBONE

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main([*SMOKE, "--epochs", "1", "--db", db, "--name", "run-32"]) == 0
    with open_store(db) as store:  # a search on another input size
        other = {**SMOKE_BACKBONE.to_dict(), "img_size": 64}
        store.upsert_search("s-64", "vtab/dsprites_loc", "default", {}, other, options={})
        store.upsert_trial("s-64", "0", number=0, method="lora", status="completed",
                           val_acc=0.5, tunable_params=10, config={"method": "lora", "lr": 0.0091453})  # fmt: skip
    capsys.readouterr()
    assert main(["searches", "--db", db]) == 0
    out = capsys.readouterr().out
    searches, runs = out.split("one-off train runs")
    assert "s-64" in searches and "vit_tiny_patch16_224 (random init, 64 px)" in searches
    assert "run-32" in runs and "run-32" not in searches and "(random init, 32 px)" in runs
    assert main(["searches", "--format", "json", "--db", db]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["run-32"]["kind"] == "train" and rows["s-64"]["kind"] == "search"
    assert rows["s-64"]["backbone"] == "vit_tiny_patch16_224 (random init, 64 px)"
    assert main(["searches", "--format", "csv", "--db", db]) == 0
    assert len(list(csv.DictReader(io.StringIO(capsys.readouterr().out)))) == 2
    # Trials: the backbone in the title, rounded numbers, and machine formats.
    assert main(["trials", "--search", "s-64", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "(random init, 64 px)" in out and "lr=0.00915" in out and "0.0091453" not in out
    assert main(["trials", "--search", "s-64", "--format", "json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)[0]["config"]["lr"] == 0.0091453


@pytest.mark.parametrize("name", ["[/]", "[bold]x[/bold]", "a[b", "[red]"])
def test_markup_in_a_name_is_printed_as_it_is(tmp_path: Path, capsys, name: str) -> None:
    db = f"sqlite:///{tmp_path / 'markup.db'}"
    assert main([*SMOKE, "--epochs", "1", "--name", name, "--db", db]) == 0
    with open_store(db) as store:
        assert store.get_search(name).status == "completed"  # type: ignore[union-attr]
    capsys.readouterr()
    for command in (["searches"], ["trials", "--search", name]):
        assert main([*command, "--db", db]) == 0
        assert name in capsys.readouterr().out


def test_searches_counts_trials_stopped_early_as_finished(tmp_path: Path, capsys) -> None:
    # A search that finished 12 of 12 (11 completed, 1 stopped early) once read "trials 11/12".
    db = f"sqlite:///{tmp_path / 'f.db'}"
    with open_store(db) as store:
        store.upsert_search("twelve", "vtab/dsprites_loc", "default", {}, {}, status="completed")
        store.upsert_search("twelve", "vtab/dsprites_loc", "default", {}, {}, budget=12)
        for key in range(13):
            status = "pruned" if key == 11 else "failed" if key == 12 else "completed"
            store.upsert_trial("twelve", str(key), number=key, method="linear", status=status)
    assert main(["searches", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "12/12 (1 stopped early, 1 failed)" in out, out
    assert "finished / budget" in out


def test_trials_name_a_methods_own_learning_rate_as_every_other_and_time_short_runs(
    tmp_path: Path, capsys
) -> None:
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    with open_store(db) as store:
        store.upsert_search("s", "vtab/dsprites_loc", "default", {}, {}, options={})
        store.upsert_trial("s", "0", number=0, method="linear", status="completed", val_acc=0.5,
                           config={"method": "linear", "linear.train.lr": 0.013213, "weight_decay": 0.001},
                           cost={"wall_time_s": 0.33})  # fmt: skip
        store.upsert_trial("s", "1", number=1, method="vpt", status="completed", val_acc=0.6,
                           config={"method": "vpt", "vpt.prompt_length": 10, "lr": 0.013213},
                           cost={"wall_time_s": 125.2})  # fmt: skip
    capsys.readouterr()
    assert main(["trials", "--search", "s", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    lines = {m: next(line for line in out if f" {m} " in line) for m in ("linear", "vpt")}
    assert "lr=0.0132" in lines["linear"] and "linear.train" not in lines["linear"], lines
    assert "lr=0.0132" in lines["vpt"] and "prompt_length=10" in lines["vpt"], lines
    assert "0.33s" in lines["linear"] and " 0s" not in lines["linear"], lines
    assert "125s" in lines["vpt"], lines


def test_the_dashboard_and_the_search_summary_show_a_config_as_trials_does() -> None:
    from autopetl.dashboard.data import config_lines
    from autopetl.trial import shown_config

    config = {"method": "linear", "linear.train.lr": 0.013213, "weight_decay": 0.001}
    assert shown_config(config) == {"lr": 0.013213, "weight_decay": 0.001}
    assert config_lines(config) == ["method = linear", "lr = 0.0132", "weight_decay = 0.001"]


def test_evaluates_results_show_a_config_as_trials_does(capsys) -> None:
    from autopetl.cli._console import console
    from autopetl.cli.evaluate_cmd import results_table
    from autopetl.evaluation import ConfigurationResult

    config = {"method": "linear", "linear.train.lr": 0.11813, "weight_decay": 0.0096, "epochs": 2}
    result = ConfigurationResult(
        "s", "vtab/dsprites_loc", "55", "linear", config, {}, (0, 1), (0.07, 0.06), 0.065, 0.007,
        1040, 0,
    )  # fmt: skip
    console.print(results_table("s", [result]))
    out = capsys.readouterr().out
    assert "lr=0.118 weight_decay=0.0096 epochs=2" in out and "linear.train" not in out, out
