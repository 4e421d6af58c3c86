"""Methods registered by lowercase name; a duplicate name is a programming error."""

from __future__ import annotations

from typing import Any

from autopetl.errors import UnknownMethodError
from autopetl.methods.base import Method

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``cls.name``."""
    name = cls.name
    if name != name.lower():
        raise ValueError(f"method names are lowercase: {name!r}")
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
