"""Artifacts (``autopetl.methods.io``): clear errors for missing, corrupt or mismatched files, and
the options of every method checked on construction."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from autopetl.errors import ConfigError, WeightsError
from autopetl.methods import build_method
from autopetl.methods.io import CONFIG_FILE, WEIGHTS_FILE, load_tunable, read_meta, save_tunable
from autopetl.pipeline import attach

from .conftest import TINY


@pytest.fixture
def artifact(tiny_backbone, tmp_path: Path) -> Path:
    method = build_method("lora", {"rank": 2})
    model = attach(tiny_backbone, method, seed=0)
    return save_tunable(model, method, TINY.to_dict(), tiny_backbone.num_classes, tmp_path / "a")


def test_method_json_says_how_to_rebuild(artifact: Path) -> None:
    meta = json.loads((artifact / CONFIG_FILE).read_text())
    assert meta["method"] == "lora"
    assert meta["config"] == {"rank": 2, "alpha": 8.0, "dropout": 0.0, "targets": ["q", "v"]}
    assert meta["backbone"]["name"] == TINY.name and meta["num_classes"] == 16
    assert meta["format_version"] == 1 and "autopetl_version" in meta


def test_missing_files_are_clear_errors(artifact: Path, tiny_backbone, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_tunable(tmp_path / "nowhere", backbone=tiny_backbone)
    (artifact / WEIGHTS_FILE).unlink()
    with pytest.raises(ConfigError, match=r"tunable\.safetensors does not exist"):
        load_tunable(artifact, backbone=tiny_backbone)


def test_corrupt_files_are_clear_errors(artifact: Path, tiny_backbone) -> None:
    (artifact / WEIGHTS_FILE).write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ConfigError, match="cannot read"):
        load_tunable(artifact, backbone=copy.deepcopy(tiny_backbone))
    (artifact / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_meta(artifact)


def test_weights_of_another_config_do_not_load(artifact: Path, tiny_backbone) -> None:
    meta = json.loads((artifact / CONFIG_FILE).read_text())
    meta["config"]["rank"] = 4  # same keys, other shapes
    (artifact / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="shape"):
        load_tunable(artifact, backbone=copy.deepcopy(tiny_backbone))
    meta["config"]["targets"] = ["q", "k", "v"]  # a key the file lacks
    (artifact / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="missing"):
        load_tunable(artifact, backbone=copy.deepcopy(tiny_backbone))


def test_a_random_backbone_cannot_be_rebuilt_from_its_spec(artifact: Path) -> None:
    with pytest.raises(WeightsError, match="pass the same backbone"):
        load_tunable(artifact)


def test_loaded_weights_equal_the_saved_ones(artifact: Path, tiny_backbone) -> None:
    loaded = load_tunable(artifact, backbone=copy.deepcopy(tiny_backbone))
    assert loaded.num_classes == 16 and loaded.backbone_spec == TINY
    saved = attach(tiny_backbone, build_method("lora", {"rank": 2}), seed=0)
    for name, param in saved.tunable_named_parameters():
        assert torch.equal(dict(loaded.model.tunable_named_parameters())[name], param)


BAD_CONFIGS = [
    ("adapter", {"dim": 0}),
    ("adapter", {"placement": "serial"}),
    ("adapter", {"scale": 0}),
    ("lora", {"rank": 0}),
    ("lora", {"targets": ["q", "x"]}),
    ("lora", {"targets": []}),
    ("lora", {"targets": ["q", "q"]}),
    ("lora", {"alpha": -1}),
    ("partial", {"k": 0}),
    ("mlp", {"layers": 0}),
    ("mlp", {"hidden": -1}),
    ("sidetune", {"channels": 0}),
    ("sidetune", {"convs": 0}),
    ("bias", {"anything": 1}),
]


@pytest.mark.parametrize(("name", "values"), BAD_CONFIGS)
def test_bad_options_are_config_errors(name: str, values: dict) -> None:
    with pytest.raises(ConfigError):
        build_method(name, values)


def test_partial_k_beyond_depth_is_a_config_error(tiny_backbone) -> None:
    with pytest.raises(ConfigError, match="exceeds"):
        attach(tiny_backbone, build_method("partial", {"k": 5}), seed=0)
