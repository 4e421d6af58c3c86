"""``mlp``: a k-layer MLP head on the frozen features (VPT's "Mlp-k" baseline, Jia et al., 2022).

The MLP *replaces* ``backbone.head``: k linear layers, the first k - 1 of width ``hidden`` with a
ReLU after each, the last one to the classes (``layers = 1`` is the linear probe). Because the
whole MLP is the head, ``PetlModel.num_tunable(include_head=False)`` is 0 for this method: it
adds no parameters inside the backbone, and the head is simply bigger. Counting it that way keeps
"parameters without the head" meaning "parameters inside the backbone" for every method.
"""

from __future__ import annotations

from itertools import pairwise

from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import Method, PetlModel
from autopetl.methods.options.mlp import MLPConfig
from autopetl.methods.registry import register_method


@register_method
class MLP(Method):
    name = "mlp"
    changes_backbone = False
    config_cls = MLPConfig
    config: MLPConfig

    def _dims(self, backbone: VisionTransformer) -> list[int]:
        return self.config.dims(backbone.num_features, backbone.num_classes)

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        layers: list[nn.Module] = []
        dims = self._dims(backbone)
        for i, (a, b) in enumerate(pairwise(dims)):
            if i > 0:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        head = nn.Sequential(*layers)
        backbone.head = head  # type: ignore[assignment]  # timm types it Linear | Identity
        head.requires_grad_(True)
        return PetlModel(backbone)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        dims = self._dims(backbone)
        return sum(a * b + b for a, b in pairwise(dims))
