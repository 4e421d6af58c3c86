"""``bias``: BitFit (Ben Zaken et al., ACL 2022, arXiv:2106.10199), every bias term tuned.

All bias vectors of the backbone train (patch embedding, LayerNorms, qkv, attention output and
MLP layers, the final norm), plus the head; weights stay frozen. VPT and DVPT's Table 1 report it
as "Bias".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import Method, MethodConfig, PetlModel, head_params, make_head_tunable
from autopetl.methods.registry import register_method


@dataclass(frozen=True)
class BiasConfig(MethodConfig):
    """No options: the set of biases is fixed by the architecture."""


def _bias(module: nn.Module) -> int:
    bias = getattr(module, "bias", None)
    return bias.numel() if isinstance(bias, nn.Parameter) else 0


@register_method
class Bias(Method):
    name = "bias"
    config_cls = BiasConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        for name, param in backbone.named_parameters():
            if name == "bias" or name.endswith(".bias"):
                param.requires_grad_(True)
        make_head_tunable(backbone)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """Per block: norm1, qkv, proj, norm2, fc1 and fc2 biases; then patch embed and norms."""
        b: Any = backbone.blocks[0]  # a timm Block; nn.Module attributes are untyped
        per_block = sum(
            _bias(m) for m in (b.norm1, b.attn.qkv, b.attn.proj, b.norm2, b.mlp.fc1, b.mlp.fc2)
        )
        outside = sum(
            _bias(m)
            for m in (backbone.patch_embed.proj, backbone.norm_pre, backbone.norm, backbone.fc_norm)
        )
        return len(backbone.blocks) * per_block + outside + head_params(backbone)
