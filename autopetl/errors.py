"""Errors a user can cause. The CLI prints them as one line (with the fix) and exits non-zero."""

from __future__ import annotations


class AutopetlError(Exception):
    """Base class for every mistake a user can make: bad input, missing files, unknown names."""


class UnknownTaskError(AutopetlError):
    """A task name that is not in the registry."""


class DataUnavailableError(AutopetlError):
    """A task whose data is not on disk (and cannot be generated)."""


class UnknownMethodError(AutopetlError):
    """A PETL method name that is not in the registry."""


class ConfigError(AutopetlError):
    """A method or training configuration with an unknown key or a bad value."""


class WeightsError(AutopetlError):
    """Backbone weights that cannot be found, downloaded or loaded."""


class SearchConflictError(AutopetlError):
    """A search name already used for a different task or space, or run by two drivers at once."""


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite: the configuration failed (a search records it and goes on)."""


def error_line(error: str | None) -> str:
    """The line of a trial's error that says what went wrong: the exception, not the traceback."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
