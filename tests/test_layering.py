"""The layering a newcomer can rely on: evaluation stands on autopetl.trial, not on the search
package, and `autopetl evaluate --in-process` runs without importing Ray at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


EVALUATION = sorted(p.name for p in (REPO / "autopetl" / "evaluation").glob("*.py"))


@pytest.mark.parametrize(
    "module",
    [*(f"evaluation/{name}" for name in EVALUATION), "trial.py", "training.py", "objectives.py"],
)
def test_the_shared_layer_imports_no_search_code(module: str) -> None:
    imported = _imports(REPO / "autopetl" / module)
    assert not {m for m in imported if m.startswith("autopetl.search")}, imported
    assert not {m for m in imported if m == "optuna" or m.startswith("optuna.")}, imported
    if module != "evaluation/many.py":  # Ray's tasks, imported lazily, only there
        assert not {m for m in imported if m == "ray" or m.startswith("ray.")}, imported


@pytest.mark.slow
def test_evaluate_in_process_never_imports_ray(tmp_path) -> None:
    # A one-off train run, then its evaluation in this process: neither may load Ray.
    db = f"sqlite:///{tmp_path / 'e.db'}"
    script = f"""
import sys
from autopetl.cli import main
common = ["--db", {db!r}]
assert main(["train", "--task", "vtab/dsprites_loc", "--method", "linear", "--smoke-test",
             "--name", "solo", *common]) == 0
assert main(["evaluate", "--search", "solo", "--best", "--seeds", "1", "--in-process",
             "--test-size", "64", "--artifacts", {str(tmp_path / "art")!r}, *common]) == 0
loaded = sorted(m for m in sys.modules if m == "ray" or m.startswith("ray."))
print("RAY:", loaded[:5])
assert not loaded, loaded
"""
    env = {"AUTOPETL_HOME": str(tmp_path / "home"), "AUTOPETL_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, env={**__import__("os").environ, **env},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
