"""``full``'s options (the method: :mod:`autopetl.methods.full`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """No options: everything is tunable."""


SPEC = MethodSpec("full", FullConfig, families=("vit", "swin"))
