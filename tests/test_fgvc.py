"""FGVC tasks in VPT's prepared layout (train/val/test JSON annotations), on generated folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autopetl.errors import DataUnavailableError
from autopetl.tasks import FGVC_TASKS, get_task, is_available, load_split, resolve_tasks
from autopetl.tasks.fgvc import read_fgvc_split


def _make(root: Path, name: str, val: int = 6, test: int = 9) -> Path:
    """A task folder: one train image per class (class ids start at 1, as CUB's do), a few val
    and test images, in the task's own image folder."""
    task = FGVC_TASKS[name]
    images = root / task.folder / task.image_dir if task.image_dir else root / task.folder
    rng = np.random.default_rng(0)
    splits = {"train": task.num_classes, "val": val, "test": test}
    for split, n in splits.items():
        anno = {}
        for i in range(n):
            rel = f"c{i % task.num_classes:03d}/{split}_{i}.png"
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(images / rel)
            anno[rel] = 1 + (i % task.num_classes)
        (root / task.folder / f"{split}.json").write_text(json.dumps(anno))
    return root


@pytest.mark.parametrize("name", sorted(FGVC_TASKS))
def test_each_fgvc_task_reads_vpts_layout(tmp_path, name) -> None:
    root = _make(tmp_path, name)
    task = get_task(name)
    assert task is FGVC_TASKS[name] and task.layout == "fgvc" and is_available(task, root)
    sizes = {}
    for role in ("train800", "val200", "train800val200", "test"):
        split = load_split(task, role, img_size=16, data_root=root, cache_dir=tmp_path / "cache")
        assert split.images.shape[1:] == (3, 16, 16)
        assert int(split.labels.min()) >= 0 and int(split.labels.max()) < task.num_classes
        sizes[role] = len(split.labels)
    assert sizes == {
        "train800": task.num_classes, "val200": 6, "train800val200": task.num_classes + 6, "test": 9,
    }  # fmt: skip
    # Ids 1..C map to labels 0..C-1 in sorted id order, as VPT's JSONDataset does.
    pairs = read_fgvc_split(root, task, "train800")
    assert sorted(label for _, label in pairs) == list(range(task.num_classes))


def test_the_fgvc_group_and_short_names() -> None:
    assert [t.name for t in resolve_tasks("fgvc")] == list(FGVC_TASKS)
    assert (
        get_task("cub").name == "fgvc/cub" and get_task("dsprites_loc").name == "vtab/dsprites_loc"
    )


def test_broken_fgvc_folders_say_what_is_wrong(tmp_path) -> None:
    task = get_task("fgvc/oxford_flowers")
    with pytest.raises(DataUnavailableError, match=r"train\.json does not exist"):
        read_fgvc_split(tmp_path, task, "train800")
    root = _make(tmp_path, "fgvc/oxford_flowers")
    val = root / task.folder / "val.json"
    val.write_text(json.dumps({"x.png": 999}))
    with pytest.raises(DataUnavailableError, match="class id 999"):
        read_fgvc_split(root, task, "val200")
    val.write_text("[1, 2")
    with pytest.raises(DataUnavailableError, match="not a JSON annotation file"):
        read_fgvc_split(root, task, "val200")
    cub = get_task("fgvc/cub")
    (tmp_path / "cub").mkdir()
    (tmp_path / "cub" / "train.json").write_text(json.dumps({"a.png": 1, "b.png": 2}))
    with pytest.raises(DataUnavailableError, match="has 2 classes, fgvc/cub has 200"):
        read_fgvc_split(tmp_path, cub, "train800")


@pytest.mark.slow
def test_search_then_evaluate_on_an_fgvc_task(ray_session, tmp_path, sqlite_url, capsys) -> None:
    from autopetl.cli import main
    from autopetl.store import open_store

    root = _make(tmp_path / "data", "fgvc/oxford_flowers", val=20, test=30)
    common = ["--db", sqlite_url, "--data-root", str(root)]
    args = ["search", "--task", "fgvc/oxford_flowers", "--budget", "2", "--smoke-test"]
    assert main([*args, "--name", "flowers", "--storage", str(tmp_path / "ray"), *common]) == 0
    assert main(["evaluate", "--search", "flowers", "--best", "--seeds", "1", "--in-process",
                 "--artifacts", str(tmp_path / "art"), *common]) == 0  # fmt: skip
    store = open_store(sqlite_url)
    assert store.get_search("flowers").task == "fgvc/oxford_flowers"
    [evaluation] = [
        e for t in store.trials("flowers") for e in store.evaluations("flowers", t.trial_key)
    ]
    assert evaluation.metrics["test_images"] == 30  # the whole test set, tested once
    assert evaluation.metrics["train_images"] == 102 + 20  # train + val, VPT's final training
