"""``lora``: Low-Rank Adaptation (Hu et al., ICLR 2022, arXiv:2106.09685).

A frozen linear map W gets a trainable low-rank update: y = W x + (alpha / r) * B A dropout(x),
with A (r x in) Kaiming-uniform initialised and B (out x r) zero, as in the paper and peft. So a
freshly attached model computes exactly the linear-probe model.

Targets, per block: ``q``, ``k``, ``v`` (slices of timm's fused ``attn.qkv``: each gets its own
A and B, and the update is added to its third of the qkv output), ``o`` (the attention output
projection ``attn.proj``), ``fc1`` and ``fc2`` (the MLP). The paper's default is q and v.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.lora import QKV, LoRAConfig
from autopetl.methods.options.lora import TARGETS as TARGETS  # where it was
from autopetl.methods.registry import register_method


class LowRank(nn.Module):
    """The update B A x, scaled; A is Kaiming-uniform as nn.Linear's default, B is zero."""

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(config.rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, config.rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as peft and the LoRA code
        self.scaling = config.alpha / config.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.lora_a.t().to(x.dtype)) @ self.lora_b.t().to(x.dtype) * self.scaling


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus one low-rank update on its whole output."""

    def __init__(self, base: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        self.base = base
        self.dropout = nn.Dropout(config.dropout)
        self.lora = LowRank(base.in_features, base.out_features, config)

    # What a mixed-task batch shares (autopetl/serving/mixed.py): the frozen map runs once for
    # every task's samples, and each task adds its own residual to its rows.
    SHARED = "base"
    # B A merges into the frozen weight (W + s B A): a one-task deployment costs the frozen map's
    # FLOPs alone (autopetl/objectives.py, folded_gflops).
    FOLDS = True

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        return self.lora(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.residual(x, out)


class LoRAQKV(nn.Module):
    """timm's fused qkv Linear (out = 3 * attn_dim) with updates on some of its q, k, v thirds."""

    def __init__(self, base: nn.Linear, config: LoRAConfig) -> None:
        super().__init__()
        self.base = base
        self.dropout = nn.Dropout(config.dropout)
        self.slice = base.out_features // 3
        self.updates = nn.ModuleDict(
            {t: LowRank(base.in_features, self.slice, config) for t in QKV if t in config.targets}
        )

    SHARED = "base"  # as LoRALinear's
    FOLDS = True  # as LoRALinear's

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        zeros = shared_out.new_zeros(*shared_out.shape[:-1], self.slice)
        return torch.cat([self.updates[t](h) if t in self.updates else zeros for t in QKV], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        return out + self.residual(x, out)


@register_method
class LoRA(Method):
    name = "lora"
    config_cls = LoRAConfig
    config: LoRAConfig
    # The wrappers it puts on the targeted maps (DoRA, a LoRA with magnitudes, swaps them).
    linear_wrapper: type[nn.Module] = LoRALinear
    qkv_wrapper: type[nn.Module] = LoRAQKV

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        targets = set(self.config.targets)
        block: Any
        for block in backbone.blocks:
            attn, mlp = block.attn, block.mlp
            if targets & set(QKV):
                attn.qkv = self.qkv_wrapper(attn.qkv, self.config)
            if "o" in targets:
                attn.proj = self.linear_wrapper(attn.proj, self.config)
            if "fc1" in targets:
                mlp.fc1 = self.linear_wrapper(mlp.fc1, self.config)
            if "fc2" in targets:
                mlp.fc2 = self.linear_wrapper(mlp.fc2, self.config)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """r * (in + out) per targeted map and block (no biases), plus the head."""
        d, r = backbone.embed_dim, self.config.rank
        block: Any = backbone.blocks[0]  # a timm Block; nn.Module attributes are untyped
        attn_dim = block.attn.attn_dim  # heads * head_dim, d for every standard ViT
        # mlp_ratio * d; read through a LoRALinear wrapper when counting an attached model.
        hidden = getattr(block.mlp.fc1, "base", block.mlp.fc1).out_features
        shapes = {"q": (d, attn_dim), "k": (d, attn_dim), "v": (d, attn_dim)}
        shapes |= {"o": (attn_dim, d), "fc1": (d, hidden), "fc2": (hidden, d)}
        per_block = sum(r * (shapes[t][0] + shapes[t][1]) for t in self.config.targets)
        return len(backbone.blocks) * per_block + head_params(backbone)
