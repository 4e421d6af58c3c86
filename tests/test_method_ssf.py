"""``ssf`` (Scaling & Shifting your Features): the official forward written out, the identity
start, the closed-form count, folding into the frozen weights and the shared mixed-task pass."""

from __future__ import annotations

import copy

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.backbones import BackboneSpec, build_backbone
from autopetl.errors import ConfigError
from autopetl.methods import build_method
from autopetl.methods.io import rebuildable_backbone
from autopetl.methods.options.ssf import SSFConfig
from autopetl.methods.ssf import SSF, ScaleShift, fold_ssf
from autopetl.pipeline import attach
from autopetl.serving.mixed import MixedTaskModel

from .conftest import TINY, TINY_SWIN

# A tiny ViT with the optional norms the official ViT file does not have: CLIP's norm_pre, and
# average pooling with fc_norm (its final norm then an Identity).
TINY_AVG = BackboneSpec(
    name="vit_tiny_patch16_224",
    weights="none",
    img_size=32,
    overrides={
        "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2,
        "global_pool": "avg", "class_token": False, "fc_norm": True, "pre_norm": True,
    },
)  # fmt: skip


def _images(backbone: nn.Module, n: int = 3, seed: int = 1) -> torch.Tensor:
    size = backbone.patch_embed.img_size
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _perturb(model: nn.Module, seed: int, std: float = 0.3) -> None:
    """Move every tunable tensor well off its init (scales off 1, shifts off 0, the head)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.tunable_named_parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


# --- (a) The official forward, written out ------------------------------------------------------
# github dongzelian/SSF @ e94e0e704a4ece1986a537c97a95158b46838f71, models/vision_transformer.py:
# init_ssf_scale_shift L378-385, ssf_ada L388-395, Mlp.forward L157-170, Attention.forward
# L196-213, Block.forward L252-259 (the ssf branch L253-255), PatchEmbed.forward L358-374,
# VisionTransformer.forward_features L520-535 and forward_head L537-541.


def ssf_ada(x, scale, shift):  # L388-395
    assert scale.shape == shift.shape
    if x.shape[-1] == scale.shape[0]:
        return x * scale + shift
    elif x.shape[1] == scale.shape[0]:
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    else:
        raise ValueError("the input tensor shape does not match the shape of the scale factor.")


def official_forward(vit, P: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official ViT's forward with tuning_mode='ssf', on ``vit``'s frozen modules (a timm ViT
    with a class token, no registers, no layer scale, no dropout) and the official names' SSF
    tensors ``P``."""

    def ada(t: torch.Tensor, prefix: str, k: int) -> torch.Tensor:
        return ssf_ada(t, P[f"{prefix}ssf_scale_{k}"], P[f"{prefix}ssf_shift_{k}"])

    def attention(attn, x, prefix):  # L196-213
        B, N, C = x.shape
        qkv = ada(attn.qkv(x), prefix, 1).reshape(B, N, 3, attn.num_heads, C // attn.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
        x = (a @ v).transpose(1, 2).reshape(B, N, C)
        return ada(attn.proj(x), prefix, 2)

    def mlp(m, x, prefix):  # L157-170
        x = ada(m.fc1(x), prefix, 1)
        x = m.act(x)
        return ada(m.fc2(x), prefix, 2)

    # PatchEmbed.forward, L358-374: proj, flatten, ssf_1 (its norm is an Identity here).
    x = vit.patch_embed.proj(x).flatten(2).transpose(1, 2)
    x = ada(x, "patch_embed.", 1)
    x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + vit.pos_embed
    for i, blk in enumerate(vit.blocks):  # Block.forward, L253-255
        b = f"blocks.{i}."
        x = x + attention(blk.attn, ada(blk.norm1(x), b, 1), b + "attn.")
        x = x + mlp(blk.mlp, ada(blk.norm2(x), b, 2), b + "mlp.")
    x = ada(vit.norm(x), "", 1)  # forward_features, L531-533
    return x[:, 0] @ P["head.weight"].t() + P["head.bias"]  # forward_head, global_pool 'token'


# Our tensor for each official one: (official prefix, index) -> our module path.
def _official_names(depth: int) -> dict[str, str]:
    names = {"patch_embed.ssf_{}_1": "patch_embed.proj", "ssf_{}_1": "norm"}
    for i in range(depth):
        b = f"blocks.{i}."
        names |= {
            b + "ssf_{}_1": b + "norm1",
            b + "ssf_{}_2": b + "norm2",
            b + "attn.ssf_{}_1": b + "attn.qkv",
            b + "attn.ssf_{}_2": b + "attn.proj",
            b + "mlp.ssf_{}_1": b + "mlp.fc1",
            b + "mlp.ssf_{}_2": b + "mlp.fc2",
        }
    return names


def test_matches_the_official_forward_in_float64(tiny_backbone) -> None:
    model = SSF().attach(copy.deepcopy(tiny_backbone))
    _perturb(model, seed=0)
    model = model.double().eval()
    ours = {n.removeprefix("backbone."): p for n, p in model.tunable_named_parameters()}
    P = {"head.weight": ours.pop("head.weight"), "head.bias": ours.pop("head.bias")}
    for official, path in _official_names(len(tiny_backbone.blocks)).items():
        P[official.format("scale")] = ours.pop(f"{path}.scale").detach().clone()
        P[official.format("shift")] = ours.pop(f"{path}.shift").detach().clone()
    assert not ours, f"tensors with no official counterpart: {sorted(ours)}"
    assert all(not torch.equal(v, torch.ones_like(v)) for v in P.values())

    reference = copy.deepcopy(tiny_backbone).double().eval()
    x = _images(tiny_backbone).double()
    with torch.no_grad():
        expected = official_forward(reference, P, x)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


# --- (b) The start: the official init, and exactly the frozen model at scale 1, shift 0 --------


@pytest.mark.parametrize("fixture", ["tiny_backbone", "tiny_reg_backbone", "tiny_swin_backbone"])
def test_scale_one_shift_zero_is_exactly_the_linear_probe(request, fixture) -> None:
    backbone = request.getfixturevalue(fixture)
    x = _images(backbone)
    probe = attach(backbone, build_method("linear"), seed=3).eval()
    official = attach(backbone, build_method("ssf"), seed=3).eval()
    identity = attach(backbone, build_method("ssf", {"init": "identity"}), seed=3).eval()
    scales = torch.cat([m.scale for m in official.modules() if isinstance(m, ScaleShift)])
    shifts = torch.cat([m.shift for m in official.modules() if isinstance(m, ScaleShift)])
    # init_ssf_scale_shift: N(1, 0.02) and N(0, 0.02).
    assert abs(scales.mean().item() - 1) < 0.01 and 0.015 < scales.std().item() < 0.025
    assert abs(shifts.mean().item()) < 0.01 and 0.015 < shifts.std().item() < 0.025
    with torch.no_grad():
        for m in official.modules():
            if isinstance(m, ScaleShift):
                m.scale.fill_(1.0)
                m.shift.zero_()
        assert torch.equal(official(x), probe(x))
        assert torch.equal(identity(x), probe(x))


def test_init_is_checked() -> None:
    assert SSFConfig().init == "official"
    with pytest.raises(ConfigError, match="init must be one of"):
        build_method("ssf", {"init": "zeros"})
    with pytest.raises(ConfigError, match="init must be one of"):
        SSFConfig(init="zeros")  # type: ignore[arg-type]


# --- (c) The closed form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["tiny_backbone", "tiny_reg_backbone", "tiny_swin_backbone", "tiny_avg_backbone"]
)
def test_closed_form_counts_the_tunable_parameters(request, fixture) -> None:
    backbone = request.getfixturevalue(fixture)
    method = build_method("ssf")
    model = attach(backbone, method, seed=0)
    assert model.num_tunable() == method.closed_form_params(model.backbone)
    assert method.closed_form_params(backbone) == model.num_tunable()  # unwrapped, the same
    head = sum(p.numel() for p in backbone.head.parameters())
    if isinstance(backbone, VisionTransformer):
        n, d = len(backbone.blocks), backbone.embed_dim
        a, h = (
            backbone.blocks[0].attn.qkv.out_features // 3,
            backbone.blocks[0].mlp.fc1.out_features,
        )
        extra = 2 * d if fixture == "tiny_avg_backbone" else 0  # norm_pre, fc_norm for norm
        assert model.num_tunable() == 2 * (n * (4 * d + 3 * a + h) + 2 * d) + extra + head


def test_vit_b16_count_is_the_formula() -> None:
    with torch.device("meta"):  # shapes only, no 86M random numbers
        import timm

        vit = timm.create_model("vit_base_patch16_224", num_classes=0)
    assert SSF().closed_form_params(vit) == 2 * (12 * (4 * 768 + 3 * 768 + 3072) + 2 * 768)
    assert SSF().closed_form_params(vit) == 205_824


@pytest.fixture
def tiny_avg_backbone():
    torch.manual_seed(0)
    return build_backbone(TINY_AVG, num_classes=7)


# --- Folding into the frozen weights ----------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["tiny_backbone", "tiny_reg_backbone", "tiny_swin_backbone", "tiny_avg_backbone"]
)
def test_folded_model_is_a_plain_backbone_with_the_same_logits(request, fixture) -> None:
    backbone = request.getfixturevalue(fixture)
    model = attach(backbone, build_method("ssf"), seed=0)
    _perturb(model, seed=1)
    model = model.double().eval()
    x = _images(backbone).double()
    with torch.no_grad():
        before = model(x)
        folded = fold_ssf(model).eval()
        torch.testing.assert_close(folded(x), before, rtol=0, atol=1e-10)
        assert torch.equal(model(x), before)  # folding worked on copies
    assert type(folded) is type(backbone)
    assert not any(isinstance(m, ScaleShift) for m in folded.modules())
    # The backbone's tensors and count; but a bias-free map gets a bias (CLIP-style pre_norm
    # ViTs' patch embedding: TINY_AVG), the one case where folding adds parameters.
    names = [n for n, _ in backbone.named_parameters()]
    added = 0
    if fixture == "tiny_avg_backbone":
        assert backbone.patch_embed.proj.bias is None
        names.insert(names.index("patch_embed.proj.weight") + 1, "patch_embed.proj.bias")
        added = backbone.embed_dim
    assert [n for n, _ in folded.named_parameters()] == names
    count = sum(p.numel() for p in backbone.parameters())
    assert sum(p.numel() for p in folded.parameters()) == count + added
    assert not any(p.requires_grad for p in folded.parameters())


def test_fold_refuses_a_model_without_ssf(tiny_backbone) -> None:
    with pytest.raises(ValueError, match="no ScaleShift"):
        fold_ssf(attach(tiny_backbone, build_method("linear"), seed=0))


# --- (d) One mixed-task pass ------------------------------------------------------------------


def _mixed_check(spec: BackboneSpec) -> MixedTaskModel:
    base = rebuildable_backbone(spec, 16).eval().requires_grad_(False)
    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    models = []
    for i, (name, values) in enumerate([("ssf", {}), ("lora", {}), ("linear", {})]):
        if spec is TINY_SWIN and name == "lora":
            continue  # LoRA is written for ViTs only
        net = copy.deepcopy(base, dict(shared))
        net.reset_classifier(4 + i)
        model = build_method(name, values).attach(net)
        _perturb(model, seed=i, std=0.05)
        models.append(model.eval())
    mixed = MixedTaskModel(base, models).eval()
    g = torch.Generator().manual_seed(0)
    tasks = torch.arange(len(models)).repeat(3)[torch.randperm(3 * len(models), generator=g)]
    x = torch.randn(len(tasks), 3, 32, 32, generator=g)
    with torch.inference_mode():
        got = mixed(x, tasks)
        for i, model in enumerate(models):
            rows = (tasks == i).nonzero().squeeze(1)
            for row, expected in zip(rows.tolist(), model(x[rows]), strict=True):
                torch.testing.assert_close(got[row], expected, rtol=0, atol=1e-5, msg=str(i))
    return mixed


def test_ssf_shares_the_mixed_pass_on_a_vit() -> None:
    mixed = _mixed_check(TINY)
    # SSF shares the pass: every frozen map runs once for the whole batch and SSF adds its
    # residual out * (scale - 1) + shift on its rows.
    assert mixed.own_pass == [] and mixed.passes_per_batch == 1
    calls = []
    qkv = mixed.trunk.blocks[0].attn.qkv.shared  # the frozen Linear SSF and LoRA both wrap
    handle = qkv.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        with torch.inference_mode():
            mixed(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 2, 1, 0]))
    finally:
        handle.remove()
    assert calls == [6]


def test_ssf_shares_the_mixed_pass_on_a_swin() -> None:
    # On a Swin the blocks SSF changes run whole on its rows (window attention), the rest once.
    mixed = _mixed_check(TINY_SWIN)
    assert mixed.own_pass == [] and mixed.passes_per_batch == 1
