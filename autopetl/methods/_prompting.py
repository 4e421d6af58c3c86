"""Prompt tokens inserted into a timm ViT's sequence: the machinery VPT and DVPT share.

Prompts go right after the prefix tokens ([CLS] and any registers), as in VPT's official code:
``[prefix, prompts, patches]``. Shallow prompts enter before the first block and travel through
the network; deep prompts replace the previous layer's prompt outputs before every block. The
prompt outputs are dropped before the final norm and pooling, so heads that average patch tokens
never see them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.base import PetlModel

# The readouts PromptedModel knows, checked (without torch) by VPTConfig.
from autopetl.methods.options.vpt import READOUTS as READOUTS


def vpt_init_(prompts: torch.Tensor, backbone: Any, width: int | None = None) -> None:
    """VPT's Xavier-uniform init: val = sqrt(6 / (3 * patch_h * patch_w + d)) (KMnP/vpt).

    ``d`` is the prompts' width, or ``width``: the official Swin code uses the first stage's
    width for every stage's prompts.
    """
    ph, pw = backbone.patch_embed.patch_size
    val = math.sqrt(6.0 / float(3 * ph * pw + (width or prompts.shape[-1])))
    nn.init.uniform_(prompts, -val, val)


def embed_tokens(vit: Any, x: torch.Tensor) -> torch.Tensor:
    """What a timm ViT's forward_features does before its blocks: the token sequence."""
    return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))


class PromptedModel(PetlModel):
    """A frozen ViT whose blocks see prompt tokens; subclasses say what the prompts are.

    Prompts for block ``i`` come from :meth:`first_prompts` (``i == 0``) or :meth:`deep_prompts`.
    The first prompts to arrive are inserted after the prefix tokens; later ones replace the
    previous block's prompt outputs. A block without prompts passes them on. So VPT-deep on the
    first k blocks and on the last k blocks (where the first k blocks see no prompts at all) are
    one loop.
    """

    def __init__(
        self,
        backbone: VisionTransformer,
        prompt_length: int,
        dropout: float,
        readout: str = "cls",
    ) -> None:
        super().__init__(backbone)
        self.prompt_length = prompt_length
        self.prompt_dropout = nn.Dropout(dropout)
        self.readout = readout

    def first_prompts(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """Prompts [B, p, d] entering the first block (None: none there); ``tokens`` are the
        embedded input."""
        raise NotImplementedError

    def deep_prompts(self, layer: int) -> torch.Tensor | None:
        """Prompts [p, d] (or [B, p, d]) for block ``layer`` >= 1, or None."""
        return None

    @property
    def prepends_prompts(self) -> bool:
        """Whether the sequence is this class's encode(): prompts inserted after the prefix
        tokens of the backbone's own sequence. A mixed-task pass (autopetl/serving/mixed.py) runs
        such models with every other task; one that builds its sequence otherwise says False."""
        return True

    def prepare_prompts(self, x: torch.Tensor | None) -> None:
        """Before prompts are asked for a batch ``x`` (None: after): what they need of the
        images beyond the tokens (DVPT's frozen image feature). A mixed-task pass
        (autopetl/serving/mixed.py) calls it for this model's samples alone."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The normed output tokens without the prompts, and the normed prompt outputs (None
        when no block had prompts)."""
        vit = self.backbone
        x = embed_tokens(vit, x)
        n, p = vit.num_prefix_tokens, self.prompt_length
        inserted = False
        for i, block in enumerate(vit.blocks):
            prompts = self.first_prompts(x) if i == 0 else self.deep_prompts(i)
            if prompts is not None:
                prompts = prompts.to(x.dtype)
                if prompts.dim() == 2:
                    prompts = prompts.expand(x.shape[0], -1, -1)
                prompts = self.prompt_dropout(prompts)
                rest = x[:, n + p :] if inserted else x[:, n:]
                x = torch.cat([x[:, :n], prompts, rest], dim=1)
                inserted = True
            x = block(x)
        x = vit.norm(x)
        if not inserted:
            return x, None
        return torch.cat([x[:, :n], x[:, n + p :]], dim=1), x[:, n : n + p]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.readout == "cls":
            return self.forward_head(self.forward_features(x))
        tokens, prompts = self.encode(x)
        return self.read_out(tokens, prompts)

    def read_out(self, tokens: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
        """Pool as :attr:`readout` says, then timm's own head path (fc_norm, dropout, head)."""
        vit = self.backbone
        image = tokens[:, vit.num_prefix_tokens :]
        if self.readout == "image_pool":
            pooled = image.mean(dim=1)
        elif prompts is None:
            raise ValueError(
                f"readout {self.readout} needs prompt outputs, and no block had prompts"
            )
        elif self.readout == "prompt_pool":
            pooled = prompts.mean(dim=1)
        else:  # image_prompt_pool
            pooled = torch.cat([prompts, image], dim=1).mean(dim=1)
        return vit.head(vit.head_drop(vit.fc_norm(pooled)))
