"""Methods registered by lowercase name; a duplicate name is a programming error.

Importing this module imports every method (see the end of it), so ``METHODS`` always holds them
all; their names, configs and families are also in :mod:`autopetl.methods.options`, without torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from autopetl.errors import ConfigError, UnknownMethodError
from autopetl.methods.base import Method
from autopetl.methods.options import SPECS

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``; its name, config class and
    families must be those of its spec in :mod:`autopetl.methods.options` (the command line
    checks options there, before torch loads)."""
    name = cls.name
    if name != name.lower():
        raise ValueError(f"method names are lowercase: {name!r}")
    spec = SPECS.get(name)
    if spec is None:
        raise ValueError(
            f"method {name!r} has no options module autopetl/methods/options/{name}.py"
        )
    if cls.config_cls is not spec.config_cls or tuple(cls.families) != spec.families:
        raise ValueError(
            f"method {name!r}: {cls.__qualname__} says config {cls.config_cls.__qualname__}, "
            f"families {cls.families}; autopetl/methods/options/{name}.py says "
            f"{spec.config_cls.__qualname__}, {spec.families}"
        )
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"method {name!r} is already registered by {METHODS[name].__qualname__}")
    METHODS[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise UnknownMethodError(
            f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


def build_method(name: str, values: dict[str, Any] | None = None) -> Method:
    """The method called ``name`` with its config built (and checked) from ``values``."""
    cls = get_method(name)
    return cls(cls.config_cls.from_dict(values or {}))


def methods_for(family: str) -> list[str]:
    """The registered methods that apply to a backbone family (``vit``, ``swin``), by name."""
    return sorted(name for name, cls in METHODS.items() if family in cls.families)


def not_applicable(method: str, family: str) -> str | None:
    """None when ``method`` applies to the backbone ``family``; else the one line that says it
    does not, and which methods do."""
    if family in get_method(method).families:
        return None
    return (
        f"method {method} does not apply to a {family} backbone (it is written for a ViT's "
        f"blocks, token sequence or head); on {family} use one of: "
        f"{', '.join(methods_for(family)) or '(none)'}"
    )


def check_applies(method: Method, backbone: Any) -> None:
    """Raise a one-line ConfigError when ``method`` cannot apply to ``backbone``: the method is
    not written for its family, or this configuration of it (``Method.refuses``) is not."""
    from autopetl.backbones import family_of

    family = family_of(backbone) or type(backbone).__name__
    reason = not_applicable(method.name, family) or method.refuses(family)
    if reason:
        raise ConfigError(reason)


def _import_every_method() -> None:
    """Import every public module of :mod:`autopetl.methods`: each registers its method, so adding
    a method means adding one file (and its options' one). Called once, below, when this module
    is first imported; a method module that another one imports first is in ``sys.modules``
    half-done then, and registers itself when it finishes (so method modules must not import
    each other's names; shared code lives in ``_``-modules such as ``_prompting``)."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("_") and info.name not in {"base", "registry", "io", "options"}:
            importlib.import_module(f"autopetl.methods.{info.name}")


_import_every_method()
