"""VPT on any timm ViT, beyond the methods contract (tests/test_methods_contract.py): closed-form
parameter counts, prompts that change the output and are stripped, the official initialisation."""

from __future__ import annotations

import pytest
import torch

from autopetl.errors import ConfigError
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


# -- the paper's design choices (search_spaces/vpt_design.yaml) ----------------------------------
def _block_inputs(model, x):
    """The sequence length each block of ``model``'s backbone sees."""
    lengths: list[int] = []
    hooks = [
        b.register_forward_pre_hook(lambda _, args: lengths.append(args[0].shape[1]))
        for b in model.backbone.blocks
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return lengths


def test_deep_prompts_on_the_first_or_the_last_blocks(tiny_reg_backbone):
    n_blocks = len(tiny_reg_backbone.blocks)  # 3
    plain = tiny_reg_backbone.num_prefix_tokens + tiny_reg_backbone.patch_embed.num_patches
    x = torch.randn(2, 3, 28, 28)
    last = attach(
        tiny_reg_backbone,
        build_method("vpt", {"prompt_length": 4, "deep_layers": 1, "deep_from": "last"}),
        seed=0,
    )
    # The blocks before the last see the plain sequence; the last one has the 4 prompts.
    assert _block_inputs(last, x) == [plain] * (n_blocks - 1) + [plain + 4]
    assert last.prompts.shape[0] == 1
    first = attach(
        tiny_reg_backbone, build_method("vpt", {"prompt_length": 4, "deep_layers": 2}), seed=0
    )
    # Prompts enter at block 0, are replaced at block 1, and travel on through block 2.
    assert _block_inputs(first, x) == [plain + 4] * n_blocks and first.prompts.shape[0] == 2
    # More blocks than the backbone has: all of them (one space for every backbone size).
    every = attach(tiny_reg_backbone, build_method("vpt", {"deep_layers": 6}), seed=0)
    assert every.prompts.shape[0] == n_blocks


def test_added_prompts_add_no_tokens_and_zero_ones_change_nothing(tiny_reg_backbone):
    x = torch.randn(2, 3, 28, 28)
    model = attach(tiny_reg_backbone, build_method("vpt", {"location": "add"}), seed=0)
    plain = tiny_reg_backbone.num_prefix_tokens + tiny_reg_backbone.patch_embed.num_patches
    assert _block_inputs(model, x) == [plain] * len(tiny_reg_backbone.blocks)
    assert model.prompts.shape[1] == plain  # one prompt per token, [CLS] and registers included
    with torch.no_grad():
        model.prompts.zero_()
        # the same frozen trunk and head: zero added prompts are the plain ViT
        reference = tiny_reg_backbone.forward_head(tiny_reg_backbone.forward_features(x))
        model.backbone.head.load_state_dict(tiny_reg_backbone.head.state_dict())
        assert torch.allclose(model(x), reference, atol=1e-6)


@pytest.mark.parametrize("readout", ["image_pool", "prompt_pool", "image_prompt_pool"])
def test_readouts_pool_what_the_official_code_pools(tiny_reg_backbone, readout):
    model = attach(
        tiny_reg_backbone, build_method("vpt", {"prompt_length": 3, "readout": readout}), seed=0
    )
    model.eval()
    x = torch.randn(2, 3, 28, 28)
    tokens, prompts = model.encode(x)
    image = tokens[:, tiny_reg_backbone.num_prefix_tokens :]
    pooled = {
        "image_pool": image.mean(1),
        "prompt_pool": prompts.mean(1),
        "image_prompt_pool": torch.cat([prompts, image], 1).mean(1),
    }[readout]
    vit = model.backbone
    assert torch.allclose(model(x), vit.head(vit.fc_norm(pooled)), atol=1e-6)
    assert not torch.allclose(model(x), model.forward_head(tokens), atol=1e-4)  # not the [CLS]


def test_design_options_refuse_what_cannot_be():
    for values, message in [
        ({"location": "add", "readout": "prompt_pool"}, "location add"),
        ({"deep": False, "deep_layers": 2}, "set deep=true"),
        ({"location": "inside"}, "location must be one of"),
        ({"readout": "max"}, "readout must be one of"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_method("vpt", values)
