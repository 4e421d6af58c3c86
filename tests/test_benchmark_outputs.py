"""A benchmark's quick check never writes over its committed full results: a --quick (or
--smoke-test) run writes under benchmarks/results/quick/ (git-ignored) unless --out says where."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"_bench_{name}", REPO / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "quick"),
    [
        ("methods_dsprites", "--quick"),
        ("search_quality", "--quick"),
        ("serve_hostile", "--quick"),
        ("serve_load", "--quick"),
        ("vpt_dsprites", "--quick"),
        ("multitask", "--smoke-test"),
        ("warm_start", "--quick"),
        ("serve_tasks", "--quick"),
    ],
)
def test_a_quick_run_writes_apart_from_the_committed_results(name, quick):
    module = _load(name)
    full = module.parse_args([]).out
    check = module.parse_args([quick]).out
    assert full.parent == RESULTS, full
    assert check.parent == RESULTS / "quick" and check.name == full.name, check
    assert module.parse_args([quick, "--out", "/tmp/x.json"]).out == Path("/tmp/x.json")


def test_the_quick_folder_is_ignored_by_git():
    probe = RESULTS / "quick" / "search_quality.json"
    out = subprocess.run(
        ["git", "check-ignore", "-q", str(probe)], cwd=REPO, capture_output=True, timeout=30
    )
    if out.returncode == 128:
        pytest.skip("not a git checkout")
    assert out.returncode == 0, "benchmarks/results/quick/ must be git-ignored"
