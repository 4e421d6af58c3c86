"""``linear``: a linear probe, the frozen backbone with only the classifier head trained."""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.linear import SPEC, LinearConfig
from autopetl.methods.registry import register_method


@register_method
class Linear(Method):
    name = "linear"
    changes_backbone = False
    config_cls = LinearConfig
    families = SPEC.families

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        return head_params(backbone)
