"""``dvpt``'s options (the method: :mod:`autopetl.methods.dvpt`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class DVPTConfig(MethodConfig):
    """Attributes:
    prompt_length: Prompts per layer, p.
    depth: Linear layers in the Meta-Net (2, 4 or 6 in the paper's ablation).
    hidden: Width of the Meta-Net's hidden layers.
    dynamic: ``shared`` (one d-dim pi for all prompts) or ``specific`` (p x d, one per prompt).
    meta_input: ``patch_mean`` (no extra forward) or ``cls`` (one extra no-grad forward).
    deep: Static VPT-deep prompts before blocks 2..N (the paper's setting); False is shallow.
    dropout: Dropout on the prompt tokens (VPT's prompt dropout).
    """

    prompt_length: int = 10
    depth: int = 4
    hidden: int = 128
    dynamic: Literal["shared", "specific"] = "shared"
    meta_input: Literal["patch_mean", "cls"] = "patch_mean"
    deep: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.prompt_length < 1:
            raise ConfigError(f"prompt_length must be >= 1, got {self.prompt_length}")
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")
        if self.hidden < 1:
            raise ConfigError(f"hidden must be >= 1, got {self.hidden}")
        if self.dynamic not in ("shared", "specific"):
            raise ConfigError(f"dynamic must be 'shared' or 'specific', got {self.dynamic!r}")
        if self.meta_input not in ("patch_mean", "cls"):
            raise ConfigError(f"meta_input must be 'patch_mean' or 'cls', got {self.meta_input!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")

    def meta_dims(self, embed_dim: int) -> list[int]:
        """Widths of the Meta-Net, input first: d, h, ..., h, o (``depth`` + 1 entries)."""
        out = embed_dim * (self.prompt_length if self.dynamic == "specific" else 1)
        return [embed_dim] + [self.hidden] * (self.depth - 1) + [out]


SPEC = MethodSpec("dvpt", DVPTConfig)
