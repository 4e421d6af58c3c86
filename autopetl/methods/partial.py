"""``partial``: Partial-k fine-tuning, the last k blocks trained (Yosinski et al., NeurIPS 2014).

As in VPT's baselines (Jia et al., 2022, and DVPT's Table 1 "Partial-1"), the last ``k`` blocks,
the final norm (VPT's code tunes ``encoder_norm`` with the last block) and the head train; the
rest stays frozen.
"""

from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.errors import ConfigError
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.partial import PartialConfig
from autopetl.methods.registry import register_method


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _block_params(backbone: VisionTransformer) -> int:
    """One block's parameters from its shapes: two LayerNorms, attention, MLP, layer scales."""
    d = backbone.embed_dim
    b: Any = backbone.blocks[0]  # a timm Block; nn.Module attributes are untyped
    attn_dim, hidden = b.attn.proj.in_features, b.mlp.fc1.out_features
    qkv_bias = 3 * attn_dim if b.attn.qkv.bias is not None else 0
    attn = d * 3 * attn_dim + qkv_bias + attn_dim * d + d  # qkv and proj
    mlp = d * hidden + hidden + hidden * d + d  # fc1 and fc2
    scales = d * sum(hasattr(ls, "gamma") for ls in (b.ls1, b.ls2))  # LayerScale (DINOv2)
    return 2 * (2 * d) + attn + mlp + scales


@register_method
class Partial(Method):
    name = "partial"
    config_cls = PartialConfig
    config: PartialConfig

    def _check_depth(self, backbone: VisionTransformer) -> None:
        if self.config.k > len(backbone.blocks):
            raise ConfigError(
                f"k = {self.config.k} exceeds the backbone's {len(backbone.blocks)} blocks"
            )

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        self._check_depth(backbone)
        for block in backbone.blocks[-self.config.k :]:
            block.requires_grad_(True)
        backbone.norm.requires_grad_(True)
        backbone.fc_norm.requires_grad_(True)
        make_head_tunable(backbone)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        self._check_depth(backbone)
        norms = _count(backbone.norm) + _count(backbone.fc_norm)
        return self.config.k * _block_params(backbone) + norms + head_params(backbone)
