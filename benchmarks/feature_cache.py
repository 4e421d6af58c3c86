"""Head-only methods with and without the frozen-feature cache, side by side in one run.

A linear or MLP head on a frozen backbone needs the backbone's features once, not every epoch
(autopetl.training, TrainConfig.cache_features). Same data, same seed, same config otherwise.
Then three head-only trials in a row as a search worker runs them (on its one shared backbone),
with features computed per trial against shared between trials (autopetl.feature_cache).

    python benchmarks/feature_cache.py            # real ViT-S/14 at 112 px, 10 epochs, bf16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from autopetl.backbones import BackboneSpec, build_backbone, input_stats
from autopetl.feature_cache import FeatureCache
from autopetl.methods import build_method
from autopetl.pipeline import attach, load_task_data
from autopetl.tasks import get_task
from autopetl.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "weights" / "vit_small_patch14_dinov2.safetensors"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "feature_cache.json"
    )
    args = parser.parse_args()
    if not args.weights.is_file():
        print(f"skipped: {args.weights} not found")
        return 0
    task = get_task("vtab/dsprites_loc")
    data = load_task_data(task, 112)
    backbone = build_backbone(
        BackboneSpec("vit_small_patch14_dinov2", str(args.weights), 112), task.num_classes
    )
    mean, std = input_stats(backbone)
    rows = []
    for method in ("linear", "mlp"):
        for cache in (False, True):
            model = attach(backbone, build_method(method), seed=0)
            config = TrainConfig(
                epochs=args.epochs,
                batch_size=32,
                lr=2e-3,
                precision=args.precision,
                cache_features=cache,
            )
            t0 = time.perf_counter()
            result = train(model, data.train, data.eval, config, mean=mean, std=std)
            rows.append(
                {
                    "method": method,
                    "cache": cache,
                    "wall_s": time.perf_counter() - t0,
                    "val_acc": result.last_val_acc,
                }
            )
            print(rows[-1], flush=True)
    for method in ("linear", "mlp"):
        off, on = (
            next(r for r in rows if r["method"] == method and r["cache"] == c)
            for c in (False, True)
        )
        print(
            f"{method}: {off['wall_s']:.1f} s -> {on['wall_s']:.1f} s ({off['wall_s'] / on['wall_s']:.1f}x), "
            f"val {off['val_acc']:.1%} vs {on['val_acc']:.1%}"
        )
    # A worker's trials: same backbone object and data, other heads and learning rates.
    trials = [("linear", 1e-3), ("mlp", 2e-3), ("linear", 5e-3)]
    across = []
    for shared in (False, True):
        cache = FeatureCache() if shared else None
        t0 = time.perf_counter()
        accs = []
        for method, lr in trials:
            model = attach(backbone, build_method(method), seed=0, copy_backbone=False)
            config = TrainConfig(epochs=args.epochs, batch_size=32, lr=lr, precision=args.precision)
            result = train(
                model, data.train, data.eval, config, mean=mean, std=std, feature_cache=cache
            )
            accs.append(result.last_val_acc)
        across.append(
            {"shared_between_trials": shared, "wall_s": time.perf_counter() - t0, "val_accs": accs}
        )
        print(across[-1], flush=True)
    per_trial, shared_run = across
    print(
        f"3 head-only trials: {per_trial['wall_s']:.1f} s -> {shared_run['wall_s']:.1f} s "
        f"({per_trial['wall_s'] / shared_run['wall_s']:.1f}x) with features shared between trials"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "precision": args.precision,
                "rows": rows,
                "across_trials": {"trials": trials, "runs": across},
                "command": " ".join(["python", *sys.argv]),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
