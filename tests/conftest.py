"""Shared fixtures: a tiny random-init timm ViT and small generated data, so tests run on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from autopetl.backbones import SMOKE_BACKBONE, BackboneSpec, build_backbone

# Tests never touch the user's cache or database.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_WEIGHTS = SHARED / "weights" / "vit_small_patch14_dinov2.safetensors"

# A tiny ViT: 4 blocks, width 64, 16 patch tokens at 32 px (the same as --smoke-test).
TINY = SMOKE_BACKBONE
# The same with 4 register tokens and layer scale, to check methods on DINOv2-style models.
TINY_REG = BackboneSpec(
    name="vit_small_patch14_reg4_dinov2",
    weights="none",
    img_size=28,
    overrides={"depth": 3, "embed_dim": 48, "num_heads": 2},
)


@pytest.fixture(autouse=True)
def _isolated_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("AUTOPETL_CACHE", str(base / "cache"))
    monkeypatch.setenv("AUTOPETL_HOME", str(base / "home"))
    monkeypatch.delenv("AUTOPETL_DATA", raising=False)
    monkeypatch.delenv("AUTOPETL_DB", raising=False)


@pytest.fixture
def tiny_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY, num_classes=16)


@pytest.fixture
def tiny_reg_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY_REG, num_classes=5)
