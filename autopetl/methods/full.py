"""``full``: full fine-tuning, every backbone parameter trained (the baseline PETL beats)."""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.vision_transformer import VisionTransformer

from autopetl.methods.base import Method, MethodConfig, PetlModel
from autopetl.methods.registry import register_method


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """No options: everything is tunable."""


@register_method
class Full(Method):
    name = "full"
    config_cls = FullConfig
    families = ("vit", "swin")

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        backbone.requires_grad_(True)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        return sum(p.numel() for p in backbone.parameters())
