"""Task registry, procedural dSprites labels and splits, the VTAB-1k folder loader, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from autopetl.errors import DataUnavailableError, UnknownTaskError
from autopetl.tasks import TASKS, get_task, is_available, load_split, resolve_tasks
from autopetl.tasks import dsprites as D


def test_registry_has_the_19_vtab_tasks_in_three_groups():
    assert len(TASKS) == 19
    groups = [t.group for t in TASKS.values()]
    assert (groups.count("natural"), groups.count("specialized"), groups.count("structured")) == (
        7,
        4,
        8,
    )
    assert get_task("vtab/dsprites_loc").num_classes == 16
    assert get_task("sun397").num_classes == 397
    assert {t.name for t in TASKS.values() if t.procedural} == {
        "vtab/dsprites_loc",
        "vtab/dsprites_ori",
    }


def test_unknown_task_names_the_fix():
    with pytest.raises(UnknownTaskError, match="autopetl tasks"):
        get_task("vtab/imagenet")


def test_groups_expand():
    assert len(resolve_tasks("vtab/structured")) == 8
    assert [t.name for t in resolve_tasks("vtab/dtd,vtab/dtd,dsprites_ori")] == [
        "vtab/dtd",
        "vtab/dsprites_ori",
    ]


def test_latent_index_order_matches_the_npz():
    # index = latents . [737280, 245760, 40960, 1024, 32, 1] without the colour term.
    lat = np.array([[2, 5, 39, 31, 31], [1, 3, 7, 4, 9]])
    flat = lat @ np.array([245760, 40960, 1024, 32, 1])
    assert (D.latents_of(flat) == lat).all()
    assert D.N_IMAGES == 737_280


def test_labels_follow_vtab():
    lat = np.array([[0, 0, 0, 0, 0], [0, 0, 39, 31, 0], [0, 0, 5, 3, 0], [0, 0, 2, 2, 0]])
    assert D.loc_label(lat).tolist() == [0, 15, 1, 1]  # posX // 2
    assert D.ori_label(lat).tolist() == [0, 15, 2, 0]  # floor(orientation / 2.5)


def test_splits_are_disjoint_sized_and_deterministic():
    train, val = D.split_indices("train800"), D.split_indices("val200")
    both, test = D.split_indices("train800val200"), D.split_indices("test", test_size=1000)
    assert (len(train), len(val), len(both), len(test)) == (800, 200, 1000, 1000)
    assert (both == np.concatenate([train, val])).all()
    assert not set(train) & set(val) and not set(both) & set(test)
    assert (D.split_indices("train800") == train).all()  # same seed, same split
    assert not (D.split_indices("train800", seed=1) == train).all()
    assert len(D.split_indices("test", test_size=None)) == 73_728


def test_rendered_sprites_sit_where_their_latents_say():
    lat = np.array(
        [[0, 5, 0, 0, 31], [1, 0, 0, 31, 0]]
    )  # big square bottom-left, small ellipse top-right
    img = D.render(lat)
    assert set(np.unique(img)) == {0, 255}
    ys, xs = np.nonzero(img[0])
    assert xs.mean() == pytest.approx(16, abs=1) and ys.mean() == pytest.approx(48, abs=1)
    assert len(xs) == pytest.approx(19.2**2, rel=0.1)
    ys, xs = np.nonzero(img[1])
    assert xs.mean() == pytest.approx(48, abs=1) and ys.mean() == pytest.approx(16, abs=1)


def test_dsprites_split_tensors_and_cache(tmp_path):
    task = get_task("vtab/dsprites_loc")
    data = load_split(task, "val200", img_size=48, cache_dir=tmp_path)
    assert data.images.shape == (200, 3, 48, 48) and data.images.dtype == torch.uint8
    assert data.labels.min() >= 0 and data.labels.max() < 16
    assert torch.equal(data.images[:, 0], data.images[:, 2])  # greyscale copied to 3 channels
    cached = list(tmp_path.rglob("*.safetensors"))
    assert len(cached) == 1
    again = load_split(task, "val200", img_size=48, cache_dir=tmp_path)
    assert torch.equal(again.images, data.images) and torch.equal(again.labels, data.labels)
    # A corrupt cache file is rebuilt, not trusted.
    cached[0].write_bytes(b"garbage")
    rebuilt = load_split(task, "val200", img_size=48, cache_dir=tmp_path)
    assert torch.equal(rebuilt.images, data.images)


def _vtab_folder(root, folder="eurosat", n=6, num_classes=10):
    rng = np.random.default_rng(0)
    for split in ("train800", "val200", "train800val200", "test"):
        (root / folder / "images" / split).mkdir(parents=True)
        lines = []
        for i in range(n):
            rel = f"images/{split}/{i:06d}.jpg"
            Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)).save(
                root / folder / rel
            )
            lines.append(f"{rel} {i % num_classes}")
        (root / folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_folder_loader_reads_a_vtab_style_folder(tmp_path):
    root = _vtab_folder(tmp_path / "vtab")
    task = get_task("vtab/eurosat")
    assert is_available(task, root) and not is_available(get_task("vtab/dtd"), root)
    data = load_split(task, "train800", img_size=24, data_root=root, cache_dir=tmp_path / "c")
    assert data.images.shape == (6, 3, 24, 24)
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_folder_loader_errors_are_clear(tmp_path):
    task = get_task("vtab/eurosat")
    with pytest.raises(DataUnavailableError, match="--data-root"):
        load_split(task, "train800", img_size=24, cache_dir=tmp_path)
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_split(task, "train800", img_size=24, data_root=tmp_path, cache_dir=tmp_path)
    root = _vtab_folder(tmp_path / "vtab")
    (root / "eurosat" / "val200.txt").write_text("images/val200/000000.jpg 99\n")
    with pytest.raises(DataUnavailableError, match="labels must lie"):
        load_split(task, "val200", img_size=24, data_root=root, cache_dir=tmp_path)
    (root / "eurosat" / "images" / "test" / "000000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataUnavailableError, match="cannot read image"):
        load_split(task, "test", img_size=24, data_root=root, cache_dir=tmp_path)
