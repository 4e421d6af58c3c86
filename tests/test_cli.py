"""The ``autopetl`` command end to end: listing tasks, a smoke training run, and user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autopetl.cli import main


def test_tasks_lists_19_vtab_and_5_fgvc_and_dsprites_offline(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "2 of 24 tasks available" in out
    for name in ("vtab/dsprites_loc", "vtab/dsprites_ori", "vtab/sun397", "vtab/kitti"):
        assert name in out
    for name in ("fgvc/cub", "fgvc/nabirds", "fgvc/oxford_flowers", "fgvc/stanford_dogs"):
        assert name in out
    assert "fgvc/stanford_cars" in out and "train,val,test}.json" in out


def test_train_smoke_as_a_user_runs_it():
    """A real subprocess: the console script's module, exit status, and printed summary."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "autopetl",
            "train",
            "--task",
            "vtab/dsprites_loc",
            "--method",
            "vpt",
            "--smoke-test",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "val accuracy (best)" in proc.stdout
    assert "tunable parameters" in proc.stdout
    assert "3,600" in proc.stdout  # 4 blocks x 10 prompts x 64 dims + a 16-class head of 64 dims


def test_train_with_set_options(capsys):
    args = [
        "train",
        "--task",
        "dsprites_ori",
        "--method",
        "vpt",
        "--set",
        "deep=false",
        "--set",
        "prompt_length=5",
    ]
    assert main([*args, "--smoke-test", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "1,360" in out  # 5 x 64 shallow prompts + 64 x 16 + 16 head


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "vtab/imagenet"], "unknown task 'vtab/imagenet'"),
        (["--task", "vtab/dsprites_loc", "--method", "prefix"], "unknown method 'prefix'"),
        (["--task", "vtab/dsprites_loc", "--set", "depth=3"], "unknown option 'depth'"),
        (
            ["--task", "vtab/dsprites_loc", "--set", "prompt_length=ten"],
            "prompt_length must be an integer",
        ),
        (["--task", "vtab/dsprites_loc", "--set", "prompt_length=0"], "prompt_length must be >= 1"),
        (["--task", "vtab/dsprites_loc", "--set", "deep"], "--set expects key=value"),
        (
            ["--task", "vtab/dsprites_loc", "--weights", "/no/such/file.safetensors"],
            "does not exist",
        ),
        (["--task", "vtab/dsprites_loc", "--backbone", "resnet_nope"], "unknown backbone"),
        (["--task", "vtab/eurosat"], "--data-root"),
        (["--task", "vtab/eurosat", "--data-root", "/no/such/dir"], "does not exist"),
    ],
)
def test_user_mistakes_get_one_clear_line(args, message, capsys):
    assert main(["train", *args, "--smoke-test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("autopetl: error:") and message in err[0]
    assert "Traceback" not in err[0]
