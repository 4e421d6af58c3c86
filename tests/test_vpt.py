"""VPT on any timm ViT, beyond the methods contract (tests/test_methods_contract.py): closed-form
parameter counts, prompts that change the output and are stripped, the official initialisation."""

from __future__ import annotations

import pytest
import torch

from autopetl.methods import build_method
from autopetl.pipeline import attach


@pytest.mark.parametrize("deep", [False, True])
@pytest.mark.parametrize("backbone_fixture", ["tiny_backbone", "tiny_reg_backbone"])
def test_vpt_adds_exactly_p_d_or_n_p_d(deep, backbone_fixture, request):
    backbone = request.getfixturevalue(backbone_fixture)
    p, d, n = 7, backbone.embed_dim, len(backbone.blocks)
    head = sum(q.numel() for q in backbone.head.parameters())
    model = attach(backbone, build_method("vpt", {"prompt_length": p, "deep": deep}), seed=0)
    assert model.num_tunable(include_head=False) == (n * p * d if deep else p * d)
    assert model.num_tunable() == model.num_tunable(include_head=False) + head


def test_prompts_change_the_output_and_are_stripped_before_the_head(tiny_backbone):
    vpt = attach(tiny_backbone, build_method("vpt", {"prompt_length": 3, "deep": False}), seed=0)
    x = torch.randn(2, 3, 32, 32)
    tokens = vpt.forward_features(x)
    assert tokens.shape[1] == 1 + 16  # [CLS] + patches: prompt outputs dropped
    plain = tiny_backbone.forward_features(x)
    assert not torch.allclose(tokens, plain)
    with torch.no_grad():
        vpt.prompts.zero_()
        zeroed = vpt.forward_features(x)
    # Zero prompts still take part in attention (they draw attention weight), so the outputs
    # still differ from the plain ViT's.
    assert not torch.allclose(zeroed, plain, atol=1e-5)
    assert vpt(x).shape == (2, 16)


def test_vpt_initialisation_follows_the_official_code(tiny_backbone):
    model = attach(tiny_backbone, build_method("vpt", {"prompt_length": 50, "deep": True}), seed=0)
    bound = (6 / (3 * 8 * 8 + 64)) ** 0.5  # sqrt(6 / (3 * patch * patch + d)), patch 8, d 64
    assert model.prompts.abs().max() <= bound
    assert model.prompts.abs().max() > 0.9 * bound
