"""PETL methods: one module per method, each registering itself by name.

Every public module in this package is imported here, so adding a method means adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from autopetl.methods.base import Method, MethodConfig, PetlModel
from autopetl.methods.registry import METHODS, build_method, get_method, register_method

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name not in {"base", "registry", "io"}:
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "PetlModel",
    "build_method",
    "get_method",
    "register_method",
]
