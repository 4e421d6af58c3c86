"""The procedural sprites match the real dSprites frames in shared/reference (mean best IoU)."""

from __future__ import annotations

import numpy as np
import pytest

from autopetl.tasks import dsprites as D

from .conftest import SHARED

GIF = SHARED / "reference" / "dsprites_real_frames.gif"


@pytest.mark.skipif(not GIF.is_file(), reason=f"{GIF} is absent (shared/ not beside the repo)")
def test_renders_match_real_frames():
    from PIL import Image, ImageSequence

    frames = [np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(Image.open(GIF))]
    assert len(frames) == 320
    # Every 16th frame (20) keeps the test at seconds on 2 cores; benchmarks/dsprites_fidelity.py
    # does all 320.
    ious = np.array([D.best_iou(f)[0] for f in frames[::16]])
    assert ious.mean() >= 0.9, f"mean best IoU {ious.mean():.3f} < 0.9"


def test_a_render_matches_itself_exactly():
    frame = D.render(np.array([[2, 3, 7, 12, 20]]))[0] > 0
    iou, latents = D.best_iou(frame)
    assert iou == 1.0 and latents.tolist() == [2, 3, 7, 12, 20]
