"""How closely autopetl's procedural dSprites match the real frames (mean best IoU, per shape).

python benchmarks/dsprites_fidelity.py     # all 320 frames of shared/reference; ~2-3 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from autopetl.tasks import dsprites as D

REPO = Path(__file__).resolve().parents[1]
GIF = REPO.parent / "shared" / "reference" / "dsprites_real_frames.gif"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gif", type=Path, default=GIF)
    parser.add_argument("--every", type=int, default=1, help="use every k-th frame")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "dsprites_fidelity.json"
    )
    args = parser.parse_args()
    if not args.gif.is_file():
        print(f"skipped: {args.gif} not found")
        return 0
    frames = [
        np.asarray(f.convert("L")) > 127 for f in ImageSequence.Iterator(Image.open(args.gif))
    ][:: args.every]
    results = [D.best_iou(f) for f in frames]
    ious = np.array([r[0] for r in results])
    shapes = np.array([r[1][0] for r in results])
    report = {
        "frames": len(frames),
        "mean_best_iou": float(ious.mean()),
        "fraction_at_least_0.9": float((ious >= 0.9).mean()),
        "by_shape": {
            D.SHAPES[s]: float(ious[shapes == s].mean()) for s in range(3) if (shapes == s).any()
        },
        "command": " ".join(["python", *sys.argv]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
