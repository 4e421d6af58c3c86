"""The command line answers at once: --help, `tasks` and argument errors load no torch, timm,
Ray, Optuna or SQLAlchemy (each costs a second or more to import on a small machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "ray", "optuna", "sqlalchemy", "streamlit")

_PROBE = """
import json, sys
from autopetl.cli import main
try:
    code = main({argv!r})
except SystemExit as exc:
    code = exc.code
print(json.dumps({{"code": code, "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def _run(argv: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["tasks"], 0),
        (["search", "--help"], 0),
        (["train", "--help"], 0),
        (["search"], 2),  # --task missing
        (["search", "--task", "vtab/dsprites_loc", "--budget", "x"], 2),
        (["train", "--task", "vtab/dsprites_loc", "--epochs"], 2),
        (["train", "--task", "vtab/nope"], 2),  # an unknown task, found before torch loads
        (["train", "--task", "vtab/cifar"], 2),  # its data folder is not given
        (["train", "--task", "vtab/dsprites_loc", "--lr", "-1"], 2),
        (["train", "--task", "vtab/dsprites_loc", "--output", "/proc/nosuch/dir"], 2),
        # train's mistakes in a method, its options or a weights file, found before torch loads
        (["train", "--task", "vtab/dsprites_loc", "--method", "nosuch"], 2),
        (["train", "--task", "vtab/dsprites_loc", "--set", "nosuch=1"], 2),
        (["train", "--task", "vtab/dsprites_loc", "--weights", "/no/such.safetensors"], 2),
        # search's mistakes in names and paths, found before torch, Ray or a database load
        (["search", "--task", "vtab/nope"], 2),
        (["search", "--task", "vtab/dsprites_loc,vtab/nope"], 2),
        (["search", "--task", "vtab/dsprites_loc", "--space", "nosuchspace"], 2),
        (["search", "--task", "vtab/dsprites_loc", "--weights", "/no/such.safetensors"], 2),
        (["search", "--task", "vtab/dsprites_loc", "--resume"], 2),
        (["search", "--task", "vtab/cifar"], 2),  # its data folder is not given
        (["search", "--task", "vtab/cifar", "--data-root", "/no/such/folder"], 2),
        (["evaluate"], 2),
        (["serve", "--help"], 0),
        (["dashboard", "--help"], 0),
        (["nope"], 2),
    ],
)
def test_the_command_line_answers_without_loading_the_heavy_libraries(argv, code):
    result = _run(argv)
    assert result == {"code": code, "heavy": []}, result


@pytest.mark.parametrize(
    ("mistake", "said"),
    [
        (
            ["--method", "nosuch"],
            "unknown method 'nosuch'; choose one of adapter, adaptformer, bias,",
        ),
        (["--set", "nosuch=1"], "unknown option 'nosuch' for this method; valid options: deep,"),
        (["--weights", "/no/such.safetensors"], "weights file /no/such.safetensors does not exist"),
    ],
)
def test_a_train_refused_for_a_mistake_in_its_arguments_writes_no_database(tmp_path, mistake, said):
    db = tmp_path / "t.db"
    argv = ["train", "--task", "vtab/dsprites_loc", *mistake, "--db", f"sqlite:///{db}"]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 2, "heavy": []}, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], out.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    "text",
    [
        "methods:\n  vpt:\n    nosuch: 1\ntrain:\n  lr: 0.001\n",  # an unknown option
        "methods:\n  nosuch: {}\n",  # an unknown method
        "methods:\n  linear: {}\ntrain:\n  lr: -1\n",  # a training value out of range
        "methods: [\n",  # not YAML
    ],
)
def test_a_malformed_search_space_is_refused_before_torch(tmp_path, text):
    space = tmp_path / "bad.yaml"
    space.write_text(text)
    db = tmp_path / "s.db"
    result = _run(
        ["search", "--task", "vtab/dsprites_loc", "--space", str(space), "--db", f"sqlite:///{db}"]
    )
    assert result == {"code": 2, "heavy": []}, result
    assert not db.exists()


def test_a_search_refused_for_a_missing_weights_file_writes_no_database(tmp_path, capsys):
    from autopetl.cli import main

    db = tmp_path / "never.db"
    args = ["search", "--task", "vtab/dsprites_loc", "--budget", "4", "--db", f"sqlite:///{db}"]
    assert main([*args, "--weights", str(tmp_path / "no.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # The one line, and it comes first: no "budget below 16" note before it.
    assert len(err) == 1 and "no.safetensors does not exist" in err[0], err
    assert not db.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "--search", "nosuch"], "no search named 'nosuch'"),
        (["serve", "--search", "nosuch"], "no search named 'nosuch'"),
        (
            ["serve", "--task", "vtab/dsprites_loc"],
            "no evaluated configuration of vtab/dsprites_loc",
        ),
        (["serve", "--task", "vtab/nosuch"], "unknown task 'vtab/nosuch'"),
        # a repeated --task adds to the list (it once kept the last one only)
        (
            ["serve", "--task", "vtab/nosuch", "--task", "vtab/dsprites_loc"],
            "unknown task 'vtab/nosuch'",
        ),
        (["serve", "--trial", "real"], "--trial expects SEARCH:KEY"),
        (["trials", "--search", "nosuch"], "no search named 'nosuch'"),
    ],
)
def test_what_cannot_be_evaluated_or_served_is_refused_without_torch_or_ray(
    tmp_path, argv, message
):
    from autopetl.store import open_store

    url = f"sqlite:///{tmp_path / 'a.db'}"
    open_store(url).upsert_search(
        "real", "vtab/dsprites_loc", "default", {}, {}, status="completed"
    )
    probe = _PROBE.format(argv=[*argv, "--db", url], heavy=("torch", "ray"))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 2, "heavy": []}, out.stderr
    assert message in out.stderr


def test_gpus_asked_of_a_machine_without_any_are_refused_before_ray_and_write_nothing(tmp_path):
    db = tmp_path / "g.db"
    argv = [
        "search",
        "--task",
        "vtab/dsprites_loc",
        "--gpus-per-trial",
        "1",
        "--db",
        f"sqlite:///{db}",
    ]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # what CUDA sees: no device at all
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 2, "heavy": []}, out.stderr
    assert "--gpus-per-trial 1: this machine has no GPU" in out.stderr
    assert not db.exists()


def test_a_configuration_refused_after_reading_its_artifact_loads_no_torch_or_ray(tmp_path):
    """The catalog reads each artifact's method.json (its backbone's rebuild recipe) before serve
    refuses a configuration trained on a random backbone; that read needs no torch."""
    from autopetl.store import open_store

    url = f"sqlite:///{tmp_path / 'a.db'}"
    store = open_store(url)
    store.upsert_search(
        "real", "vtab/dsprites_loc", "default", {}, {"weights": "none"}, status="completed"
    )
    store.upsert_trial("real", "0", number=0, method="linear", config={"method": "linear"})
    store.upsert_evaluation("real", "0", seed=0, split="test", test_acc=0.5)
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    meta = {"method": "linear", "config": {}, "backbone": {}, "num_classes": 16}
    (artifact / "method.json").write_text(json.dumps(meta))
    store.upsert_artifact("real", "0", "weights-seed0", str(artifact))
    probe = _PROBE.format(argv=["serve", "--trial", "real:0", "--db", url], heavy=("torch", "ray"))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"code": 2, "heavy": []}, out.stderr
    assert "was trained on a randomly initialised backbone" in out.stderr
