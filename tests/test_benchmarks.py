"""The benchmark entry point runs end to end (tiny sizes) and its counts are physically sane.

No timing is asserted: speed figures live in benchmarks/results, measured side by side.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autopetl.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _perf(out: Path, *args: str) -> dict:
    """Run benchmarks/perf.py --quick on a tiny random-init ViT; its report, which must be clean."""
    command = [
        sys.executable,
        "benchmarks/perf.py",
        "--quick",
        "--weights", "none",
        "--backbone", "vit_tiny_patch16_224",
        "--img-size", "32",
        *args,
        "--out", str(out),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert not report.get("errors"), report["errors"]
    return report


def test_perf_runs_and_a_frozen_backbone_step_costs_about_two_forwards(tmp_path):
    out = tmp_path / "perf.json"
    report = _perf(
        out,
        "--sections",
        "mfu,profile,memory",
        "--batch-size",
        "4",
        "--time-scale",
        "0.05",
        "--matmul-sizes",
        "128,256",
    )
    mfu = report["sections"]["mfu"]
    # VPT-deep on a frozen backbone: the backward computes activation gradients only (one GEMM per
    # linear layer, not two), so a step is about 2x the forward's FLOPs, not the 3x of training.
    assert 1.9 < mfu["flops"]["step_over_forward"] < 2.2, mfu["flops"]
    assert all(s["mfu"] > 0 for s in mfu["steps"].values())
    memory = report["sections"]["memory"]
    assert set(memory["methods_measured"]) == set(METHODS)
    assert all(r["peak_total_mib"] > 0 for r in memory["rows"])
    profile = report["sections"]["profile"]
    assert Path(profile["file"]).is_file()  # next to --out
    md = out.with_suffix(".md").read_text()
    assert "| figure | value | ratio of |" in md
    # Every figure says which CPU it is from: the model, its bf16 units, and what ATen ran with.
    machine = report["machine"]
    assert (
        machine["aten_cpu_capability"] in md
        and f"bf16 units: {report['bf16']['has_bf16_units']}" in md
    )


def test_perf_search_section_splits_the_overhead_of_real_searches(tmp_path):
    out = tmp_path / "search.json"
    # The smallest run that still has every part: one warm-worker session, a short wait for it.
    report = _perf(
        out, "--sections", "search", "--search-trials", "4", "--warm-wait", "4",
        "--warm-attempts", "1",
    )  # fmt: skip
    search = report["sections"]["search"]
    ablation = search["warm_workers"]
    runs = [*search["runs"], ablation["warm"], ablation["cold"]]
    assert all(r["status"] == "completed" and r["counts"]["completed"] == 4 for r in runs)
    assert all(1 <= r["workers_used"] <= 4 and r["trial_phase_s"] <= r["wall_s"] for r in runs)
    # A search's own workers start after it begins: none of them can be warm.
    assert search["runs"][0]["warm_workers"] == 0 and ablation["cold"]["warm_workers"] == 0
    assert ablation["sessions"] == 1
    assert "workers warm / cold" in out.with_suffix(".md").read_text()


def test_multitask_smoke_run_reports_busy_shares_and_makespans_per_worker_count(tmp_path):
    out = tmp_path / "multitask.json"
    command = [sys.executable, "benchmarks/multitask.py", "--smoke-test", "--out", str(out)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["complete"] and out.with_suffix(".png").is_file()
    for key in ("busy_share_shared", "busy_share_sequential", "makespan_sequential_over_shared"):
        assert set(report[key]) == {"2", "4"}, key
    assert all(0 < v <= 1 for v in report["busy_share_shared"].values())
    assert "W4 shared" in report["constant_liar"]
