"""``sidetune``: Side-tuning (Zhang et al., ECCV 2020, arXiv:1912.13503).

A small side network reads the image and its feature is blended with the frozen backbone's
pooled feature before the head: f(x) = a * base(x) + (1 - a) * side(x), a = sigmoid(alpha) with
a learned scalar alpha. This follows VPT's implementation of the baseline that DVPT's Table 1
reports as "Sidetune" (KMnP/vpt: alpha starts at 0, so a = 0.5; the side feature is linearly
projected to d without bias). VPT's side network is an ImageNet-pretrained AlexNet; autopetl has
no second pretrained model to download, so the side network here is a small randomly initialised
CNN: ``convs`` stride-2 3x3 convolutions, widths ``channels * 2**i``, GELU after each, global
average pooling, then the projection. It has no BatchNorm on purpose: running statistics are
buffers, not parameters, and the saved artifact holds the tunable parameters alone.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.sidetune import SideTuneConfig
from autopetl.methods.registry import register_method


class SideNetwork(nn.Sequential):
    """Strided convolutions, global average pooling and a bias-free projection to d."""

    def __init__(self, config: SideTuneConfig, out_dim: int) -> None:
        layers: list[nn.Module] = []
        widths = config.widths()
        for a, b in pairwise(widths):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GELU()]
        layers += [
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(widths[-1], out_dim, bias=False),
        ]
        super().__init__(*layers)


class SideTuneModel(PetlModel):
    def __init__(self, backbone: VisionTransformer, config: SideTuneConfig) -> None:
        super().__init__(backbone)
        self.side = SideNetwork(config, backbone.num_features)
        self.alpha = nn.Parameter(torch.tensor(float(config.alpha_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.backbone
        base = vit.forward_head(self.forward_features(x), pre_logits=True)
        a = torch.sigmoid(self.alpha)
        return vit.head(a * base + (1 - a) * self.side(x))


@register_method
class SideTune(Method):
    name = "sidetune"
    changes_backbone = False
    config_cls = SideTuneConfig
    config: SideTuneConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        return SideTuneModel(backbone, self.config)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        widths = self.config.widths()
        convs = sum(9 * a * b + b for a, b in pairwise(widths))
        projection = widths[-1] * backbone.num_features
        return convs + projection + 1 + head_params(backbone)  # + 1: alpha
