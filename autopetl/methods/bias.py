"""``bias``: BitFit (Ben Zaken et al., ACL 2022, arXiv:2106.10199), every bias term tuned.

All bias vectors of the backbone train (patch embedding, LayerNorms, qkv, attention output and
MLP layers, the final norm), plus the head; weights stay frozen. VPT and DVPT's Table 1 report it
as "Bias".
"""

from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.backbones import family_of
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.bias import SPEC, BiasConfig
from autopetl.methods.registry import register_method


def _bias(module: nn.Module) -> int:
    bias = getattr(module, "bias", None)
    return bias.numel() if isinstance(bias, nn.Parameter) else 0


def _block_biases(b: Any) -> int:
    return sum(_bias(m) for m in (b.norm1, b.attn.qkv, b.attn.proj, b.norm2, b.mlp.fc1, b.mlp.fc2))


def _swin_biases(swin: Any) -> int:
    """A Swin's: the patch embedding and its norm, each merging layer's norm (its reduction has
    no bias), every block's six, the final norm."""
    total = _bias(swin.patch_embed.proj) + _bias(swin.patch_embed.norm) + _bias(swin.norm)
    for stage in swin.layers:
        total += _bias(getattr(stage.downsample, "norm", nn.Identity()))
        total += sum(_block_biases(b) for b in stage.blocks)
    return total


@register_method
class Bias(Method):
    name = "bias"
    config_cls = BiasConfig
    families = SPEC.families

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        for name, param in backbone.named_parameters():
            if name == "bias" or name.endswith(".bias"):
                param.requires_grad_(True)
        make_head_tunable(backbone)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """Per block: norm1, qkv, proj, norm2, fc1 and fc2 biases; then patch embed and norms."""
        if family_of(backbone) == "swin":
            return _swin_biases(backbone) + head_params(backbone)
        b: Any = backbone.blocks[0]  # a timm Block; nn.Module attributes are untyped
        per_block = _block_biases(b)
        outside = sum(
            _bias(m)
            for m in (backbone.patch_embed.proj, backbone.norm_pre, backbone.norm, backbone.fc_norm)
        )
        return len(backbone.blocks) * per_block + outside + head_params(backbone)
