"""``dvpt``: Dynamic Visual Prompt Tuning (Ruan and Wang, 2023, arXiv:2307.09787).

DVPT makes the first layer's prompts depend on the image, P(x) = P + pi(x), where pi is the
output of a small Meta-Net; the deeper layers keep VPT-deep's static prompts (Jia et al., 2022).
The Meta-Net is ``depth`` linear layers with GELU between them (the paper's ablation tries 2, 4
and 6 layers; 4 is its default). ``dynamic = shared`` makes pi one d-dimensional vector added to
every prompt; ``dynamic = specific`` makes it p x d, one vector per prompt (better in the paper's
ablation on KITTI, Pets and Resisc45, at a last layer p times wider).

What the Meta-Net reads is not stated in the paper, so it is an option:

- ``patch_mean`` (default): the mean of the frozen patch embeddings, i.e. the tokens entering the
  first block (position embedding added) without the prefix tokens ([CLS], registers). These are
  computed anyway, so the cost is one mean over the tokens: no extra forward pass. It sees local
  appearance and the layout the position embeddings encode, but no attention.
- ``cls``: the frozen backbone's pooled feature ([CLS] after the final norm for token-pooled
  ViTs), as CoCoOp's Meta-Net reads the frozen CLIP image feature (Zhou et al., CVPR 2022). It
  costs one extra forward pass of the frozen backbone without gradients, about +50% compute in
  training and +100% at inference, but gives the Meta-Net a semantic summary of the image.

Either input is standardised without parameters (a LayerNorm without affine) before the Meta-Net,
for the same reason CoCoOp normalises its image features: the scale of frozen features differs
between backbones and layers (DINOv2's patch-mean vectors have a per-feature std near 0.07).

Cost in parameters, on top of VPT-deep's N * p * d prompts: a Meta-Net d -> h -> ... -> h -> o with
o = d (shared) or p * d (specific). With the default width h = 128, depth 4 and p = 10 on
ViT-S/14 (d = 384) that is 0.13 M (shared) or 0.58 M (specific) against VPT-deep's 0.05 M.
All Meta-Net layers keep PyTorch's default initialisation (as CoCoOp's), so pi is small but not
zero at the start and differs between images from the first step.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods._prompting import PromptedModel, vpt_init_
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.dvpt import DVPTConfig
from autopetl.methods.registry import register_method


class MetaNet(nn.Sequential):
    """Linear layers with GELU between them (none after the last): the Meta-Net of DVPT."""

    def __init__(self, dims: list[int]) -> None:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(dims)):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(a, b))
        super().__init__(*layers)


class DVPTModel(PromptedModel):
    """VPT-deep whose first-layer prompts get an image-dependent offset pi(x) from a Meta-Net."""

    def __init__(self, backbone: VisionTransformer, config: DVPTConfig) -> None:
        super().__init__(backbone, config.prompt_length, config.dropout)
        self.config = config
        d = backbone.embed_dim
        layers = len(backbone.blocks) if config.deep else 1
        self.prompts = nn.Parameter(torch.empty(layers, config.prompt_length, d))
        vpt_init_(self.prompts, backbone)
        self.meta_net = MetaNet(config.meta_dims(d))
        self._meta_features: torch.Tensor | None = None  # the cls input, set per forward

    def meta_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """The Meta-Net's input [B, d] for this batch, standardised (see the module docstring)."""
        if self.config.meta_input == "cls":
            if self._meta_features is None:
                raise RuntimeError("meta_input='cls' needs forward_features(x) to run first")
            feats = self._meta_features
        else:
            feats = tokens[:, self.backbone.num_prefix_tokens :].mean(dim=1)
        return F.layer_norm(feats.float(), feats.shape[-1:])

    def dynamic_offset(self, tokens: torch.Tensor) -> torch.Tensor:
        """pi(x): [B, 1, d] when shared, [B, p, d] when specific."""
        pi = self.meta_net(self.meta_input(tokens))
        return pi.view(tokens.shape[0], -1, self.backbone.embed_dim)

    def first_prompts(self, tokens: torch.Tensor) -> torch.Tensor:
        # P(x) = P + pi(x); a shared pi broadcasts over the p prompts.
        return self.prompts[0].unsqueeze(0) + self.dynamic_offset(tokens)

    def deep_prompts(self, layer: int) -> torch.Tensor | None:
        return self.prompts[layer] if layer < self.prompts.shape[0] else None

    def prepare_prompts(self, x: torch.Tensor | None) -> None:
        if x is None or self.config.meta_input != "cls":
            self._meta_features = None
            return
        vit = self.backbone
        # CoCoOp-style: the frozen model's own image feature, without prompts and without grads.
        with torch.no_grad():
            self._meta_features = vit.forward_head(vit.forward_features(x), pre_logits=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.prepare_prompts(x)
        try:
            return super().forward_features(x)
        finally:
            self.prepare_prompts(None)


@register_method
class DVPT(Method):
    name = "dvpt"
    changes_backbone = False
    config_cls = DVPTConfig
    config: DVPTConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        return DVPTModel(backbone, self.config)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        c, d = self.config, backbone.embed_dim
        layers = len(backbone.blocks) if c.deep else 1
        dims = c.meta_dims(d)
        meta = sum(a * b + b for a, b in pairwise(dims))
        return layers * c.prompt_length * d + meta + head_params(backbone)
