"""Prompt tokens inserted into a timm ViT's sequence: the machinery VPT and DVPT share.

Prompts go right after the prefix tokens ([CLS] and any registers), as in VPT's official code:
``[prefix, prompts, patches]``. Shallow prompts enter before the first block and travel through
the network; deep prompts replace the previous layer's prompt outputs before every block. The
prompt outputs are dropped before the final norm and pooling, so heads that average patch tokens
never see them.
"""

from __future__ import annotations

import math

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import PetlModel


def vpt_init_(prompts: torch.Tensor, backbone: VisionTransformer) -> None:
    """VPT's Xavier-uniform init: val = sqrt(6 / (3 * patch_h * patch_w + d)) (KMnP/vpt)."""
    ph, pw = backbone.patch_embed.patch_size
    val = math.sqrt(6.0 / float(3 * ph * pw + prompts.shape[-1]))
    nn.init.uniform_(prompts, -val, val)


class PromptedModel(PetlModel):
    """A frozen ViT whose blocks see prompt tokens; subclasses say what the prompts are."""

    def __init__(self, backbone: VisionTransformer, prompt_length: int, dropout: float) -> None:
        super().__init__(backbone)
        self.prompt_length = prompt_length
        self.prompt_dropout = nn.Dropout(dropout)

    def first_prompts(self, tokens: torch.Tensor) -> torch.Tensor:
        """Prompts [B, p, d] entering the first block; ``tokens`` are the embedded input."""
        raise NotImplementedError

    def deep_prompts(self, layer: int) -> torch.Tensor | None:
        """Prompts [p, d] replacing the prompt outputs before block ``layer`` >= 1, or None."""
        return None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.backbone
        x = vit.patch_embed(x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        n, p = vit.num_prefix_tokens, self.prompt_length
        first = self.prompt_dropout(self.first_prompts(x)).to(x.dtype)
        x = torch.cat([x[:, :n], first, x[:, n:]], dim=1)
        for i, block in enumerate(vit.blocks):
            if i > 0 and (deep := self.deep_prompts(i)) is not None:
                deep = self.prompt_dropout(deep.to(x.dtype).expand(x.shape[0], -1, -1))
                x = torch.cat([x[:, :n], deep, x[:, n + p :]], dim=1)
            x = block(x)
        x = torch.cat([x[:, :n], x[:, n + p :]], dim=1)
        return vit.norm(x)
