"""Backbone weights from a file: every key must fit, and the input side must fit the patches."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from autopetl.backbones import SMOKE_BACKBONE, BackboneSpec, build_backbone
from autopetl.errors import ConfigError, WeightsError

_SHAPE = {"depth": 3, "embed_dim": 64, "num_heads": 2}


def _checkpoint(spec: BackboneSpec, path) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = build_backbone(spec, 1000).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


def test_a_file_of_the_same_model_loads_every_weight_and_resamples_positions(tmp_path):
    state = _checkpoint(SMOKE_BACKBONE, tmp_path / "tiny.safetensors")
    file_spec = BackboneSpec(
        SMOKE_BACKBONE.name, str(tmp_path / "tiny.safetensors"), 32, SMOKE_BACKBONE.overrides
    )
    loaded = build_backbone(file_spec, 5).state_dict()
    trunk = [k for k in state if not k.startswith("head.")]
    assert all(torch.equal(loaded[k], state[k]) for k in trunk)
    assert loaded["head.weight"].shape == (5, 64)  # the task's own head, not the file's
    # At 48 px the 4x4 patch grid becomes 6x6: the position embedding is resampled, not refused.
    bigger = build_backbone(BackboneSpec(**{**file_spec.to_dict(), "img_size": 48}), 5)
    assert bigger.pos_embed.shape[1] == 1 + 36


def test_a_file_of_another_model_is_refused_with_the_keys_named(tmp_path):
    # A DINOv2 checkpoint (with layer scale) into a plain ViT of the same shape: timm's own
    # loading warns of the unused ls1/ls2.gamma keys and trains on; autopetl refuses.
    dinov2 = BackboneSpec("vit_small_patch14_dinov2", "none", 28, _SHAPE)
    _checkpoint(dinov2, tmp_path / "reg.safetensors")
    plain = BackboneSpec(
        "vit_tiny_patch16_224",
        str(tmp_path / "reg.safetensors"),
        28,
        {"patch_size": 14, **_SHAPE},
    )
    with pytest.raises(WeightsError, match=r"not a checkpoint of vit_tiny_patch16_224") as err:
        build_backbone(plain, 5)
    assert "ls1.gamma" in str(err.value) and "--backbone" in str(err.value)


def test_a_file_with_other_shapes_is_refused(tmp_path):
    _checkpoint(SMOKE_BACKBONE, tmp_path / "tiny.safetensors")
    wider = BackboneSpec(
        SMOKE_BACKBONE.name,
        str(tmp_path / "tiny.safetensors"),
        32,
        {**SMOKE_BACKBONE.overrides, "embed_dim": 96},
    )
    with pytest.raises(WeightsError, match=r"other shapes \(.*64.*96"):
        build_backbone(wider, 5)


def test_an_input_side_the_patch_size_does_not_divide_is_refused():
    spec = BackboneSpec(**{**SMOKE_BACKBONE.to_dict(), "img_size": 30})  # patch 8
    with pytest.raises(
        ConfigError, match=r"--img-size 30 is not a multiple .* patch size 8.*24 or 32"
    ):
        build_backbone(spec, 5)
