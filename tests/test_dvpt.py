"""DVPT: the shapes and counts of shared and specific dynamic prompts, and that they follow the
image (Ruan and Wang, 2023)."""

from __future__ import annotations

import pytest
import torch

from autopetl.errors import ConfigError
from autopetl.methods import build_method
from autopetl.methods.dvpt import DVPTModel
from autopetl.pipeline import attach


def _dvpt(backbone, **values) -> DVPTModel:
    model = attach(backbone, build_method("dvpt", values), seed=0)
    assert isinstance(model, DVPTModel)
    return model.eval()


def _embedded(model: DVPTModel, x: torch.Tensor) -> torch.Tensor:
    vit = model.backbone
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))


@pytest.mark.parametrize("backbone_fixture", ["tiny_backbone", "tiny_reg_backbone"])
@pytest.mark.parametrize("dynamic", ["shared", "specific"])
def test_pi_shape_and_parameter_count(dynamic, backbone_fixture, request) -> None:
    backbone = request.getfixturevalue(backbone_fixture)
    p, h, d, n = 5, 16, backbone.embed_dim, len(backbone.blocks)
    head = backbone.head.weight.numel() + backbone.head.bias.numel()
    model = _dvpt(backbone, prompt_length=p, hidden=h, depth=4, dynamic=dynamic)
    size = backbone.patch_embed.img_size[0]
    tokens = _embedded(model, torch.randn(2, 3, size, size))

    pi = model.dynamic_offset(tokens)
    out = d if dynamic == "shared" else p * d
    assert pi.shape == ((2, 1, d) if dynamic == "shared" else (2, p, d))
    assert model.first_prompts(tokens).shape == (2, p, d)
    # Meta-Net d -> h -> h -> h -> out with biases; VPT-deep prompts n x p x d; the head.
    meta = (d * h + h) + 2 * (h * h + h) + (h * out + out)
    assert sum(q.numel() for q in model.meta_net.parameters()) == meta
    assert model.num_tunable() == n * p * d + meta + head
    assert model.num_tunable() == build_method("dvpt", model.config.to_dict()).closed_form_params(
        model.backbone
    )


def test_specific_costs_more_than_shared_by_the_wider_last_layer(tiny_backbone) -> None:
    shared = _dvpt(tiny_backbone, prompt_length=4, hidden=8).num_tunable()
    specific = _dvpt(tiny_backbone, prompt_length=4, hidden=8, dynamic="specific").num_tunable()
    d = tiny_backbone.embed_dim
    assert specific - shared == (8 + 1) * (4 * d - d)


@pytest.mark.parametrize("depth", [2, 4, 6])
def test_meta_net_has_depth_linear_layers_with_gelu_between(tiny_backbone, depth) -> None:
    model = _dvpt(tiny_backbone, depth=depth)
    kinds = [type(m).__name__ for m in model.meta_net]
    assert kinds.count("Linear") == depth
    assert kinds.count("GELU") == depth - 1 and kinds[-1] == "Linear"


@pytest.mark.parametrize("meta_input", ["patch_mean", "cls"])
@pytest.mark.parametrize("dynamic", ["shared", "specific"])
def test_prompts_follow_the_image(tiny_backbone, meta_input, dynamic) -> None:
    model = _dvpt(tiny_backbone, meta_input=meta_input, dynamic=dynamic, prompt_length=3)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(1, 3, 32, 32, generator=gen), torch.rand(1, 3, 32, 32, generator=gen)
    seen: list[torch.Tensor] = []
    hook = model.meta_net.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        ya, yb = model(a), model(b)
        ya2 = model(a)
    hook.remove()
    pi_a, pi_b, pi_a2 = seen
    assert not torch.allclose(pi_a, pi_b), "two images must give two different prompts"
    assert torch.equal(pi_a, pi_a2), "the same image gives the same prompts (eval mode)"
    assert not torch.equal(ya, yb) and torch.equal(ya, ya2)
    # Only the first layer is dynamic: the deep prompts are the same static tensor for all.
    assert model.deep_prompts(1) is not None and model.deep_prompts(1).dim() == 2


def test_meta_net_trains_and_cls_input_has_no_gradient_path(tiny_backbone) -> None:
    model = _dvpt(tiny_backbone, meta_input="cls").train()
    loss = model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.meta_net.parameters())
    assert model._meta_features is None  # the per-forward input is not kept around


def test_shallow_dvpt_has_no_deep_prompts(tiny_backbone) -> None:
    model = _dvpt(tiny_backbone, deep=False, prompt_length=2)
    assert model.prompts.shape == (1, 2, tiny_backbone.embed_dim)
    assert model.deep_prompts(1) is None


@pytest.mark.parametrize(
    "values",
    [
        {"depth": 0},
        {"hidden": 0},
        {"prompt_length": 0},
        {"dynamic": "both"},
        {"meta_input": "mean"},
        {"dropout": 1.0},
        {"depth": "4"},
    ],
)
def test_bad_configs_are_rejected(values) -> None:
    with pytest.raises(ConfigError):
        build_method("dvpt", values)
