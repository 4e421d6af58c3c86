"""``dora``'s options (the method: :mod:`autopetl.methods.dora`).

DoRA's options are LoRA's (rank, alpha, dropout, targets), checked the same way; only the
defaults differ, taken from the official code (NVlabs/DoRA, commonsense_reasoning/finetune.py's
``lora_r=8, lora_alpha=16, lora_dropout=0.05``, and its scripts' target modules ``q_proj,
k_proj, v_proj, up_proj, down_proj``: q, k, v, fc1 and fc2 on a ViT).
"""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.methods.options.base import MethodSpec
from autopetl.methods.options.lora import LoRAConfig


@dataclass(frozen=True)
class DoRAConfig(LoRAConfig):
    """Attributes:
    rank: Rank r of each directional update B A.
    alpha: Scaling numerator; the update is multiplied by alpha / r (the official scripts use
        alpha = 2 r throughout: r 16 / alpha 32, r 32 / alpha 64).
    dropout: Dropout on the adapted branch's input (the frozen output itself sees the clean input).
    targets: Which linear maps are decomposed and updated: any of q, k, v, o, fc1, fc2.

    The checks are LoRA's (``LoRAConfig.__post_init__``).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q", "k", "v", "fc1", "fc2")


SPEC = MethodSpec("dora", DoRAConfig)
