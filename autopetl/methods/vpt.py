"""``vpt``: Visual Prompt Tuning (Jia et al., ECCV 2022, arXiv:2203.12119).

Learnable prompt tokens are inserted after [CLS]. Shallow: p prompts before the first block
(p * d parameters). Deep: a fresh set before every block (N * p * d parameters). Initialisation
and placement follow the official code (KMnP/vpt), see :mod:`autopetl.methods._prompting`.

The paper's design choices are options too, each with the paper's default, so a search can ask
which hold for a task (``search_spaces/vpt_design.yaml``); the official code's names in brackets:

- ``location``: ``prepend`` (new tokens after the prefix) or ``add`` (one prompt per token,
  [CLS] included, added element-wise to the sequence: no new tokens, so no extra inference
  cost) [LOCATION prepend / add];
- ``deep_layers`` k and ``deep_from``: deep prompts on the first k blocks (``first``; the shallow
  prompt is the first of them) or on the last k (``last``: the blocks before see no prompts)
  [NUM_DEEP_LAYERS, REVERSE_DEEP]; 0 is every block. The official REVERSE_DEEP path slices off
  p patch tokens where it first inserts its prompts; here the first prompts are inserted, as
  everywhere else;
- ``readout``: the [CLS] token, or the mean of the image tokens, of the prompt outputs, or of
  both [VIT_POOL_TYPE original / img_pool / prompt_pool / imgprompt_pool]; the pooled feature
  goes through timm's fc_norm and head. The prompt readouts need ``prepend``, as in the official
  code.

On a timm Swin (``swin_*``) prompts go inside every local window and stay out of patch merging
(:mod:`autopetl.methods._swin_prompting`); ``location: add`` is a ViT's alone, and ``cls`` is the
Swin's own readout, the mean of its image tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.backbones import family_of
from autopetl.methods._prompting import PromptedModel, embed_tokens, vpt_init_
from autopetl.methods._swin_prompting import SwinPromptedModel, swin_blocks
from autopetl.methods.base import Method, PetlModel, head_params, make_head_tunable
from autopetl.methods.options.vpt import LOCATIONS as LOCATIONS  # where it was
from autopetl.methods.options.vpt import SPEC, VPTConfig
from autopetl.methods.registry import register_method


def _tokens(backbone: VisionTransformer) -> int:
    """Tokens of the sequence the blocks see: prefix ([CLS], registers) and patches."""
    return backbone.num_prefix_tokens + backbone.patch_embed.num_patches


class VPTModel(PromptedModel):
    def __init__(self, backbone: VisionTransformer, config: VPTConfig) -> None:
        super().__init__(backbone, config.prompt_length, config.dropout, config.readout)
        self.config = config
        blocks = config.prompted_blocks(len(backbone.blocks))
        # Block index -> row of self.prompts.
        self.rows = {block: row for row, block in enumerate(blocks)}
        length = _tokens(backbone) if config.location == "add" else config.prompt_length
        self.prompts = nn.Parameter(torch.empty(len(blocks), length, backbone.embed_dim))
        vpt_init_(self.prompts, backbone)

    def first_prompts(self, tokens: torch.Tensor) -> torch.Tensor | None:
        return self.deep_prompts(0)

    def deep_prompts(self, layer: int) -> torch.Tensor | None:
        row = self.rows.get(layer)
        return None if row is None else self.prompts[row]

    @property
    def prepends_prompts(self) -> bool:
        return self.config.location == "prepend"

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.config.location == "prepend":
            return super().encode(x)
        # add: each prompted block's input gets its prompts added, one per token (official
        # "add": the embeddings at the first block, the previous block's output after).
        vit = self.backbone
        x = embed_tokens(vit, x)
        for i, block in enumerate(vit.blocks):
            row = self.rows.get(i)
            if row is not None:
                x = x + self.prompt_dropout(self.prompts[row].to(x.dtype)).unsqueeze(0)
            x = block(x)
        return vit.norm(x), None


class SwinVPTModel(SwinPromptedModel):
    """VPT on a Swin: each prompted block's prompts at its stage's width, one tensor per stage
    (``prompts.<s>``: [prompted blocks of stage s, p, C_s])."""

    def __init__(self, backbone: Any, config: VPTConfig) -> None:
        super().__init__(backbone, config.dropout, config.readout)
        blocks = swin_blocks(backbone)
        prompted = config.prompted_blocks(len(blocks))
        self.prompts = nn.ParameterList()
        # Block index (across stages) -> (index into self.prompts, row).
        self.rows: dict[int, tuple[int, int]] = {}
        for stage in sorted({blocks[i][0] for i in prompted}):
            mine = [i for i in prompted if blocks[i][0] == stage]
            for row, i in enumerate(mine):
                self.rows[i] = (len(self.prompts), row)
            dim = blocks[mine[0]][1].dim
            tensor = torch.empty(len(mine), config.prompt_length, dim)
            vpt_init_(tensor, backbone, width=blocks[0][1].dim)  # as the official code
            self.prompts.append(nn.Parameter(tensor))

    def prompts_for(self, block: int) -> torch.Tensor | None:
        at = self.rows.get(block)
        return None if at is None else self.prompts[at[0]][at[1]]


@register_method
class VPT(Method):
    name = "vpt"
    changes_backbone = False
    config_cls = VPTConfig
    config: VPTConfig
    families = SPEC.families

    def refuses(self, family: str) -> str | None:
        if family == "swin" and self.config.location != "prepend":
            return (
                "vpt location add adds one prompt per token of a ViT's sequence, which a Swin "
                "does not have; on a Swin use location prepend (prompts in every window)"
            )
        return None

    def attach(self, backbone: VisionTransformer) -> PetlModel:
        make_head_tunable(backbone)
        if family_of(backbone) == "swin":
            return SwinVPTModel(backbone, self.config)
        return VPTModel(backbone, self.config)

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        c = self.config
        if family_of(backbone) == "swin":
            blocks = swin_blocks(backbone)
            dims = [blocks[i][1].dim for i in c.prompted_blocks(len(blocks))]
            return c.prompt_length * sum(dims) + head_params(backbone)
        layers = len(c.prompted_blocks(len(backbone.blocks)))
        length = _tokens(backbone) if c.location == "add" else c.prompt_length
        return layers * length * backbone.embed_dim + head_params(backbone)
