"""``full``: full fine-tuning, every backbone parameter trained (the baseline PETL beats)."""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from autopetl.methods.base import Method, PetlModel
from autopetl.methods.options.full import SPEC, FullConfig
from autopetl.methods.registry import register_method


@register_method
class Full(Method):
    name = "full"
    config_cls = FullConfig
    families = SPEC.families

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        backbone.requires_grad_(True)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        return sum(p.numel() for p in backbone.parameters())
