"""DoRA (autopetl/methods/dora.py) against HF peft's DoRA forward, written out below from peft's
own files; its start as the linear probe; its parameter count; and its mixed-task serving."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autopetl.methods import build_method
from autopetl.methods.dora import DoRALinear, DoRAQKV
from autopetl.methods.io import rebuildable_backbone
from autopetl.pipeline import attach
from autopetl.serving.mixed import MixedTaskModel

from .conftest import TINY

# --- HF peft's DoRA, written out ---------------------------------------------------------------
# From huggingface/peft at commit 5d602fdbff04c33c1c4de55cda9d4ae1d7cb7e40 (peft is not a
# dependency), for one adapter on an nn.Linear (fan_in_fan_out False, unmerged, no caching):
# - src/peft/tuners/lora/layer.py, Linear.forward, lines 1049-1074 (the base layer, then the
#   variant's forward, the result cast back to the base output's dtype), and update_layer,
#   lines 255-258 and 281 (dropout is nn.Identity when lora_dropout is 0; scaling alpha / r);
# - src/peft/tuners/lora/variants.py, DoraLinearVariant.forward, lines 220-248 (dropout, and the
#   base result reused only when dropout is Identity or the layer is in eval);
# - src/peft/tuners/lora/dora.py, DoraLinearLayer.get_weight_norm (lines 85-91),
#   get_lora_weight (93-99) and forward (132-166), the norm detached as section 4.3 of the paper.
# timm's fused qkv stands for three separate maps (HF ViT's query, key, value), each wrapped on
# its own by peft: SeparateQKV below.


class PeftDoraLinear(nn.Module):
    """peft's ``lora.Linear`` with ``use_dora=True``, one adapter, built from given tensors."""

    def __init__(self, weight, bias, lora_a, lora_b, magnitude, scaling, dropout) -> None:
        super().__init__()
        (out_features, in_features), rank, dtype = weight.shape, lora_a.shape[0], weight.dtype
        self.base_layer = nn.Linear(in_features, out_features, bias=bias is not None, dtype=dtype)
        self.lora_A = nn.Linear(in_features, rank, bias=False, dtype=dtype)
        self.lora_B = nn.Linear(rank, out_features, bias=False, dtype=dtype)
        with torch.no_grad():
            self.base_layer.weight.copy_(weight)
            if bias is not None:
                self.base_layer.bias.copy_(bias)
            self.lora_A.weight.copy_(lora_a)
            self.lora_B.weight.copy_(lora_b)
        self.base_layer.requires_grad_(False)
        self.magnitude = nn.Parameter(magnitude.detach().clone())  # lora_magnitude_vector.weight
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0.0 else nn.Identity()

    def get_weight_norm(self, weight, lora_weight, scaling):  # dora.py 85-91
        weight = weight + scaling * lora_weight
        return torch.linalg.norm(weight, dim=1).to(weight.dtype)

    def get_lora_weight(self):  # dora.py 93-99
        x_eye = torch.eye(
            self.lora_A.weight.shape[1],
            device=self.lora_A.weight.device,
            dtype=self.lora_A.weight.dtype,
        )
        return self.lora_B(self.lora_A(x_eye)).T

    def dora(self, x, base_result):  # dora.py 132-166
        lora_weight = self.get_lora_weight().to(x.dtype)
        magnitude = self.magnitude
        weight = self.base_layer.weight.to(x.dtype)
        weight_norm = self.get_weight_norm(weight, lora_weight.detach(), self.scaling)
        weight_norm = weight_norm.detach()
        mag_norm_scale = (magnitude / weight_norm).view(1, -1)
        lora_result = self.lora_B(self.lora_A(x))
        if base_result is not None:
            bias = self.base_layer.bias
            if bias is not None:
                base_result = base_result - bias
        else:
            base_result = F.linear(x, weight)
        return (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * self.scaling

    def forward(self, x):  # layer.py 1049-1074 with variants.py 220-248
        result = self.base_layer(x)
        torch_result_dtype = result.dtype
        x = x.to(self.lora_A.weight.dtype)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            base_result = result
        else:
            x = self.lora_dropout(x)
            base_result = None
        result = result + self.dora(x, base_result)
        return result.to(torch_result_dtype)


class SeparateQKV(nn.Module):
    """timm's fused qkv as three maps, the adapted ones peft-wrapped, outputs concatenated."""

    def __init__(self, maps: list[nn.Module]) -> None:
        super().__init__()
        self.maps = nn.ModuleList(maps)

    def forward(self, x):
        return torch.cat([m(x) for m in self.maps], dim=-1)


def peft_reference(model) -> tuple[nn.Module, list[tuple[nn.Parameter, nn.Parameter]]]:
    """A copy of ``model``'s backbone with each of our DoRA modules replaced by peft's, from the
    same tensors; and the pairs (our parameter, the reference's) to compare gradients."""
    ref = copy.deepcopy(model.backbone)
    pairs = []

    def peft_layer(weight, bias, update, magnitude, dropout):
        layer = PeftDoraLinear(
            weight, bias, update.lora_a, update.lora_b, magnitude, update.scaling, dropout
        )
        pairs.extend(
            [
                (update.lora_a, layer.lora_A.weight),
                (update.lora_b, layer.lora_B.weight),
                (magnitude, layer.magnitude),
            ]
        )
        return layer

    for ours, theirs in zip(model.backbone.blocks, ref.blocks, strict=True):
        qkv = ours.attn.qkv
        if isinstance(qkv, DoRAQKV):
            maps: list[nn.Module] = []
            n = qkv.slice
            w, b = qkv.base.weight, qkv.base.bias
            for i, t in enumerate("qkv"):
                rows = slice(i * n, (i + 1) * n)
                if t in qkv.updates:
                    maps.append(
                        peft_layer(
                            w[rows], b[rows], qkv.updates[t], qkv.magnitudes[t], qkv.dropout.p
                        )
                    )
                else:
                    plain = nn.Linear(w.shape[1], n, dtype=w.dtype).requires_grad_(False)
                    with torch.no_grad():
                        plain.weight.copy_(w[rows])
                        plain.bias.copy_(b[rows])
                    maps.append(plain)
            theirs.attn.qkv = SeparateQKV(maps)
        for parent, name in (("attn", "proj"), ("mlp", "fc1"), ("mlp", "fc2")):
            module = getattr(getattr(ours, parent), name)
            if isinstance(module, DoRALinear):
                base = module.base
                layer = peft_layer(
                    base.weight, base.bias, module.lora, module.magnitude, module.dropout.p
                )
                setattr(getattr(theirs, parent), name, layer)
    pairs.append((model.backbone.head.weight, ref.head.weight))
    return ref, pairs


def _images(n: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _randomise(model, seed: int = 0) -> None:
    """Move every tunable tensor off its init: A, B random, each magnitude within 30% of its
    start, the head random."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.tunable_named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if "magnitude" in name:
                p.mul_(1 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"targets": ["q", "k", "v", "o", "fc1", "fc2"], "rank": 3, "alpha": 5.0},
        {"targets": ["k"]},
    ],
)
def test_forward_and_gradients_agree_with_peft_in_float64(tiny_backbone, values) -> None:
    model = attach(tiny_backbone, build_method("dora", values), seed=0).double()
    _randomise(model)
    ref, pairs = peft_reference(model)
    model.eval()
    ref.eval()
    x = _images().double()
    ours, theirs = model(x), ref(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    # The gradients too: the norm is a constant in both (no gradient through it).
    ours.square().sum().backward()
    theirs.square().sum().backward()
    for mine, peft in pairs:
        torch.testing.assert_close(mine.grad, peft.grad, rtol=0, atol=1e-10)


def test_training_with_dropout_agrees_with_peft(tiny_backbone) -> None:
    """With dropout in training the extra term reads the dropped input (W d(x) computed anew).
    Maps of their own only: peft draws a mask per q, k, v map where we draw one for the fused
    qkv."""
    method = build_method("dora", {"targets": ["o", "fc1", "fc2"], "dropout": 0.3})
    model = attach(tiny_backbone, method, seed=0).double()
    _randomise(model, seed=1)
    ref, pairs = peft_reference(model)
    model.train()
    ref.train()
    x = _images().double()
    torch.manual_seed(7)
    ours = model(x)
    torch.manual_seed(7)
    theirs = ref(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)
    ours.square().sum().backward()
    theirs.square().sum().backward()
    for mine, peft in pairs:
        torch.testing.assert_close(mine.grad, peft.grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("values", [{}, {"targets": ["q", "k", "v", "o", "fc1", "fc2"]}])
@pytest.mark.parametrize("fixture", ["tiny_backbone", "tiny_reg_backbone"])
def test_a_fresh_model_is_exactly_the_linear_probe(request, fixture, values) -> None:
    backbone = request.getfixturevalue(fixture)
    size = backbone.patch_embed.img_size
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(2))
    probe = attach(backbone, build_method("linear"), seed=3).eval()
    model = attach(backbone, build_method("dora", values), seed=3).eval()
    with torch.no_grad():
        assert torch.equal(model(x), probe(x))


@pytest.mark.parametrize(
    ("values", "per_block"),
    [
        # d 64, MLP 256, rank 8: q, k, v 3 (8 * 128 + 64), fc1 8 * 320 + 256, fc2 8 * 320 + 64.
        ({}, 3 * (8 * 128 + 64) + (8 * 320 + 256) + (8 * 320 + 64)),
        ({"targets": ["k", "o"], "rank": 2}, 2 * (2 * 128 + 64)),
    ],
)
def test_closed_form_counts_the_tunable_parameters(tiny_backbone, values, per_block) -> None:
    method = build_method("dora", values)
    model = attach(tiny_backbone, method, seed=0)
    head = 64 * 16 + 16
    assert model.num_tunable() == method.closed_form_params(model.backbone)
    assert model.num_tunable() == 4 * per_block + head


def test_mixed_serving_shares_the_pass_with_lora_and_the_probe() -> None:
    """DoRA is frozen output + a per-task term on every map it wraps (SHARED = "base"), so a
    batch of DoRA, LoRA and linear-probe samples runs the frozen backbone once."""
    base = rebuildable_backbone(TINY, 16).eval().requires_grad_(False)
    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    models = []
    for i, (name, values) in enumerate([("dora", {}), ("lora", {}), ("linear", {})]):
        net = copy.deepcopy(base, dict(shared))
        net.reset_classifier(4 + i)
        model = build_method(name, values).attach(net).eval()
        _randomise(model, seed=i)
        models.append(model)
    mixed = MixedTaskModel(base, models).eval()
    assert mixed.own_pass == [] and mixed.passes_per_batch == 1  # DoRA shares the pass
    calls = []
    hook = base.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    tasks = torch.tensor([2, 0, 1, 0, 2, 1, 0, 1, 2])
    x = _images(len(tasks), seed=4)
    try:
        with torch.inference_mode():
            got = mixed(x, tasks)
            for i, model in enumerate(models):
                rows = (tasks == i).nonzero().squeeze(1)
                for row, expected in zip(rows.tolist(), model(x[rows]), strict=True):
                    torch.testing.assert_close(got[row], expected, rtol=0, atol=1e-5)
    finally:
        hook.remove()
    assert calls == [len(tasks)]  # the frozen qkv ran once for every task's samples
