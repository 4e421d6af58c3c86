"""Loader for the FGVC tasks in the layout VPT's code reads (KMnP/vpt, ``json_dataset.py``).

``<root>/<task>/{train,val,test}.json``, each a JSON object ``{"<image path>": <class id>}``
with image paths relative to the task's image folder (``images/`` for CUB and NABirds,
``Images/`` for Stanford Dogs, the task folder itself for Oxford Flowers and Stanford Cars).
``train`` and ``val`` are VPT's split of the official training set (its released JSON files);
``test`` is the official test set. Class ids are mapped to 0..C-1 in sorted order of the ids in
``train.json``, as VPT does.

The protocol's roles, as in the paper: a search trains on ``train`` and selects on ``val``
(autopetl's ``train800`` and ``val200`` roles), the chosen configurations train again on
``train`` + ``val`` (the ``train800val200`` role) and are tested once on ``test``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from autopetl.errors import DataUnavailableError
from autopetl.tasks.registry import TaskSpec
from autopetl.tasks.scale import ORDER_SEED, subset_size
from autopetl.tasks.sources import fgvc_file

# autopetl's split roles -> VPT's FGVC annotation files.
ROLES = {
    "train800": ("train",),
    "val200": ("val",),
    "train800val200": ("train", "val"),
    "test": ("test",),
}


def _annotations(root: Path, task: TaskSpec, split: str) -> dict[str, int]:
    path = fgvc_file(root, task.folder, split)
    if not path.is_file():
        raise DataUnavailableError(
            f"no FGVC data for {task.name}: {path} does not exist; put VPT's prepared folder "
            f"(train.json, val.json, test.json and the images) at --data-root/{task.folder}"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataUnavailableError(f"{path}: not a JSON annotation file ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
        for k, v in data.items()
    ):
        raise DataUnavailableError(f'{path}: expected {{"<image path>": <class id>, ...}}')
    return data


def read_fgvc_split(
    root: Path, task: TaskSpec, split: str, train_fraction: float | None = None
) -> list[tuple[Path, int]]:
    """(image path, label 0..C-1) pairs of a split role (``train800``, ``val200``, ...).

    ``train_fraction``: the train part of the role is that fraction of ``train.json``, the first
    images of one fixed seeded order of it (tasks/scale.py), so smaller fractions are inside
    larger ones.
    """
    if split not in ROLES:
        raise DataUnavailableError(f"unknown split {split!r} for {task.name}")
    ids = sorted(set(_annotations(root, task, "train").values()))
    if len(ids) != task.num_classes:
        raise DataUnavailableError(
            f"{fgvc_file(root, task.folder, 'train')} has {len(ids)} classes, {task.name} has "
            f"{task.num_classes}: is it the right dataset?"
        )
    label_of = {cid: i for i, cid in enumerate(ids)}
    images = root / task.folder / task.image_dir if task.image_dir else root / task.folder
    pairs = []
    for part in ROLES[split]:
        items = list(_annotations(root, task, part).items())
        if part == "train" and train_fraction is not None:
            items = _fraction_of(sorted(items), train_fraction)
        for name, cid in items:
            if cid not in label_of:
                raise DataUnavailableError(
                    f"{fgvc_file(root, task.folder, part)}: class id {cid} of {name} is not in "
                    "train.json"
                )
            pairs.append((images / name, label_of[cid]))
    return pairs


def _fraction_of(items: list[tuple[str, int]], fraction: float) -> list[tuple[str, int]]:
    # Sorted by name first, so the order does not depend on how the JSON file was written.
    order = np.random.default_rng(ORDER_SEED).permutation(len(items))
    return [items[i] for i in order[: subset_size(len(items), fraction)]]
