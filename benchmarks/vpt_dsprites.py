"""Linear probe vs VPT-shallow vs VPT-deep on vtab/dsprites_loc with a real pretrained ViT.

Trains each on train800 and reports val200 accuracy (chance 6.25%) and wall time, all in one run
on one machine, so the figures compare side by side. Uses the DINOv2 ViT-S/14 in ../shared/weights
(the only pretrained ViT reachable here) unless --weights says otherwise.

    python benchmarks/vpt_dsprites.py                 # 10 epochs at 112 px
    python benchmarks/vpt_dsprites.py --quick         # 2 epochs, 200 training images
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from autopetl.backbones import BackboneSpec, build_backbone, input_stats
from autopetl.methods import build_method
from autopetl.pipeline import attach, load_task_data
from autopetl.tasks import get_task
from autopetl.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "vit_small_patch14_dinov2.safetensors"
CONFIGS = [
    ("linear", "linear", {}),
    ("vpt-shallow p=10", "vpt", {"prompt_length": 10, "deep": False}),
    ("vpt-deep p=10", "vpt", {"prompt_length": 10, "deep": True}),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--backbone", default="vit_small_patch14_dinov2")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/vpt_dsprites.json; --quick: results/quick/, git-ignored",
    )
    args = parser.parse_args(argv)
    # A --quick run checks that it runs: it never writes over the committed full results.
    results = REPO / "benchmarks" / "results"
    args.out = args.out or results / ("quick" if args.quick else "") / "vpt_dsprites.json"
    return args


def main() -> int:
    args = parse_args()
    if not args.weights.is_file():
        print(f"skipped: pretrained weights {args.weights} not found (pass --weights PATH)")
        return 0
    epochs = 2 if args.quick else args.epochs
    task = get_task("vtab/dsprites_loc")
    data = load_task_data(task, args.img_size, train_limit=200 if args.quick else None)
    backbone = build_backbone(
        BackboneSpec(args.backbone, str(args.weights), args.img_size), task.num_classes
    )
    mean, std = input_stats(backbone)
    config = TrainConfig(
        epochs=epochs, lr=args.lr, batch_size=32, precision=args.precision, warmup_epochs=1
    )
    rows = []
    for label, method, values in CONFIGS:
        model = attach(backbone, build_method(method, values), seed=0)
        result = train(model, data.train, data.eval, config, mean=mean, std=std)
        rows.append(
            {
                "config": label,
                "val_acc_best": result.best_val_acc,
                "val_acc_last": result.last_val_acc,
                "tunable_params": result.tunable_params,
                "wall_time_s": result.wall_time_s,
                "images_per_s": result.images_per_s,
            }
        )
        print(
            f"{label:18s} val {result.best_val_acc:6.1%} (last {result.last_val_acc:6.1%})  "
            f"params {result.tunable_params:>8,}  {result.wall_time_s:6.1f} s  {result.images_per_s:6.1f} img/s",
            flush=True,
        )
    report = {
        "task": task.name,
        "backbone": args.backbone,
        "img_size": args.img_size,
        "epochs": epochs,
        "train_images": len(data.train),
        "config": config.__dict__,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": " ".join(["python", *sys.argv]),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\n| config | val200 acc (best) | last | tunable params | wall time (s) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['config']} | {r['val_acc_best']:.1%} | {r['val_acc_last']:.1%} | {r['tunable_params']:,} | {r['wall_time_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
