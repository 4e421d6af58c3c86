"""``ssf``'s options (the method: :mod:`autopetl.methods.ssf`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from autopetl.errors import ConfigError
from autopetl.methods.options.base import MethodConfig, MethodSpec

INITS = ("official", "identity")


@dataclass(frozen=True)
class SSFConfig(MethodConfig):
    """Attributes:
    init: How the scales and shifts start. ``official`` (the official code's
        ``init_ssf_scale_shift``): scale ~ N(1, 0.02), shift ~ N(0, 0.02), so a fresh model is
        close to, not exactly, the linear probe. ``identity``: scale 1, shift 0, so a fresh model
        computes exactly the linear-probe model.

    The official code has no other option: where the scales and shifts go (after every
    LayerNorm and linear map of the backbone, see the method's docstring) is fixed.
    """

    init: Literal["official", "identity"] = "official"

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ConfigError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")


SPEC = MethodSpec("ssf", SSFConfig, families=("vit", "swin"))
