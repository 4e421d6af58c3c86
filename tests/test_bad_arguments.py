"""Every bad argument and space file is one line and exit status 2, before anything starts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from autopetl.cli import main

SEARCH = ["search", "--task", "vtab/dsprites_loc", "--smoke-test"]
TRAIN = ["train", "--task", "vtab/dsprites_loc", "--method", "vpt", "--smoke-test"]


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def _exit_code(argv: list[str]) -> int:
    """main's exit status; argparse's own errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        ([*SEARCH, "--budget", "1e30"], "--budget"),
        ([*SEARCH, "--budget", "-1"], "--budget"),
        ([*SEARCH, "--budget", "0"], "--budget"),
        ([*SEARCH, "--max-failed", "-1"], "--max-failed"),
        ([*SEARCH, "--cpus-per-trial", "nan"], "--cpus-per-trial"),
        ([*SEARCH, "--gpus-per-trial", "-1"], "--gpus-per-trial"),
        ([*SEARCH, "--reduction-factor", "1"], "--reduction-factor"),
        ([*SEARCH, "--seed", str(2**70)], "--seed"),
        ([*SEARCH, "--img-size", "100000"], "--img-size"),
        ([*TRAIN, "--weight-decay", "inf"], "--weight-decay"),
        ([*TRAIN, "--lr", "0"], "--lr"),
        ([*TRAIN, "--epochs", "0"], "--epochs"),
        ([*TRAIN, "--device", "cuda:99"], "this machine has"),
        ([*TRAIN, "--device", "nonsense"], "is not a device"),
        ([*TRAIN, "--set", "prompt_length=10000000000"], "prompt_length must be from 0"),
        ([*TRAIN, "--set", "prompt_length=" + "9" * 5000], "cannot read value"),
        ([*TRAIN, "--output", "/etc/passwd/out"], "cannot write there"),
    ],
)
def test_a_bad_argument_is_one_line(argv, said, capsys, tmp_path: Path) -> None:
    start = time.perf_counter()
    assert _exit_code([*argv, "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert said in _one_error(capsys)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "x.db").exists()  # nothing recorded


SPACES = {
    "alias.yaml": ("a: &a [1]\nb: *a\n", "aliases"),
    "laughs.yaml": (
        "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b]\n",
        "aliases",
    ),
    "dup.yaml": (
        "methods: {linear: {}}\nmethods: {vpt: {}}\ntrain: {epochs: 1}\n",
        "duplicate key",
    ),
    "log.yaml": (
        "methods: {vpt: {prompt_length: {type: int, low: 1, high: 8, log: 'no'}}}\n",
        "log must be true or false",
    ),
    "step_abc.yaml": (
        "methods: {vpt: {prompt_length: {type: int, low: 1, high: 8, step: abc}}}\n",
        "step must be a finite number",
    ),
    "step_neg.yaml": (
        "methods: {vpt: {prompt_length: {type: int, low: 1, high: 8, step: -1}}}\n",
        "step must be above 0",
    ),
    "deep.yaml": ("[" * 100_000 + "]" * 100_000, "nested deeper"),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_a_malformed_space_is_one_line(name, tmp_path: Path, capsys) -> None:
    text, said = SPACES[name]
    path = tmp_path / name
    path.write_text(text)
    assert main([*SEARCH, "--space", str(path), "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    assert said in _one_error(capsys)


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfem\x00e\x00", bytes(range(256)) * 4, b"methods: {}\n" + b"#" * (300 * 1024)],
)
def test_an_unreadable_space_file_is_one_line(content: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    assert main([*SEARCH, "--space", str(path), "--db", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    line = _one_error(capsys)
    assert "not UTF-8" in line or "at most 256 KiB" in line or "NUL" in line, line
