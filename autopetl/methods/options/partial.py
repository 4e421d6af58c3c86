"""``partial``'s options (the method: :mod:`autopetl.methods.partial`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class PartialConfig(MethodConfig):
    """Attributes:
    k: How many of the last blocks train (1 to the backbone's depth).
    """

    k: int = 1

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")


SPEC = MethodSpec("partial", PartialConfig)
