"""The real DINOv2 ViT-S/14 in ../shared/weights: loaded strictly, and refused by a model it does
not fit. Optional (marker ``weights``): skipped where the file is absent, as in a clean clone."""

from __future__ import annotations

import pytest
import torch

from autopetl.backbones import BackboneSpec, build_backbone, describe
from autopetl.errors import WeightsError

from .conftest import REAL_WEIGHTS

pytestmark = [
    pytest.mark.weights,
    pytest.mark.skipif(not REAL_WEIGHTS.is_file(), reason=f"{REAL_WEIGHTS} is absent"),
]


def test_the_real_checkpoint_loads_every_tensor_into_its_model() -> None:
    from safetensors.torch import load_file

    spec = BackboneSpec("vit_small_patch14_dinov2", str(REAL_WEIGHTS), 28)
    model = build_backbone(spec, 16)
    stored = load_file(str(REAL_WEIGHTS))
    state = model.state_dict()
    # Every tensor but the position embedding (resampled from 37x37 to 2x2 patches) is the file's.
    for key, tensor in stored.items():
        if key != "pos_embed":
            # The file is fp16; the model holds it exactly in fp32.
            assert torch.equal(state[key], tensor.float()), key
    assert state["pos_embed"].shape[1] == 1 + 2 * 2
    assert (
        describe(spec.to_dict())
        == "vit_small_patch14_dinov2 (vit_small_patch14_dinov2.safetensors, 28 px)"
    )
    with torch.no_grad():
        features = model.forward_features(torch.rand(2, 3, 28, 28))
    assert torch.isfinite(features).all() and not torch.equal(features[0], features[1])


def test_the_checkpoint_in_a_model_it_does_not_fit_names_the_keys() -> None:
    # ViT-S/16 has no layer scale: the 24 ls1/ls2 gammas of the DINOv2 file are unexpected, and
    # its 16 px patch embedding has another shape.
    spec = BackboneSpec("vit_small_patch16_224", str(REAL_WEIGHTS), 32)
    with pytest.raises(WeightsError) as error:
        build_backbone(spec, 16)
    message = str(error.value)
    assert "ls1.gamma" in message and REAL_WEIGHTS.name in message
