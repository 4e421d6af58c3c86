"""The procedural sprites match the real dSprites frames in shared/reference (mean best IoU)."""

from __future__ import annotations

import numpy as np
import pytest

from autopetl.tasks import dsprites as D

from .conftest import SHARED

GIF = SHARED / "reference" / "dsprites_real_frames.gif"


def best_iou(frame: np.ndarray) -> float:
    """Best IoU of one binary frame against our renders of every shape, scale and orientation at
    the grid positions next to the frame's centroid."""
    ys, xs = np.nonzero(frame)
    near = np.arange(-1, 2)
    ix = np.unique(np.clip(np.round((xs.mean() + 0.5 - 16) / 32 * 31).astype(int) + near, 0, 31))
    iy = np.unique(np.clip(np.round((ys.mean() + 0.5 - 16) / 32 * 31).astype(int) + near, 0, 31))
    grid = np.meshgrid(range(3), range(6), range(40), ix, iy, indexing="ij")
    renders = D.render(np.stack(grid).reshape(5, -1).T) > 0
    inter = (renders & frame).sum((1, 2))
    union = (renders | frame).sum((1, 2))
    return float((inter / union).max())


@pytest.mark.skipif(not GIF.is_file(), reason=f"{GIF} is absent (shared/ not beside the repo)")
def test_renders_match_real_frames():
    from PIL import Image, ImageSequence

    frames = [np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(Image.open(GIF))]
    assert len(frames) == 320
    # Every 8th frame keeps the test at a few seconds; benchmarks/dsprites_fidelity.py does all 320.
    ious = np.array([best_iou(f) for f in frames[::8]])
    assert ious.mean() >= 0.9, f"mean best IoU {ious.mean():.3f} < 0.9"
