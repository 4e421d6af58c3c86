"""Tasks: the VTAB-1k registry, data loaders, procedural dSprites and the tensor cache.

The loaders (torch) are imported on first use, so that the registry and the data sources answer
the command line at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autopetl.tasks.registry import (
    ALL_TASKS,
    FGVC_TASKS,
    GROUPS,
    TASKS,
    TaskSpec,
    get_task,
    resolve_tasks,
)
from autopetl.tasks.sources import data_source, default_data_root, is_available

if TYPE_CHECKING:
    from autopetl.tasks.data import SPLITS, SplitData, load_split, normalize

_LOADERS = ("SPLITS", "SplitData", "load_split", "normalize")


def __getattr__(name: str) -> Any:
    if name in _LOADERS:
        from autopetl.tasks import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALL_TASKS",
    "FGVC_TASKS",
    "GROUPS",
    "SPLITS",
    "TASKS",
    "SplitData",
    "TaskSpec",
    "data_source",
    "default_data_root",
    "get_task",
    "is_available",
    "load_split",
    "normalize",
    "resolve_tasks",
]
