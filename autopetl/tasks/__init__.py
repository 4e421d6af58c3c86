"""Tasks: the VTAB-1k registry, data loaders, procedural dSprites and the tensor cache."""

from autopetl.tasks.data import SPLITS, SplitData, data_source, is_available, load_split, normalize
from autopetl.tasks.registry import GROUPS, TASKS, TaskSpec, get_task, resolve_tasks

__all__ = [
    "GROUPS",
    "SPLITS",
    "TASKS",
    "SplitData",
    "TaskSpec",
    "data_source",
    "get_task",
    "is_available",
    "load_split",
    "normalize",
    "resolve_tasks",
]
