"""``dora``: Weight-Decomposed Low-Rank Adaptation (Liu et al., ICML 2024, arXiv:2402.09353).

Each targeted frozen linear map W (out x in) is split into a magnitude and a direction; the
direction gets LoRA's low-rank update and the magnitude is trained as it is:

    W' = m * (W + s B A) / ||W + s B A||_c,        s = alpha / r,

where ||.||_c is the norm of each output row (peft: ``torch.linalg.norm(weight, dim=1)`` of the
(out, in) weight), m (out,) starts as ||W||_c, A (r x in) is Kaiming-uniform and B (out x r) zero,
so a freshly attached model computes exactly the linear-probe model (m / ||W||_c is exactly 1).
Trained: A, B and m per targeted map, and the head: r (in + out) + out per map.

The norm is treated as a constant (no gradient flows through it), as the paper's section 4.3
suggests and as both the official code (NVlabs/DoRA) and HF peft do. The forward is peft's
(src/peft/tuners/lora/dora.py, ``DoraLinearLayer.forward``): with the frozen output
y = W x + b already computed,

    y' = y + (m / n - 1) * (y - b) + (m / n) * s B A x,        n = ||W + s B A||_c,

that is, frozen output plus a per-task term, so a mixed-task batch runs the frozen map once
(``SHARED``/``residual``, autopetl/serving/mixed.py). With dropout in training, peft (and the
official code) feed the dropped input to the whole extra term, W x + b + (m/n - 1) W d(x) +
(m/n) s B A d(x), which costs one more matmul by W; we do the same.

Targets are LoRA's: q, k, v (thirds of timm's fused ``attn.qkv``: each third gets its own A, B and
magnitude, as peft on a model with separate query/key/value maps), o, fc1 and fc2. Where we
differ from peft: the q, k and v thirds share one dropout mask (one dropout on the fused qkv's
input, as our LoRA does), where peft's separate maps draw one each; and the row norms are
computed in the frozen weight's dtype with autocast off (peft computes them in the input's
dtype, and under bf16 autocast its B A is rounded to bf16), so the norm is the same whatever
precision trains.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autopetl.methods.lora import LoRA, LoRALinear, LoRAQKV, LowRank
from autopetl.methods.options.dora import DoRAConfig
from autopetl.methods.options.lora import QKV
from autopetl.methods.registry import register_method


def weight_norm(weight: torch.Tensor, update: LowRank) -> torch.Tensor:
    """||W + s B A||_c, one norm per output row, detached (the paper's section 4.3)."""
    # peft passes lora_weight.detach() and detaches the norm: computing it without autograd is the
    # same and builds no graph. Autocast off: under bf16 autocast B A would be rounded to bf16
    # (peft's too); in the weight's own dtype the norm is the same whatever precision trains.
    with torch.no_grad(), torch.autocast(weight.device.type, enabled=False):
        delta = update.lora_b.to(weight.dtype) @ update.lora_a.to(weight.dtype)
        return torch.linalg.norm(weight + update.scaling * delta, dim=1)


def dora_term(
    h: torch.Tensor,
    frozen_out: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    update: LowRank,
    magnitude: torch.Tensor,
    dropped: bool,
) -> torch.Tensor:
    """What DoRA adds to the frozen output W x + b: (m/n - 1) W h + (m/n) s B A h.

    ``h`` is the branch's (dropped-out) input. Without dropout h is x, and W h is the frozen
    output less its bias, which is reused; with dropout W h is computed anew (peft's
    ``base_result=None`` branch)."""
    scale = magnitude / weight_norm(weight, update)  # (out,), broadcast over the last dim
    if dropped:
        base = F.linear(h, weight.to(h.dtype))
    else:
        base = frozen_out if bias is None else frozen_out - bias
    return ((scale - 1) * base + scale * update(h)).to(frozen_out.dtype)


class DoRALinear(LoRALinear):
    """A frozen nn.Linear decomposed into magnitude and direction, the direction LoRA-updated."""

    def __init__(self, base: nn.Linear, config: DoRAConfig) -> None:
        super().__init__(base, config)
        # m = ||W + s B A||_c with B = 0 (peft's update_layer): ||W||_c by the very computation
        # the forward repeats, so m / n is exactly 1 until B moves.
        self.magnitude = nn.Parameter(weight_norm(base.weight, self.lora))

    SHARED = "base"  # as LoRALinear's: the frozen map once, then each task's residual

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        dropped = self.dropout.training and self.dropout.p > 0
        return dora_term(
            h, shared_out, self.base.weight, self.base.bias, self.lora, self.magnitude, dropped
        )


class DoRAQKV(LoRAQKV):
    """timm's fused qkv Linear with DoRA on some of its q, k, v thirds, each with its own
    magnitude (the row norms of a third are those of the map it stands for)."""

    def __init__(self, base: nn.Linear, config: DoRAConfig) -> None:
        super().__init__(base, config)
        self.magnitudes = nn.ParameterDict(
            {
                t: nn.Parameter(weight_norm(base.weight[self._third(t)], self._update(t)))
                for t in self.updates
            }
        )

    def _update(self, target: str) -> LowRank:
        return cast(LowRank, self.updates[target])  # a ModuleDict's items are typed Module

    def _third(self, target: str) -> slice:
        """The rows of the fused weight (and columns of its output) that are q, k or v."""
        start = QKV.index(target) * self.slice
        return slice(start, start + self.slice)

    SHARED = "base"

    def residual(self, x: torch.Tensor, shared_out: torch.Tensor) -> torch.Tensor:
        h = self.dropout(x)
        dropped = self.dropout.training and self.dropout.p > 0
        weight, bias = self.base.weight, self.base.bias
        parts = []
        for t in QKV:
            if t not in self.updates:
                parts.append(shared_out.new_zeros(*shared_out.shape[:-1], self.slice))
                continue
            rows = self._third(t)
            parts.append(
                dora_term(
                    h,
                    shared_out[..., rows],
                    weight[rows],
                    None if bias is None else bias[rows],
                    self._update(t),
                    self.magnitudes[t],
                    dropped,
                )
            )
        return torch.cat(parts, dim=-1)


@register_method
class DoRA(LoRA):
    """LoRA's targets and wrapping, with DoRA's wrappers."""

    name = "dora"
    config_cls = DoRAConfig
    config: DoRAConfig
    linear_wrapper = DoRALinear
    qkv_wrapper = DoRAQKV

    def closed_form_params(self, backbone: VisionTransformer) -> int:
        """LoRA's r (in + out) per targeted map and block, plus a magnitude of ``out``
        entries per map, plus the head."""
        block: Any = backbone.blocks[0]
        attn_dim = block.attn.attn_dim
        hidden = getattr(block.mlp.fc1, "base", block.mlp.fc1).out_features
        outs = {"q": attn_dim, "k": attn_dim, "v": attn_dim, "o": backbone.embed_dim}
        outs |= {"fc1": hidden, "fc2": backbone.embed_dim}
        magnitudes = len(backbone.blocks) * sum(outs[t] for t in self.config.targets)
        return super().closed_form_params(backbone) + magnitudes
