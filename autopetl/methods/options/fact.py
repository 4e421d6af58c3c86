"""``fact``'s options (the method: :mod:`autopetl.methods.fact`).

Defaults are the official code's (github JieShibo/PETL-ViT, FacT/): ``set_FacT(model, dim=8,
s=1)`` in both fact_tt.py and fact_tk.py (rank 8, scale 1), ``nn.Dropout(0.1)`` hard-coded there,
and tensor-train first (run.sh runs fact_tt.py before fact_tk.py). The per-task configs
(FacT/configs/{tt,tk}/*.yaml) pick rank from {4, 8, 16} for tt and {16, 32} for tk, and scale
from {0.01, 0.1, 1, 10, 100}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec

FORMS = ("tt", "tk")


@dataclass(frozen=True)
class FacTConfig(MethodConfig):
    """Attributes:
    form: How the stacked weight increments are factorised: ``tt`` (tensor-train: shared U, V
        and one r x r core per weight) or ``tk`` (Tucker: shared U, V, an r x r x r core and an
        r x (slots) factor over the weights).
    rank: Width r of every factor (the official ``dim``; 8 by default, the configs use 4-16 for
        tt and 16-32 for tk).
    scale: Multiplier s on every increment (the official ``s``; the configs use 0.01-100).
    dropout: Dropout inside each increment, after the core (the official 0.1).
    """

    form: Literal["tt", "tk"] = "tt"
    rank: int = 8
    scale: float = 1.0
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ConfigError(f"form must be 'tt' or 'tk', got {self.form!r}")
        if self.rank < 1:
            raise ConfigError(f"rank must be >= 1, got {self.rank}")
        if not self.scale > 0:
            raise ConfigError(f"scale must be > 0, got {self.scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout}")


SPEC = MethodSpec("fact", FacTConfig)
