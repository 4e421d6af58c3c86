"""``adapter``'s options (the method: :mod:`autopetl.methods.adapter`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class AdapterConfig(MethodConfig):
    """Attributes:
    dim: Bottleneck width (VPT's table reports 8 and 64; AdaptFormer uses 64).
    placement: ``sequential`` (Houlsby, after the MLP) or ``parallel`` (AdaptFormer).
    scale: Multiplier s on the adapter's output (AdaptFormer: 0.1).
    """

    dim: int = 8
    placement: Literal["sequential", "parallel"] = "parallel"
    scale: float = 0.1

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise ConfigError(f"dim must be >= 1, got {self.dim}")
        if self.placement not in ("sequential", "parallel"):
            raise ConfigError(
                f"placement must be 'sequential' or 'parallel', got {self.placement!r}"
            )
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")


SPEC = MethodSpec("adapter", AdapterConfig)
