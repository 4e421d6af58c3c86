"""``bias``'s options (the method: :mod:`autopetl.methods.bias`)."""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.methods.options.base import MethodConfig, MethodSpec


@dataclass(frozen=True)
class BiasConfig(MethodConfig):
    """No options: the set of biases is fixed by the architecture."""


SPEC = MethodSpec("bias", BiasConfig, families=("vit", "swin"))
