"""The 19 VTAB-1k tasks and the 5 FGVC tasks of the VPT paper: names, class counts, groups.

VTAB class counts and folder names follow the common VTAB-1k layout (shared/reference/PAPERS.md).
The FGVC tasks read the layout VPT's code uses (``tasks/fgvc.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from autopetl.errors import UnknownTaskError

GROUPS = ("natural", "specialized", "structured")
FGVC = "fgvc"


@dataclass(frozen=True)
class TaskSpec:
    """One image-classification task.

    Attributes:
        name: Public name, ``vtab/<folder>``.
        folder: Folder name in the common VTAB-1k layout under the data root.
        num_classes: Number of labels.
        group: VTAB group: natural, specialized or structured.
        procedural: True when autopetl generates the data itself (no download, always available).
    """

    name: str
    folder: str
    num_classes: int
    group: str
    procedural: bool = False
    # fgvc only: where the images sit inside the task's folder (VPT's get_imagedir).
    image_dir: str = ""

    @property
    def layout(self) -> str:
        """``procedural``, ``vtab`` (split lists) or ``fgvc`` (VPT's JSON annotations)."""
        return "procedural" if self.procedural else "fgvc" if self.group == FGVC else "vtab"


_VTAB = [
    ("cifar", 100, "natural"),
    ("caltech101", 102, "natural"),
    ("dtd", 47, "natural"),
    ("oxford_flowers102", 102, "natural"),
    ("oxford_iiit_pet", 37, "natural"),
    ("svhn", 10, "natural"),
    ("sun397", 397, "natural"),
    ("patch_camelyon", 2, "specialized"),
    ("eurosat", 10, "specialized"),
    ("resisc45", 45, "specialized"),
    ("diabetic_retinopathy", 5, "specialized"),
    ("clevr_count", 8, "structured"),
    ("clevr_dist", 6, "structured"),
    ("dmlab", 6, "structured"),
    ("kitti", 4, "structured"),
    ("dsprites_loc", 16, "structured"),
    ("dsprites_ori", 16, "structured"),
    ("smallnorb_azi", 18, "structured"),
    ("smallnorb_ele", 9, "structured"),
]

TASKS: dict[str, TaskSpec] = {
    f"vtab/{folder}": TaskSpec(
        name=f"vtab/{folder}",
        folder=folder,
        num_classes=n,
        group=group,
        procedural=folder.startswith("dsprites_"),
    )
    for folder, n, group in _VTAB
}


# The five FGVC tasks of VPT (Jia et al., 2022, Table 1): folder under the data root, classes,
# and the images' folder inside it, as VPT's JSONDataset subclasses have it.
_FGVC = [
    ("cub", 200, "images"),
    ("nabirds", 555, "images"),
    ("oxford_flowers", 102, ""),
    ("stanford_dogs", 120, "Images"),
    ("stanford_cars", 196, ""),
]
FGVC_TASKS: dict[str, TaskSpec] = {
    f"fgvc/{folder}": TaskSpec(
        name=f"fgvc/{folder}", folder=folder, num_classes=n, group=FGVC, image_dir=images
    )
    for folder, n, images in _FGVC
}
# Every task autopetl knows; TASKS stays the VTAB-1k benchmark the report lays out.
ALL_TASKS: dict[str, TaskSpec] = {**TASKS, **FGVC_TASKS}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name; ``dsprites_loc`` is accepted for ``vtab/dsprites_loc`` and
    ``cub`` for ``fgvc/cub``."""
    keys = [name] if "/" in name else [f"vtab/{name}", f"fgvc/{name}"]
    for key in keys:
        if key in ALL_TASKS:
            return ALL_TASKS[key]
    raise UnknownTaskError(
        f"unknown task {name!r}; run `autopetl tasks` to list the {len(ALL_TASKS)} known tasks"
    )


def resolve_tasks(spec: str) -> list[TaskSpec]:
    """Expand a comma-separated list of task names and groups (``vtab/structured``) to tasks."""
    out: list[TaskSpec] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        group = part.removeprefix("vtab/")
        if group in GROUPS:
            out.extend(t for t in TASKS.values() if t.group == group)
        elif part == FGVC:
            out.extend(FGVC_TASKS.values())
        else:
            out.append(get_task(part))
    if not out:
        raise UnknownTaskError(
            "no task given; pass --task vtab/<name> or a group like vtab/structured"
        )
    return list(dict.fromkeys(out))
