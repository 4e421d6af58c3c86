"""Beyond one machine: a simulated multi-node cluster that loses a node mid-search."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def test_a_search_survives_losing_a_worker_node(tmp_path, sqlite_url):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_AUTH_MODE": "disabled"
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.cluster_scenario", sqlite_url, str(tmp_path / "ray")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    trials = report["trials"]
    assert report["removed"], "the worker node was never removed"
    assert report["status"] == "completed"
    # The whole budget, every trial accounted for once: no row lost or duplicated.
    assert len(trials) == 8 and len({t["key"] for t in trials}) == 8
    assert all(t["status"] == "completed" and t["epochs"] == [1, 2, 3, 4, 5, 6] for t in trials)
    # Trials caught on the removed node were retried, and finished on the surviving node.
    retried = [t for t in trials if t["attempts"] > 1]
    assert retried, "no trial was running on the removed node"
    assert all(t["node"] != report["doomed_node"] for t in retried)
