"""PETL methods: one module per method, each registering itself by name, and the method's
options in the module of the same name in :mod:`autopetl.methods.options`.

Importing this package loads no torch, so that the command line can check a method's name and
options (:mod:`autopetl.methods.options`) at once. The names below import the registry on first
use, and importing :mod:`autopetl.methods.registry` imports every method: adding a method means
adding one file here and one in ``options``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autopetl.methods.options import MethodConfig

if TYPE_CHECKING:
    from autopetl.methods.base import Method, PetlModel
    from autopetl.methods.registry import METHODS, build_method, get_method, register_method

# Name -> the module it comes from, imported on first use (torch and timm, every method).
_HEAVY = {
    "METHODS": "registry",
    "build_method": "registry",
    "get_method": "registry",
    "register_method": "registry",
    "Method": "base",
    "PetlModel": "base",
}


def __getattr__(name: str) -> Any:
    if name in _HEAVY:
        importlib.import_module(f"{__name__}.registry")  # every method, registered
        value = getattr(importlib.import_module(f"{__name__}.{_HEAVY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS",
    "Method",
    "MethodConfig",
    "PetlModel",
    "build_method",
    "get_method",
    "register_method",
]
