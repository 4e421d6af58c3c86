"""Where search-space files are, without loading what checks their contents.

Kept apart from :mod:`autopetl.search.space` (which imports the methods, and with them torch) so
that ``autopetl search --space nosuchspace`` is refused at once, before any heavy import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from autopetl.errors import AutopetlError


class SpaceError(AutopetlError):
    """A search-space file that cannot be used; the message names the file and the key."""


def _builtin_spaces_dir() -> Path:
    """The built-in spaces: the repository's search_spaces/, installed as autopetl.search_spaces
    (pyproject.toml maps it), so a wheel finds them too; a source tree on PYTHONPATH has no such
    package, and its search_spaces/ sits beside autopetl/."""
    spec = importlib.util.find_spec("autopetl.search_spaces")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "search_spaces"


SPACES_DIR = _builtin_spaces_dir()


def resolve_space_path(space: str | Path) -> Path:
    """A path to a YAML file, or the name of a file in search_spaces/ (``default``)."""
    path = Path(space)
    if path.is_file():
        return path
    named = SPACES_DIR / f"{space}.yaml"
    if named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))) or "none found"
    raise SpaceError(f"search space {str(space)!r} not found: give a YAML file or one of: {known}")
