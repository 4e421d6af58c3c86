"""``linear``: a linear probe, the frozen backbone with only the classifier head trained."""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.vision_transformer import VisionTransformer

from autopetl.methods.base import Method, MethodConfig, PetlModel, head_params, make_head_tunable
from autopetl.methods.registry import register_method


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    """No options: the head is the only tunable part."""


@register_method
class Linear(Method):
    name = "linear"
    changes_backbone = False
    config_cls = LinearConfig
    families = ("vit", "swin")

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        return head_params(backbone)
