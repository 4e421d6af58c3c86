"""``mlp``'s options (the method: :mod:`autopetl.methods.mlp`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class MLPConfig(MethodConfig):
    """Attributes:
    layers: Linear layers in the head, k (VPT reports k = 2, 3 and 5).
    hidden: Width of the hidden layers; 0 means the feature width d, as in VPT's code.
    """

    layers: int = 2
    hidden: int = 0

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {self.layers}")
        if self.hidden < 0:
            raise ConfigError(f"hidden must be >= 0 (0 = the feature width), got {self.hidden}")

    def dims(self, features: int, classes: int) -> list[int]:
        width = self.hidden or features
        return [features] + [width] * (self.layers - 1) + [classes]


SPEC = MethodSpec("mlp", MLPConfig)
