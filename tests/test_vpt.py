"""VPT on any timm ViT: closed-form parameter counts, gradients only where tunable, frozen backbone."""

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


@pytest.mark.parametrize("backbone_fixture", ["tiny_backbone", "tiny_reg_backbone"])
def test_only_tunable_parameters_get_gradients_and_backbone_stays_bit_identical(
    backbone_fixture, request
):
    backbone = request.getfixturevalue(backbone_fixture)
    model = attach(backbone, build_method("vpt", {"prompt_length": 4, "deep": True}), seed=0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen, "the backbone must be frozen"
    opt = torch.optim.AdamW([p for _, p in model.tunable_named_parameters()], lr=0.1)
    size = backbone.patch_embed.img_size[0]
    logits = model(torch.randn(4, 3, size, size))
    torch.nn.functional.cross_entropy(logits, torch.arange(4) % logits.shape[1]).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name
    opt.step()
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), f"{name} changed"


def test_prompts_change_the_output_and_are_stripped_before_the_head(tiny_backbone):
    vpt = attach(tiny_backbone, build_method("vpt", {"prompt_length": 3, "deep": False}), seed=0)
    x = torch.randn(2, 3, 32, 32)
    tokens = vpt.forward_features(x)
    assert tokens.shape[1] == 1 + 16  # [CLS] + patches: prompt outputs dropped
    plain = tiny_backbone.forward_features(x)
    assert not torch.allclose(tokens, plain)
    with torch.no_grad():
        vpt.prompts.zero_()
    # Zero prompts still take part in attention, so outputs differ from the plain ViT's.
    assert vpt(x).shape == (2, 16)


def test_vpt_initialisation_follows_the_official_code(tiny_backbone):
    model = attach(tiny_backbone, build_method("vpt", {"prompt_length": 50, "deep": True}), seed=0)
    bound = (6 / (3 * 8 * 8 + 64)) ** 0.5  # sqrt(6 / (3 * patch * patch + d)), patch 8, d 64
    assert model.prompts.abs().max() <= bound
    assert model.prompts.abs().max() > 0.9 * bound
