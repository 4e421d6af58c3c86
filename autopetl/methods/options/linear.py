"""``linear``'s options (the method: :mod:`autopetl.methods.linear`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class LinearConfig(MethodConfig):
    """No options: the head is the only tunable part."""


SPEC = MethodSpec("linear", LinearConfig, families=("vit", "swin"))
