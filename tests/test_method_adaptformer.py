"""``adaptformer`` (autopetl/methods/adaptformer.py): the official forward written out, the
linear-probe start, the closed form, its options, and a batch of mixed tasks in one pass."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
import torch
from torch import nn

from autopetl.errors import ConfigError
from autopetl.methods import build_method
from autopetl.methods.adaptformer import AdaptFormerMlp
from autopetl.methods.io import rebuildable_backbone
from autopetl.methods.options.adaptformer import AdaptFormerConfig
from autopetl.pipeline import attach
from autopetl.serving.mixed import MixedTaskModel

from .conftest import TINY

# --- The official code, written out -----------------------------------------------------------
# github.com/ShoufaChen/AdaptFormer at 6967d676c1a5e5a11be2e2768a6e5c604bb043ed:
# - models/adapter.py lines 11-70, ``Adapter`` (only its branches for the ViT configuration of
#   main_image.py lines 186-191: adapter_layernorm_option "none", init_option "lora", scalar
#   "0.1"); forward lines 50-70 below, unchanged but for the LayerNorm branches that "none" skips;
# - models/custom_modules.py lines 7-48 (``Attention``: separate q, k, v projections, bmm) and
#   lines 51-94 (``Block``; ``forward`` lines 76-94, the adapter built with dropout=0.1, line 70).
# The official ViT has no layer scale; on the layer-scale backbone the two lines marked LS are
# ours: ls1 as the backbone computes it, ls2 on the MLP's output alone (the method's docstring).


class OfficialAdapter(nn.Module):
    def __init__(self, d_model: int, bottleneck: int, dropout: float, adapter_scalar: str) -> None:
        super().__init__()
        self.n_embd, self.down_size = d_model, bottleneck
        self.adapter_layernorm_option = "none"
        self.scale = float(adapter_scalar)
        self.down_proj = nn.Linear(self.n_embd, self.down_size)
        self.non_linear_func = nn.ReLU()
        self.up_proj = nn.Linear(self.down_size, self.n_embd)
        self.dropout = dropout
        with torch.no_grad():  # init_option == "lora"
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.up_proj.weight)
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.bias)

    def forward(self, x, add_residual=True, residual=None):
        residual = x if residual is None else residual
        down = self.down_proj(x)
        down = self.non_linear_func(down)
        down = nn.functional.dropout(down, p=self.dropout, training=self.training)
        up = self.up_proj(down)
        up = up * self.scale
        if add_residual:  # noqa: SIM108  (verbatim)
            output = up + residual
        else:
            output = up
        return output


class OfficialAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, x):
        B, N, C = x.shape
        q = self.q_proj(x)
        k = self._shape(self.k_proj(x), -1, B).view(B * self.num_heads, -1, self.head_dim)
        v = self._shape(self.v_proj(x), -1, B).view(B * self.num_heads, -1, self.head_dim)
        q = self._shape(q, N, B).view(B * self.num_heads, -1, self.head_dim)
        attn_weights = torch.bmm(q, k.transpose(1, 2)) * self.scale
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_output = torch.bmm(attn_weights, v)
        attn_output = attn_output.view(B, self.num_heads, N, self.head_dim)
        attn_output = attn_output.transpose(1, 2)
        attn_output = attn_output.reshape(B, N, C)
        return self.proj(attn_output)


class OfficialBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, eps: float, config: Any) -> None:
        super().__init__()
        self.config = config
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = OfficialAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()
        self.gamma1 = self.gamma2 = None  # LS: the backbone's layer scale, if it has one
        if config["ffn_adapt"]:
            self.adaptmlp = OfficialAdapter(dim, config["ffn_num"], 0.1, config["ffn_scalar"])

    def forward(self, x):
        a = self.attn(self.norm1(x))
        x = x + (a if self.gamma1 is None else a * self.gamma1)  # LS
        if self.config["ffn_adapt"] and self.config["ffn_option"] == "parallel":
            adapt_x = self.adaptmlp(x, add_residual=False)
        residual = x
        x = self.act(self.fc1(self.norm2(x)))
        x = self.fc2(x)
        x = x if self.gamma2 is None else x * self.gamma2  # LS
        if self.config["ffn_adapt"]:
            x = x + adapt_x
        x = residual + x
        return x


def _official_blocks(backbone: Any, model: Any, chosen: list[int]) -> nn.ModuleList:
    """The official blocks with the frozen backbone's tensors and our model's branches."""
    out = []
    for i, blk in enumerate(backbone.blocks):
        d = backbone.embed_dim
        config = {"ffn_adapt": i in chosen, "ffn_option": "parallel", "ffn_num": 4}
        config["ffn_scalar"] = "0.1"
        ref = OfficialBlock(d, blk.attn.num_heads, blk.mlp.fc1.out_features, blk.norm1.eps, config)
        with torch.no_grad():
            for name in ("norm1", "norm2"):
                getattr(ref, name).load_state_dict(getattr(blk, name).state_dict())
            w, b = blk.attn.qkv.weight.chunk(3), blk.attn.qkv.bias.chunk(3)
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                getattr(ref.attn, name).weight.copy_(w[j])
                getattr(ref.attn, name).bias.copy_(b[j])
            ref.attn.proj.load_state_dict(blk.attn.proj.state_dict())
            ref.fc1.load_state_dict(blk.mlp.fc1.state_dict())
            ref.fc2.load_state_dict(blk.mlp.fc2.state_dict())
            if hasattr(blk.ls1, "gamma"):
                ref.gamma1, ref.gamma2 = blk.ls1.gamma.clone(), blk.ls2.gamma.clone()
            if i in chosen:
                ours = model.backbone.blocks[i].mlp.adapter
                ref.adaptmlp.down_proj.load_state_dict(ours.down.state_dict())
                ref.adaptmlp.up_proj.load_state_dict(ours.up.state_dict())
        out.append(ref)
    return nn.ModuleList(out)


def _images(backbone: Any, n: int = 3, seed: int = 1) -> torch.Tensor:
    size = backbone.patch_embed.img_size
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _perturb(model: nn.Module, seed: int, std: float = 0.5) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.tunable_named_parameters():
            p.copy_(std * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("blocks", ["all", [0, 2]])
@pytest.mark.parametrize("fixture", ["tiny_backbone", "tiny_reg_backbone"])
def test_matches_the_official_forward_in_float64(request, fixture, blocks) -> None:
    backbone = request.getfixturevalue(fixture).double().eval()
    model = attach(backbone, build_method("adaptformer", {"dim": 4, "blocks": blocks}), seed=0)
    model = model.double().eval()
    _perturb(model, seed=3)  # every tunable tensor non-zero (the up projections start at zero)
    chosen = list(range(len(backbone.blocks))) if blocks == "all" else blocks
    ref_blocks = _official_blocks(backbone, model, chosen).double().eval()
    assert any(hasattr(b.ls2, "gamma") for b in backbone.blocks) == (fixture != "tiny_backbone")

    x = _images(backbone).double()
    with torch.no_grad():
        tokens = backbone._pos_embed(backbone.patch_embed(x))  # timm's embedding, [CLS], registers
        for blk in ref_blocks:
            tokens = blk(tokens)
        # vit_image: norm, x[:, 0], head (the head is tunable: our model's).
        expected = model.backbone.forward_head(backbone.norm(tokens))
        got = model(x)
        # The branch is not a no-op here: it moves the logits well beyond the tolerance.
        probe = attach(backbone, build_method("linear"), seed=0).double().eval()
        probe.backbone.head.load_state_dict(model.backbone.head.state_dict())
        assert (probe(x) - got).abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_the_branch_reads_the_stream_before_norm2(tiny_backbone) -> None:
    """What sets it apart from ``adapter`` with ``placement: parallel`` (which reads norm2(x))."""
    model = attach(tiny_backbone, build_method("adaptformer", {"dim": 4}), seed=0).eval()
    _perturb(model, seed=4)
    sub = model.backbone.blocks[0].mlp
    assert isinstance(sub, AdaptFormerMlp)
    seen = []
    handle = sub.adapter.down.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    inputs = []
    h2 = sub.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    with torch.no_grad():
        model(_images(tiny_backbone))
    handle.remove()
    h2.remove()
    assert torch.equal(seen[0], inputs[0])  # the residual stream x itself, not norm(x)
    assert not torch.allclose(seen[0], sub.norm(inputs[0]))


@pytest.mark.parametrize("values", [{}, {"blocks": [1, 3], "dim": 8, "scale": 1.0}])
@pytest.mark.parametrize("fixture", ["tiny_backbone", "tiny_reg_backbone"])
def test_fresh_increments_give_exactly_the_linear_probe(request, fixture, values) -> None:
    backbone = request.getfixturevalue(fixture)
    if values.get("blocks") == [1, 3] and len(backbone.blocks) < 4:
        values = {**values, "blocks": [0, 2]}
    x = _images(backbone)
    probe = attach(backbone, build_method("linear"), seed=3).eval()
    model = attach(backbone, build_method("adaptformer", values), seed=3).eval()
    with torch.no_grad():
        assert torch.equal(model(x), probe(x))


@pytest.mark.parametrize("blocks", ["all", [0], [1, 3]])
def test_closed_form_counts_the_tunable_parameters(tiny_backbone, blocks) -> None:
    method = build_method("adaptformer", {"blocks": blocks})
    model = attach(tiny_backbone, method, seed=0)
    d, r, classes = 64, 64, 16  # TINY: width 64, 4 blocks; the paper's bottleneck 64
    n = 4 if blocks == "all" else len(blocks)
    expected = n * (2 * d * r + r + d) + d * classes + classes
    assert method.closed_form_params(model.backbone) == model.num_tunable() == expected
    assert method.closed_form_params(tiny_backbone) == expected


def test_options_defaults_parsing_and_refusals(tiny_backbone) -> None:
    config = AdaptFormerConfig()
    assert config.to_dict() == {"dim": 64, "scale": 0.1, "dropout": 0.1, "blocks": "all"}
    for given in ([2, 0], (0, 2), "0, 2"):
        parsed = AdaptFormerConfig.from_dict({"blocks": given})
        assert parsed.blocks == (0, 2)
        assert AdaptFormerConfig.from_dict(json.loads(json.dumps(parsed.to_dict()))) == parsed
    for bad in ({"blocks": []}, {"blocks": [0, 0]}, {"blocks": [-1]}, {"blocks": "first"}):
        with pytest.raises(ConfigError, match="blocks"):
            AdaptFormerConfig.from_dict(bad)
    for bad in ({"blocks": [True]}, {"blocks": [1.5]}, {"dim": 0}, {"scale": 0}):
        with pytest.raises(ConfigError):
            AdaptFormerConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="dropout"):
        AdaptFormerConfig.from_dict({"dropout": 1.0})
    with pytest.raises(ConfigError, match="block 4, but the backbone has 4 blocks"):
        attach(tiny_backbone, build_method("adaptformer", {"blocks": [1, 4]}), seed=0)


def test_a_mixed_batch_gives_each_sample_its_own_models_logits() -> None:
    base = rebuildable_backbone(TINY, 16).eval().requires_grad_(False)
    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    models = []
    for i, (name, values) in enumerate(
        [("adaptformer", {"dim": 8}), ("lora", {"targets": ["q", "v", "fc1"]}), ("linear", {})]
    ):
        net = copy.deepcopy(base, dict(shared))
        net.reset_classifier(4 + i)
        model = build_method(name, values).attach(net).eval()
        _perturb(model, seed=i, std=0.05)
        models.append(model)
    mixed = MixedTaskModel(base, models).eval()
    # AdaptFormer shares the one pass: its blocks stay timm Blocks, merged child by child; the
    # frozen attention runs once for every sample, its MLP sub-layer (the branch reads the
    # stream before norm2, so it is no residual of the frozen MLP) on its own rows.
    assert mixed.own_pass == [] and mixed.passes_per_batch == 1
    tasks = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0])
    x = torch.randn(len(tasks), 3, 32, 32, generator=torch.Generator().manual_seed(7))
    calls = []
    handle = base.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    with torch.inference_mode():
        got = mixed(x, tasks)
        handle.remove()
        assert calls == [len(tasks)]
        for i, model in enumerate(models):
            rows = (tasks == i).nonzero().squeeze(1)
            for row, expected in zip(rows.tolist(), model(x[rows]), strict=True):
                assert got[row].shape == expected.shape
                torch.testing.assert_close(got[row], expected, rtol=0, atol=1e-5, msg=str(i))
