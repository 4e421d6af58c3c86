"""VPT on a timm Swin Transformer (VPT, Sec. 4 and Table 2): prompts inside every local window.

A Swin has no single token sequence: each block attends within local windows (shifted every
other block), and each stage starts by merging 2x2 neighbouring patches. As in VPT's official
code (KMnP/vpt, ``PromptedSwinTransformer``), prompts are

- **in every window's attention**: a block's prompts [B, p, C] are prepended to each of its
  windows, with no relative position bias and no shift mask (zeros for their rows and columns),
  so every window's image tokens can attend to them; after the attention, a prompt's outputs are
  averaged over the windows of its image, and the MLP sees them with the image tokens;
- **left out of patch merging**: the image tokens merge 2x2 as timm does; a prompt is not a patch
  of the grid, so it is not merged with neighbours, and crosses the merging layer as four copies
  of itself through the layer's norm and reduction (the official ``upsample_prompt``), which
  gives it the next stage's width;
- **shallow or deep**: shallow prompts enter the first block and travel on; deep prompts (each
  block's own, with the stage's width) replace the previous block's prompt outputs. Blocks are
  counted across stages, so ``deep_layers`` and ``deep_from`` mean the same as on a ViT.

Where this differs from the official code, on purpose: the official block expands a prompt to
the windows window-major (``expand(num_windows, B, ...)``) while its windows are batch-major
(``window_partition`` orders them image by image), so with more than one image in a batch a
window sees another image's prompt outputs, and the mean over windows mixes images: a
prediction depends on the rest of its batch. Here each image's windows see its own prompts
(``tests/test_swin.py`` checks that a batch gives each image the output it gets alone).

The output: a Swin has no [CLS] token. ``readout: cls`` is the backbone's own (timm's average of
the image tokens); the official code pools image tokens and prompt outputs together, which is
``readout: image_prompt_pool``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from autopetl.methods.base import PetlModel


def swin_blocks(swin: Any) -> list[tuple[int, Any]]:
    """Every block of a timm SwinTransformer, across stages, as (stage index, block)."""
    return [(s, block) for s, stage in enumerate(swin.layers) for block in stage.blocks]


def _window_attention(attn: Any, x: torch.Tensor, prompts: torch.Tensor, mask: Any) -> torch.Tensor:
    """timm's ``WindowAttention.forward`` with ``p`` prompt tokens first in every window.

    ``x`` [B_, N, C] are the windows, ``prompts`` [B_, p, C] their prompts. The prompts' rows and
    columns of the relative position bias and of the shift mask are zero: a prompt has no place
    in the window, and lies in every window alike.

    This re-runs timm's own steps (its private ``_get_rel_pos_bias``, its ``fused_attn`` switch),
    as written in timm 1.0.31; ``tests/test_swin.py`` checks that with no prompts the whole
    model still equals timm's Swin, so a timm that changes them fails there first.
    """
    tokens = torch.cat([prompts, x], dim=1)
    b_, n, _ = tokens.shape
    p = prompts.shape[1]
    qkv = attn.qkv(tokens).reshape(b_, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    bias = F.pad(attn._get_rel_pos_bias(), (p, 0, p, 0))  # [1, heads, n, n]
    if mask is not None:
        windows = mask.shape[0]
        shift = F.pad(mask, (p, 0, p, 0)).to(bias.dtype)  # [windows, n, n]
        bias = (bias.unsqueeze(1) + shift.unsqueeze(1).unsqueeze(0)).expand(
            b_ // windows, -1, -1, -1, -1
        )
        bias = bias.reshape(b_, attn.num_heads, n, n)
    bias = bias.to(q.dtype)
    if attn.fused_attn:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
    else:  # timm's explicit path (precision.py turns fused attention off for bf16 on CPU)
        weights = attn.softmax((q * attn.scale) @ k.transpose(-2, -1) + bias)
        out = attn.attn_drop(weights) @ v
    out = out.transpose(1, 2).reshape(b_, n, -1)
    return attn.proj_drop(attn.proj(out))


def _attend(
    block: Any, x: torch.Tensor, prompts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's ``SwinTransformerBlock._attn`` with prompts: (image tokens [B, H, W, C], prompt
    outputs [B, p, C], averaged over each image's windows)."""
    from timm.models.swin_transformer import window_partition, window_reverse

    b, h, w, c = x.shape
    wh, ww = block.window_size
    shifted = any(block.shift_size)
    if shifted:
        x = torch.roll(x, shifts=(-block.shift_size[0], -block.shift_size[1]), dims=(1, 2))
    x = F.pad(x, (0, 0, 0, (ww - w % ww) % ww, 0, (wh - h % wh) % wh))
    _, hp, wp, _ = x.shape
    windows = window_partition(x, block.window_size).view(-1, block.window_area, c)
    per_image = windows.shape[0] // b
    # Window partition orders windows image by image: image i owns rows [i * per_image, ...).
    window_prompts = prompts.repeat_interleave(per_image, dim=0)
    mask = block.get_attn_mask(x) if getattr(block, "dynamic_mask", False) else block.attn_mask
    out = _window_attention(block.attn, windows, window_prompts, mask)
    p = prompts.shape[1]
    prompt_out = out[:, :p].reshape(b, per_image, p, c).mean(dim=1)
    image = window_reverse(out[:, p:].reshape(-1, wh, ww, c), block.window_size, hp, wp)
    image = image[:, :h, :w, :].contiguous()
    if shifted:
        image = torch.roll(image, shifts=block.shift_size, dims=(1, 2))
    return image, prompt_out


def prompted_block(
    block: Any, x: torch.Tensor, prompts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm ``SwinTransformerBlock`` on image tokens [B, H, W, C] and prompts [B, p, C]."""
    b, h, w, c = x.shape
    image, prompt_out = _attend(block, block.norm1(x), block.norm1(prompts))
    x = x + block.drop_path1(image)
    prompts = prompts + block.drop_path1(prompt_out)
    tokens = torch.cat([prompts, x.reshape(b, -1, c)], dim=1)
    tokens = tokens + block.drop_path2(block.mlp(block.norm2(tokens)))
    p = prompts.shape[1]
    return tokens[:, p:].reshape(b, h, w, c), tokens[:, :p]


def merge_prompts(downsample: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """Prompts across a stage's patch merging: four copies through its norm and reduction."""
    if isinstance(downsample, nn.Identity):
        return prompts
    merging: Any = downsample
    return merging.reduction(merging.norm(prompts.repeat(1, 1, 4)))


class SwinPromptedModel(PetlModel):
    """A frozen timm Swin whose windows see prompt tokens; ``prompts_for(i)`` gives block
    ``i``'s (counted across stages), or None where a block keeps the prompts it is given."""

    def __init__(self, backbone: Any, dropout: float, readout: str) -> None:
        super().__init__(backbone)
        self.prompt_dropout = nn.Dropout(dropout)
        self.readout = readout

    def prompts_for(self, block: int) -> torch.Tensor | None:
        """Prompts [p, C] for block ``block``, or None."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The normed image tokens [B, H, W, C] and prompt outputs [B, p, C] (None when no
        block had prompts)."""
        swin: Any = self.backbone
        x = swin.patch_embed(x)
        prompts: torch.Tensor | None = None
        i = 0
        for stage in swin.layers:
            x = stage.downsample(x)
            if prompts is not None:
                prompts = merge_prompts(stage.downsample, prompts)
            for block in stage.blocks:
                fresh = self.prompts_for(i)
                if fresh is not None:
                    fresh = self.prompt_dropout(fresh.to(x.dtype))
                    prompts = fresh.unsqueeze(0).expand(x.shape[0], -1, -1)
                if prompts is None:
                    x = block(x)
                else:
                    x, prompts = prompted_block(block, x, prompts)
                i += 1
        x = swin.norm(x)
        return x, None if prompts is None else swin.norm(prompts)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, prompts = self.encode(x)
        swin: Any = self.backbone
        if self.readout in ("cls", "image_pool"):
            return swin.forward_head(tokens)
        if prompts is None:
            raise ValueError(
                f"readout {self.readout} needs prompt outputs, and no block had prompts"
            )
        if self.readout == "prompt_pool":
            pooled = prompts.mean(dim=1)
        else:  # image_prompt_pool: the official Swin code's readout
            pooled = torch.cat([prompts, tokens.flatten(1, 2)], dim=1).mean(dim=1)
        head = swin.head
        return head.flatten(head.fc(head.drop(pooled)))
