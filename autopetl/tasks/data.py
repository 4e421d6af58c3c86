"""Task data as preprocessed uint8 tensors, cached on disk.

Every split is resized once to the backbone's input size and stored as uint8 [N, 3, H, W] plus
int64 labels in a safetensors file under the cache directory, so a second run neither re-renders
nor re-decodes. Normalisation (the backbone's mean and std) is applied per batch on the training
device by :func:`normalize`: it is a cheap fused op there, and keeping uint8 on disk and in memory is
4x smaller than float32.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from autopetl.errors import DataUnavailableError
from autopetl.tasks import dsprites
from autopetl.tasks.folder import iter_images, read_split_list
from autopetl.tasks.registry import TaskSpec
from autopetl.tasks.scale import check_scalable
from autopetl.tasks.sources import default_data_root

log = logging.getLogger(__name__)

SPLITS = ("train800", "val200", "train800val200", "test")
CACHE_VERSION = 1  # bump when preprocessing changes, so old cache files are not reused


def default_cache_dir() -> Path:
    """``$AUTOPETL_CACHE``, else ``$XDG_CACHE_HOME/autopetl``, else ``~/.cache/autopetl``."""
    if env := os.environ.get("AUTOPETL_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autopetl"


@dataclass
class SplitData:
    """One split in memory: uint8 images [N, 3, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> SplitData:
        return SplitData(self.images[:n], self.labels[:n])


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 [N, C, H, W] to size x size (bilinear, antialiased) and back to uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(
        images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _generate(
    task: TaskSpec,
    split: str,
    img_size: int,
    seed: int,
    test_size: int | None,
    data_root: Path | None,
    train_fraction: float | None = None,
) -> SplitData:
    if task.procedural:
        grey, labels = dsprites.generate(
            task.folder, split, seed=seed, test_size=test_size, train_fraction=train_fraction
        )
        # The VTAB images are the greyscale sprite copied to 3 channels (times 255).
        imgs = torch.from_numpy(grey).unsqueeze(1)
        chunks = [
            resize_uint8(c, img_size).expand(-1, 3, -1, -1).contiguous() for c in imgs.split(1024)
        ]
        return SplitData(torch.cat(chunks), torch.from_numpy(labels))
    if data_root is None:
        expects = (
            f"DIR/{task.folder}/{{train,val,test}}.json and its images, as VPT prepares them"
            if task.layout == "fgvc"
            else f"DIR/{task.folder}/{split}.txt"
        )
        raise DataUnavailableError(
            f"{task.name} needs its data folder: pass --data-root DIR or set AUTOPETL_DATA "
            f"(expects {expects})"
        )
    if task.layout == "fgvc":
        from autopetl.tasks.fgvc import read_fgvc_split

        pairs = read_fgvc_split(data_root, task, split, train_fraction)
    else:
        pairs = read_split_list(data_root, task.folder, split)
    if test_size is not None and split == "test":
        pairs = pairs[:test_size]
    images, labels = [], []
    for arr, label in iter_images(pairs):
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
        images.append(resize_uint8(t, img_size))
        labels.append(label)
    if not images:
        raise DataUnavailableError(f"the {split} split of {task.name} lists no images")
    label_t = torch.tensor(labels, dtype=torch.int64)
    if label_t.min() < 0 or label_t.max() >= task.num_classes:
        raise DataUnavailableError(
            f"{task.name} {split}: labels must lie in [0, {task.num_classes}), "
            f"found {int(label_t.min())}..{int(label_t.max())}"
        )
    return SplitData(torch.cat(images), label_t)


def load_split(
    task: TaskSpec,
    split: str,
    *,
    img_size: int,
    seed: int = 0,
    test_size: int | None = 4096,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    train_fraction: float | None = None,
) -> SplitData:
    """One split of a task as uint8 tensors at ``img_size``, from the disk cache when present.

    Args:
        task: The task.
        split: ``train800``, ``val200``, ``train800val200`` or ``test``.
        img_size: Side of the square input of the backbone.
        seed: Seed of the procedural split permutation (dSprites only).
        test_size: Number of test images (None: all of them).
        data_root: Root of the VTAB-1k folders (non-procedural tasks).
        cache_dir: Where cached tensors live; defaults to :func:`default_cache_dir`.
        train_fraction: The train part of ``train800`` and ``train800val200`` is this fraction
            of the task's whole training set (tasks/scale.py); None: VTAB-1k's 800.
    """
    if split not in SPLITS:
        raise DataUnavailableError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split not in ("train800", "train800val200"):
        train_fraction = None  # the validation and test splits do not scale
    if train_fraction is not None:
        check_scalable(task)
    data_root = data_root or default_data_root()
    source = (
        "procedural" if task.procedural else str(Path(data_root).resolve()) if data_root else "-"
    )
    n = "all" if split != "test" or test_size is None else test_size
    key = f"v{CACHE_VERSION}|{task.name}|{split}|{img_size}|{seed}|{n}|{source}"
    if train_fraction is not None:  # the key of a VTAB-1k split is unchanged: its cache stays
        key += f"|fraction={train_fraction!r}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = (
        (cache_dir or default_cache_dir())
        / "tensors"
        / task.folder
        / f"{split}-{img_size}px-{digest}.safetensors"
    )
    if path.is_file():
        try:
            tensors = load_file(path)
            return SplitData(tensors["images"], tensors["labels"])
        except Exception as exc:  # a torn or foreign file: rebuild it rather than fail
            log.warning("ignoring unreadable cache file %s (%s)", path, exc)
    data = _generate(task, split, img_size, seed, test_size, data_root, train_fraction)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file({"images": data.images, "labels": data.labels}, tmp)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    return data


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 [N, 3, H, W] on any device to the backbone's normalised float input."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255.0
    return (images.float() - m) / s
