"""``sidetune``'s options (the method: :mod:`autopetl.methods.sidetune`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class SideTuneConfig(MethodConfig):
    """Attributes:
    channels: Width of the side network's first convolution; each next one doubles it.
    convs: Number of stride-2 convolutions.
    alpha_init: Initial blending logit; sigmoid(alpha) weighs the frozen feature (0 -> 0.5).
    """

    channels: int = 16
    convs: int = 4
    alpha_init: float = 0.0

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ConfigError(f"channels must be >= 1, got {self.channels}")
        if self.convs < 1:
            raise ConfigError(f"convs must be >= 1, got {self.convs}")

    def widths(self) -> list[int]:
        return [3] + [self.channels * 2**i for i in range(self.convs)]


SPEC = MethodSpec("sidetune", SideTuneConfig)
