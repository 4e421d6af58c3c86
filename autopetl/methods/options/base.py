"""The base of every method's options, without torch: a frozen dataclass checked on construction.

:class:`MethodConfig` is what ``--set``, a trial's JSON and a search space's values become;
:class:`MethodSpec` is a method's line in the light table (:mod:`autopetl.methods.options`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from autopetl.errors import ConfigError


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's config: a frozen dataclass checked on construction.

    Subclasses add fields with defaults and check ranges in ``__post_init__`` (raise ConfigError).
    """

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build from plain values (a trial's JSON or ``--set``), rejecting unknown keys and types."""
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            valid = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(
                f"unknown option {unknown[0]!r} for this method; valid options: {valid}"
            )
        checked = {k: _coerce(k, v, hints[k]) for k, v in values.items()}
        return cls(**checked)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


MAX_INT_OPTION = 10_000


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check one value against its annotation; ints are accepted where floats are expected."""
    origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(c) for c in get_args(hint))
            raise ConfigError(f"{key} must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(key, v, get_args(hint)[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        # Every integer option is a size (prompts, rank, dim, depth, blocks): one of 1e10 once
        # reached the allocator and failed there with a 10 TB request.
        if not 0 <= value <= MAX_INT_OPTION:
            raise ConfigError(f"{key} must be from 0 to {MAX_INT_OPTION}, got {value}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


@dataclass(frozen=True)
class MethodSpec:
    """A method's line in the light table: its name, its options and the backbone families
    (:data:`autopetl.backbones.FAMILIES`) it is written for. The method's class
    (:class:`autopetl.methods.base.Method`) carries the same three; registering it checks that
    they agree."""

    name: str
    config_cls: type[MethodConfig]
    families: tuple[str, ...] = ("vit",)
