"""Every PETL method on vtab/dsprites_loc with a real pretrained ViT, under one training budget.

Trains each configuration on train800 and validates on val200 (16 classes, chance 6.25%) with
the same epochs, batch size, warm-up and cosine schedule. The learning rate is fixed per method
family, not tuned per method: 2e-3 (AdamW) for everything that trains new parameters or biases,
1e-4 for the two that train pretrained weight matrices (full, partial), since AdamW at 2e-3 wrecks
pretrained weights. One seed: val200 has a standard error of about 3 points at 50% accuracy.

Uses the DINOv2 ViT-S/14 in ../shared/weights (the only pretrained ViT reachable here) at 112 px
and skips, saying so, when that file is absent. Writes benchmarks/results/methods_dsprites.json
and .md (a table of val accuracy, tunable parameters and training images per second).

    python benchmarks/methods_dsprites.py            # 5 epochs on train800, bf16 autocast
    python benchmarks/methods_dsprites.py --epochs 3 --threads 1   # what docs/METHODS.md ran
    python benchmarks/methods_dsprites.py --quick    # 1 epoch on 200 images: checks it runs
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from autopetl.backbones import BackboneSpec, build_backbone, input_stats
from autopetl.methods import METHODS, build_method
from autopetl.pipeline import attach, load_task_data
from autopetl.tasks import get_task
from autopetl.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = REPO.parent / "shared" / "weights" / "vit_small_patch14_dinov2.safetensors"
RESULTS = REPO / "benchmarks" / "results"
QUICK_HELP = " (default: results/methods_dsprites.json; --quick: results/quick/, git-ignored)"
PETL_LR, WEIGHTS_LR = 2e-3, 1e-4

# (label, method, options, learning rate): Table 1 of DVPT in the order it lists them.
CONFIGS: list[tuple[str, str, dict[str, Any], float]] = [
    ("full", "full", {}, WEIGHTS_LR),
    ("linear", "linear", {}, PETL_LR),
    ("partial k=1", "partial", {"k": 1}, WEIGHTS_LR),
    ("mlp k=2", "mlp", {"layers": 2}, PETL_LR),
    ("sidetune", "sidetune", {}, PETL_LR),
    ("bias", "bias", {}, PETL_LR),
    ("adapter dim=8 parallel", "adapter", {"dim": 8}, PETL_LR),
    ("lora r=8 q,v", "lora", {"rank": 8}, PETL_LR),
    ("vpt-shallow p=10", "vpt", {"prompt_length": 10, "deep": False}, PETL_LR),
    ("vpt-deep p=10", "vpt", {"prompt_length": 10, "deep": True}, PETL_LR),
    ("dvpt shared p=10", "dvpt", {"prompt_length": 10, "dynamic": "shared"}, PETL_LR),
    ("dvpt specific p=10", "dvpt", {"prompt_length": 10, "dynamic": "specific"}, PETL_LR),
    ("adaptformer dim=64", "adaptformer", {}, PETL_LR),
    ("ssf", "ssf", {}, PETL_LR),
    ("fact tt r=8", "fact", {}, PETL_LR),
    ("dora r=8", "dora", {}, PETL_LR),
]
# One extra frozen forward per step, so about 1.5x slower to train: run it with --with-cls.
CLS_CONFIG = ("dvpt shared p=10 cls", "dvpt", {"prompt_length": 10, "meta_input": "cls"}, PETL_LR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--backbone", default="vit_small_patch14_dinov2")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    # auto: bf16 only where the hardware computes it (forced bf16 on a CPU without bf16 units
    # falls back to a generic GEMM: about 10x slower than fp32).
    parser.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"])
    # On a CPU shared with other jobs, 1 thread can be ~5x faster than 2 spinning OpenMP threads.
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", default="", help="comma-separated labels or method names")
    parser.add_argument("--seed", type=int, default=0, help="seeds init, shuffling and dropout")
    parser.add_argument("--with-cls", action="store_true", help="also DVPT with the cls input")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 200 images")
    parser.add_argument("--out", type=Path, default=None, help="the JSON to write" + QUICK_HELP)
    args = parser.parse_args(argv)
    # A --quick run checks that it runs: it never writes over the committed full results.
    args.out = args.out or RESULTS / ("quick" if args.quick else "") / "methods_dsprites.json"
    return args


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"vtab/dsprites_loc, train {report['train_images']} -> val200, {report['backbone']} at "
        f"{report['img_size']} px, {report['epochs']} epochs, batch {report['batch_size']}, "
        f"{report['precision']}, seed {report['seed']}; {report['machine']}; {report['when']}.",
        "",
        f"Command: `{report['command']}`",
        "",
        "| method | lr | val acc (best) | val acc (last) | tunable params (w/o head) "
        "| train images/s | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['config']} | {r['lr']:g} | {r['val_acc_best']:.1%} | {r['val_acc_last']:.1%} "
            f"| {r['tunable_params']:,} ({r['tunable_params_without_head']:,}) "
            f"| {r['images_per_s']:.1f} | {r['wall_time_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    if not args.weights.is_file():
        print(f"skipped: pretrained weights {args.weights} not found (pass --weights PATH)")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    candidates = [*CONFIGS, CLS_CONFIG] if args.with_cls else CONFIGS
    configs = [c for c in candidates if not wanted or c[0] in wanted or c[1] in wanted]
    missing = sorted(set(METHODS) - {c[1] for c in CONFIGS})
    if missing:
        print(f"note: registered methods not in this benchmark: {', '.join(missing)}")
    epochs = 1 if args.quick else args.epochs
    task = get_task("vtab/dsprites_loc")
    data = load_task_data(task, args.img_size, train_limit=200 if args.quick else None)
    spec = BackboneSpec(args.backbone, str(args.weights), args.img_size)
    backbone = build_backbone(spec, task.num_classes)
    mean, std = input_stats(backbone)

    rows = []
    for label, method, values, lr in configs:
        config = TrainConfig(
            epochs=epochs,
            lr=lr,
            batch_size=args.batch_size,
            precision=args.precision,
            warmup_epochs=1 if epochs > 1 else 0,
            seed=args.seed,
        )
        model = attach(backbone, build_method(method, values), seed=args.seed)
        result = train(model, data.train, data.eval, config, mean=mean, std=std)
        row = {
            "config": label,
            "method": method,
            "options": values,
            "lr": lr,
            "val_acc_best": result.best_val_acc,
            "val_acc_last": result.last_val_acc,
            "tunable_params": result.tunable_params,
            "tunable_params_without_head": result.tunable_params_without_head,
            "images_per_s": result.images_per_s,
            "wall_time_s": result.wall_time_s,
        }
        rows.append(row)
        print(
            f"{label:24s} val {result.best_val_acc:6.1%} (last {result.last_val_acc:6.1%})  "
            f"params {result.tunable_params:>9,}  {result.images_per_s:6.1f} img/s  "
            f"{result.wall_time_s:6.0f} s",
            flush=True,
        )
    report = {
        "task": task.name,
        "backbone": args.backbone,
        "img_size": args.img_size,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "seed": args.seed,
        "train_images": len(data.train),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "command": shlex.join(["python", *sys.argv]),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    args.out.with_suffix(".md").write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
