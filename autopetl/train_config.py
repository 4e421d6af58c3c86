"""How to train one configuration: the options and their checks, without torch.

Apart from :mod:`autopetl.training` so that a search space's training values, and ``autopetl
train``'s options, are checked before torch is imported (a mistake is refused in well under a
second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from autopetl.errors import ConfigError
from autopetl.precision import PRECISIONS


@dataclass(frozen=True)
class TrainConfig:
    """How to train one configuration.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Images per optimiser step.
        lr: Peak learning rate (after warm-up).
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, as VPT's recipe).
        warmup_epochs: Linear warm-up length before the cosine decay to zero.
        seed: Seeds shuffling and dropout (the caller seeds parameter init, see seed_everything).
        precision: ``auto`` is bf16 autocast where the hardware computes bf16 natively (CUDA, and
            CPUs with AVX512-BF16 or AMX), fp32 elsewhere; ``fp32`` or ``bf16`` force it. See
            :mod:`autopetl.precision` for the measurements behind it.
        device: ``auto`` picks CUDA when present.
        eval_batch_size: Images per forward pass when evaluating.
        cache_features: When only the head trains (linear, mlp) and the frozen backbone is
            deterministic, compute its features once instead of every epoch (same result, up to
            floating-point summation order).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    warmup_epochs: float = 1.0
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: str = "auto"
    eval_batch_size: int = 256
    cache_features: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"learning rate must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (
                self.optimizer in ("adamw", "sgd"),
                f"optimizer must be adamw or sgd, got {self.optimizer!r}",
            ),
            (
                self.precision in PRECISIONS,
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}",
            ),
            (self.warmup_epochs >= 0, f"warm-up epochs must be >= 0, got {self.warmup_epochs}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
