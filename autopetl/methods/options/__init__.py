"""Every method's options and backbone families, without torch: the light table of methods.

The command line checks ``--method``, ``--set`` and a search space's methods here, in well under
a second, before torch or timm load. Each method has one module here, named as the method, with
its config dataclass (a :class:`MethodConfig`) and ``SPEC``, its :class:`MethodSpec`; its torch
code is the module of the same name in :mod:`autopetl.methods`, whose class takes the same name,
config class and families (registering it checks that they agree). Adding a method means adding
one file here and one there.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from autopetl.errors import UnknownMethodError
from autopetl.methods.options.base import MethodConfig, MethodSpec

# Method name -> its spec, for every public module of this package.
SPECS: dict[str, MethodSpec] = {}

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        _spec: MethodSpec = importlib.import_module(f"{__name__}.{_info.name}").SPEC
        if _spec.name != _info.name:
            raise ValueError(f"{__name__}.{_info.name} describes method {_spec.name!r}")
        SPECS[_spec.name] = _spec


def method_names() -> list[str]:
    """Every method's name, sorted."""
    return sorted(SPECS)


def method_spec(name: str) -> MethodSpec:
    """The method called ``name``; an unknown name is the registry's UnknownMethodError."""
    if name not in SPECS:
        raise UnknownMethodError(
            f"unknown method {name!r}; choose one of {', '.join(method_names())}"
        )
    return SPECS[name]


def method_options(name: str, values: dict[str, Any] | None = None) -> MethodConfig:
    """The options of method ``name`` built (and checked) from ``values``, as
    :func:`autopetl.methods.build_method` builds them: an unknown method is an
    UnknownMethodError, an unknown option or a bad value a ConfigError."""
    return method_spec(name).config_cls.from_dict(values or {})


__all__ = ["SPECS", "MethodConfig", "MethodSpec", "method_names", "method_options", "method_spec"]
