"""Loader for the common VTAB-1k folder layout (the one VPT, NOAH and most PETL repos use).

``<root>/<task>/{train800,val200,train800val200,test}.txt``, each line ``<relative image path>
<label>``, image paths relative to ``<root>/<task>/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from autopetl.errors import DataUnavailableError
from autopetl.tasks.sources import split_file


def read_split_list(root: Path, folder: str, split: str) -> list[tuple[Path, int]]:
    """(image path, label) pairs of one split, with clear errors for a missing or malformed file."""
    listing = split_file(root, folder, split)
    if not listing.is_file():
        raise DataUnavailableError(
            f"no VTAB-1k data for {folder!r}: {listing} does not exist; put the task's folder under "
            f"--data-root (or AUTOPETL_DATA) in the common VTAB-1k layout"
        )
    pairs = []
    for lineno, line in enumerate(listing.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataUnavailableError(
                f"{listing}:{lineno}: expected '<image path> <label>', got {line!r}"
            )
        pairs.append((root / folder / parts[0], int(parts[1])))
    return pairs


def iter_images(pairs: list[tuple[Path, int]]) -> Iterator[tuple[np.ndarray, int]]:
    """Decode each image to RGB uint8 [H, W, 3]; a missing or unreadable file names itself."""
    for path, label in pairs:
        try:
            with Image.open(path) as im:
                yield np.array(im.convert("RGB")), label
        except (OSError, ValueError) as exc:
            raise DataUnavailableError(f"cannot read image {path}: {exc}") from exc
