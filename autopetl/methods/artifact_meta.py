"""An artifact's ``method.json``: its name and reading, without torch.

The serving catalog reads an artifact's backbone from here before anything heavy is imported,
so a refused ``autopetl serve`` answers in under a second (tests/test_cli_startup.py);
:mod:`autopetl.methods.io` writes the file and loads the weights beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autopetl.errors import ConfigError

CONFIG_FILE = "method.json"
FORMAT_VERSION = 1


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed ``method.json`` of an artifact, checked for the keys loading needs."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; is {directory} a saved autopetl artifact?")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); save the artifact again") from exc
    missing = (
        [k for k in ("method", "config", "backbone", "num_classes") if k not in meta]
        if isinstance(meta, dict)
        else ["method"]
    )
    if missing:
        raise ConfigError(f"{path} lacks {missing[0]!r}; save the artifact again")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ConfigError(
            f"{path} has format version {meta['format_version']}, newer than this autopetl "
            f"reads ({FORMAT_VERSION}); upgrade autopetl"
        )
    return meta
