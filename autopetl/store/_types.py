"""Column types that keep NaN and infinities intact on SQLite and PostgreSQL.

Why: a diverged trial reports ``val_acc = nan`` and a loss of ``inf``; they must read back as they
were written. PostgreSQL's ``double precision`` stores all three natively, but SQLite silently turns
a bound NaN into NULL, and JSON (RFC 8259) has no token for any of them (PostgreSQL rejects the
``NaN`` that Python's ``json`` writes). So:

- :class:`SafeFloat` binds NaN as the text ``'NaN'`` on SQLite only (a REAL column keeps text that
  is not a number as text) and turns it back into a float on read. Infinities are native REALs.
- :class:`SafeJSON` writes non-finite floats anywhere inside a JSON value as the strings
  ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the tokens JavaScript and Python print) and turns
  exactly these strings back into floats on read. A string value that is literally one of the
  three therefore reads back as a float: configs and metrics never hold such strings.
- :class:`UTCDateTime` stores UTC and always returns aware datetimes (SQLite drops the zone).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Double
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

_TO_TOKEN = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_FROM_TOKEN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def to_json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its string token (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _TO_TOKEN[repr(value)]
    if isinstance(value, dict):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    return value


def from_json_safe(value: Any) -> Any:
    """The inverse of :func:`to_json_safe`: string tokens back to non-finite floats."""
    if isinstance(value, str):
        return _FROM_TOKEN.get(value, value)
    if isinstance(value, dict):
        return {k: from_json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_safe(v) for v in value]
    return value


class _RawDouble(Double):  # type: ignore[type-arg]
    """DOUBLE without SQLAlchemy's float() conversions, which would turn ``'NaN'`` back into NaN."""

    def bind_processor(self, dialect: Dialect) -> None:
        return None

    def result_processor(self, dialect: Dialect, coltype: object) -> None:
        return None


class SafeFloat(TypeDecorator[float]):
    """A double precision float that round-trips NaN, +inf and -inf on SQLite and PostgreSQL."""

    impl = Double
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_RawDouble())
        return dialect.type_descriptor(Double())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = float(value)
        if math.isnan(value) and dialect.name == "sqlite":
            return "NaN"  # SQLite would store a bound NaN as NULL
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> float | None:
        return None if value is None else float(value)  # float("NaN") is nan


class SafeJSON(TypeDecorator[Any]):
    """JSON (JSONB on PostgreSQL) whose non-finite floats survive as string tokens."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return to_json_safe(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return from_json_safe(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        # SQLite stores text; without the zone its ordering stays lexicographic and correct.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
