"""search_spaces/vpt_design.yaml runs as a search, and benchmarks/vpt_design.py reads it back by
design choice (on the smoke backbone: the plumbing, not the findings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from autopetl.search.space import load_space

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_the_design_space_searches_the_papers_choices() -> None:
    space = load_space("vpt_design")
    names = {p.name for p in space.params_of("vpt")}
    assert {"vpt.location", "vpt.deep_layers", "vpt.deep_from", "vpt.readout"} <= names
    # Every sampled combination is a valid configuration (no cell the method refuses).
    from autopetl.methods import build_method

    for location in ("prepend", "add"):
        for readout in ("cls", "image_pool"):
            for k in (0, 1, 6):
                for side in ("first", "last"):
                    build_method("vpt", {"location": location, "readout": readout,
                                         "deep_layers": k, "deep_from": side})  # fmt: skip


def test_a_design_search_is_read_back_by_choice(ray_session, tmp_path, sqlite_url) -> None:
    from autopetl.cli import main

    args = ["search", "--task", "vtab/dsprites_loc", "--space", "vpt_design", "--budget", "6"]
    args += ["--smoke-test", "--scheduler", "none", "--name", "design", "--db", sqlite_url]
    args += ["--objectives", "val_acc,tunable_params,inference_gflops"]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    sys.path.insert(0, str(REPO / "benchmarks"))
    import vpt_design

    out = tmp_path / "design.json"
    assert vpt_design.main(["--db", sqlite_url, "--search", "design", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["by_choice"]) == {"location", "blocks", "readout", "prompt_length"}
    counted = sum(r["trials"] for r in report["by_choice"]["location"].values())
    assert counted == 6 and report["front"]
    assert "| location |" in out.with_suffix(".md").read_text()
