"""``vpt``: Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv:2203.12119).

Learnable prompt tokens are inserted after [CLS]. Shallow: p prompts before the first block
(p * d parameters). Deep: a fresh set before every block (N * p * d parameters). Initialisation
and placement follow the official code (KMnP/vpt), see :mod:`autopetl.methods._prompting`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.errors import ConfigError
from autopetl.methods._prompting import PromptedModel, vpt_init_
from autopetl.methods.base import Method, MethodConfig, PetlModel, head_params, make_head_tunable
from autopetl.methods.registry import register_method


@dataclass(frozen=True)
class VPTConfig(MethodConfig):
    """Attributes:
    prompt_length: Prompts per layer, p (VPT searches 1 to 200).
    deep: Prompts before every block (VPT-deep) instead of the first only (VPT-shallow).
    dropout: Dropout on the prompt tokens (VPT's prompt dropout).
    """

    prompt_length: int = 10
    deep: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_length < 1:
            raise ConfigError(f"prompt_length must be >= 1, got {self.prompt_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")


class VPTModel(PromptedModel):
    def __init__(self, backbone: VisionTransformer, config: VPTConfig) -> None:
        super().__init__(backbone, config.prompt_length, config.dropout)
        layers = len(backbone.blocks) if config.deep else 1
        self.prompts = nn.Parameter(torch.empty(layers, config.prompt_length, backbone.embed_dim))
        vpt_init_(self.prompts, backbone)

    def first_prompts(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.prompts[0].expand(tokens.shape[0], -1, -1)

    def deep_prompts(self, layer: int) -> torch.Tensor | None:
        return self.prompts[layer] if layer < self.prompts.shape[0] else None


@register_method
class VPT(Method):
    name = "vpt"
    changes_backbone = False
    config_cls = VPTConfig
    config: VPTConfig

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        return VPTModel(backbone, self.config)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        layers = len(backbone.blocks) if self.config.deep else 1
        return layers * self.config.prompt_length * backbone.embed_dim + head_params(backbone)
