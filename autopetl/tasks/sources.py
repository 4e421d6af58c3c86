"""Where each task's data comes from, and whether it is here: paths only, no image is read.

``autopetl tasks`` answers from this module alone, without torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from autopetl.errors import DataUnavailableError
from autopetl.tasks.registry import TaskSpec


def default_data_root() -> Path | None:
    """``$AUTOPETL_DATA``: the root of the VTAB-1k folders, if set."""
    env = os.environ.get("AUTOPETL_DATA")
    return Path(env) if env else None


def split_file(root: Path, folder: str, split: str) -> Path:
    return root / folder / f"{split}.txt"


def fgvc_file(root: Path, folder: str, split: str) -> Path:
    """VPT's annotation file of an FGVC split: ``{train,val,test}.json``."""
    return root / folder / f"{split}.json"


def is_available(task: TaskSpec, data_root: Path | None) -> bool:
    """Whether a task's data can be had: generated, or its folder is under the data root."""
    if task.procedural:
        return True
    if data_root is None:
        return False
    if task.layout == "fgvc":
        return fgvc_file(data_root, task.folder, "train").is_file()
    return split_file(data_root, task.folder, "train800").is_file()


def check_data_here(task: TaskSpec, data_root: Path | None) -> None:
    """Refuse, before torch loads, a task whose data folder is not given or not there (the
    loader says the same later, after seconds of imports and a database written)."""
    root = data_root or default_data_root()
    if is_available(task, root):
        return
    expects = (
        f"DIR/{task.folder}/{{train,val,test}}.json and its images, as VPT prepares them"
        if task.layout == "fgvc"
        else f"DIR/{task.folder}/train800.txt and the other split lists"
    )
    if root is None:
        raise DataUnavailableError(
            f"{task.name} needs its data folder: pass --data-root DIR or set AUTOPETL_DATA "
            f"(expects {expects})"
        )
    missing = (
        fgvc_file(root, task.folder, "train")
        if task.layout == "fgvc"
        else split_file(root, task.folder, "train800")
    )
    raise DataUnavailableError(
        f"{task.name}: {missing} does not exist; pass --data-root DIR where DIR holds "
        f"{task.folder}/ (expects {expects})"
    )


def data_source(task: TaskSpec, data_root: Path | None) -> str:
    if task.procedural:
        return "generated (procedural dSprites)"
    if task.layout == "fgvc":
        where = str(data_root / task.folder) if data_root else f"--data-root/{task.folder}"
        return f"{where}/{{train,val,test}}.json (VPT's FGVC layout)"
    return str(data_root / task.folder) if data_root else "VTAB-1k folder under --data-root"
