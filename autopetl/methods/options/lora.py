"""``lora``'s options (the method: :mod:`autopetl.methods.lora`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec

QKV = ("q", "k", "v")
TARGETS = (*QKV, "o", "fc1", "fc2")


@dataclass(frozen=True)
class LoRAConfig(MethodConfig):
    """Attributes:
    rank: Rank r of each update.
    alpha: Scaling numerator; the update is multiplied by alpha / r.
    dropout: Dropout on the update's input (the frozen path sees the clean input).
    targets: Which linear maps get an update: any of q, k, v, o, fc1, fc2.
    """

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ConfigError(f"targets must name at least one of {', '.join(TARGETS)}")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad:
            raise ConfigError(f"unknown LoRA target {bad[0]!r}; choose from {', '.join(TARGETS)}")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"targets repeat a name: {list(self.targets)}")


SPEC = MethodSpec("lora", LoRAConfig)
