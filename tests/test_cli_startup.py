"""The command line answers at once: --help, `tasks` and argument errors load no torch, timm,
Ray, Optuna or SQLAlchemy (each costs a second or more to import on a small machine)."""

from __future__ import annotations

import json
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
        (["evaluate"], 2),
        (["serve", "--help"], 0),
        (["dashboard", "--help"], 0),
        (["nope"], 2),
    ],
)
def test_the_command_line_answers_without_loading_the_heavy_libraries(argv, code):
    result = _run(argv)
    assert result == {"code": code, "heavy": []}, result
