"""``autopetl train --smoke-test`` for every registered method, and ``--output`` artifacts."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from autopetl.backbones import SMOKE_BACKBONE, build_backbone
from autopetl.cli import main
from autopetl.methods import METHODS
from autopetl.methods.io import load_tunable


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_in_a_smoke_test(method: str, capsys) -> None:
    code = main(["train", "--task", "vtab/dsprites_loc", "--method", method, "--smoke-test"])
    out = capsys.readouterr().out
    assert code == 0
    assert "val accuracy (best)" in out and "tunable parameters" in out


def test_output_saves_an_artifact_that_loads(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "artifact"
    args = ["train", "--task", "vtab/dsprites_loc", "--method", "lora", "--smoke-test"]
    assert main([*args, "--epochs", "1", "--set", "rank=2", "--output", str(out_dir)]) == 0
    assert str(out_dir) in capsys.readouterr().out.replace("\n", "")
    meta = json.loads((out_dir / "method.json").read_text())
    assert meta["method"] == "lora" and meta["config"]["rank"] == 2
    assert meta["num_classes"] == 16 and meta["backbone"]["name"] == SMOKE_BACKBONE.name
    # The smoke backbone is random, so give load_tunable one: the artifact's shapes must fit it.
    backbone = build_backbone(SMOKE_BACKBONE, 16)
    loaded = load_tunable(out_dir, backbone=copy.deepcopy(backbone))
    assert loaded.model.num_tunable() == 2 * 4 * 2 * (64 + 64) + 64 * 16 + 16
