"""Serving many tasks on one backbone, model level: one pass for a mixed batch against a pass per
task (what Ray Serve's per-model multiplexing runs), side by side in one run.

For 1, 2, 4 and 8 tasks under a uniform mix, a batch of ``--batch`` images is drawn with each
image's task at random; the per-task way runs each task's model on its own images (one backbone
pass per task in the batch), the one-pass way runs :class:`autopetl.serving.mixed.MixedTaskModel`.
Images/s is the median of ``--repeats`` timed batches after a warm-up, both ways interleaved.
Two serving sets: the issue's (VPT-deep, DVPT, LoRA, adapter, linear: prompt methods still take a
pass of their own) and the set that shares the pass today (LoRA, adapter, linear, MLP head,
BitFit). Writes benchmarks/results/serve_tasks.json.

    python benchmarks/serve_tasks.py                 # ViT-S/16 at 224 px, random init
    python benchmarks/serve_tasks.py --quick         # a tiny ViT: writes under results/quick/
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

import autopetl.methods  # noqa: F401  (registers every method)
from autopetl.methods import build_method
from autopetl.serving.mixed import MixedTaskModel

RESULTS = Path(__file__).resolve().parent / "results"
SETS = {
    "issue": [("vpt", {"deep": True, "prompt_length": 10}), ("dvpt", {}), ("lora", {}),
              ("adapter", {}), ("linear", {})],
    "shared_pass": [("lora", {}), ("adapter", {}), ("linear", {}), ("mlp", {}), ("bias", {})],
}  # fmt: skip
TASK_COUNTS = (1, 2, 4, 8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--tasks", type=lambda t: [int(n) for n in t.split(",")], default=list(TASK_COUNTS)
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a tiny ViT, few repeats")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.backbone, args.img_size, args.repeats = "vit_tiny_patch16_224", 64, 3
    args.out = args.out or (RESULTS / "quick" if args.quick else RESULTS) / "serve_tasks.json"
    return args


def task_models(base: torch.nn.Module, methods: list[tuple[str, dict]], n: int) -> list:
    """``n`` task models on ``base`` (methods taken in turn), sharing its frozen tensors, with
    their tunable weights moved off their init and 10 classes each."""
    shared = {id(t): t for t in [*base.parameters(), *base.buffers()]}
    models = []
    for i in range(n):
        name, values = methods[i % len(methods)]
        net = copy.deepcopy(base, dict(shared))
        net.reset_classifier(10)
        model = build_method(name, values).attach(net).eval()
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for _, p in model.tunable_named_parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g).to(p.device))
        model.requires_grad_(False)
        models.append(model)
    return models


def _timed(fn, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_tasks(args: argparse.Namespace, base: torch.nn.Module, methods: list, n: int) -> dict:
    """One row: ``n`` tasks, a batch drawn uniformly over them, both ways side by side."""
    models = [m.to(args.device) for m in task_models(base, methods, n)]
    mixed = MixedTaskModel(base, models).eval()
    g = torch.Generator().manual_seed(n)
    tasks = torch.randint(0, n, (args.batch,), generator=g).to(args.device)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, generator=g).to(args.device)
    present = tasks.unique().tolist()

    def per_task() -> None:
        for i in present:
            models[i](x[tasks == i])

    def one_pass() -> None:
        mixed(x, tasks)

    with torch.inference_mode():
        for fn in (per_task, one_pass):
            fn()  # warm-up
        per, one = [], []
        for _ in range(3):  # interleaved, so drift hits both ways alike
            per.append(_timed(per_task, args.repeats, args.device))
            one.append(_timed(one_pass, args.repeats, args.device))
    return {
        "tasks_in_batch": len(present),
        "passes_per_task_way": len(present),
        "passes_one_pass": mixed.passes_per_batch,
        "images_per_s_per_task": round(args.batch / min(per), 1),
        "images_per_s_one_pass": round(args.batch / min(one), 1),
    }


def measure(args: argparse.Namespace, base: torch.nn.Module, methods: list) -> dict:
    rows = {}
    for n in args.tasks:
        rows[str(n)] = measure_tasks(args, base, methods, n)
        print(f"  {n} tasks: {rows[str(n)]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    import timm

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    torch.manual_seed(0)
    base = timm.create_model(args.backbone, pretrained=False, img_size=args.img_size)
    base = base.to(args.device).eval().requires_grad_(False)
    report: dict = {"sets": {}}
    for name, methods in SETS.items():
        print(f"{name}: {', '.join(m for m, _ in methods)}", flush=True)
        rows = measure(args, base, methods)
        one = {n: r["images_per_s_one_pass"] for n, r in rows.items()}
        per = {n: r["images_per_s_per_task"] for n, r in rows.items()}
        most, least = str(max(args.tasks)), str(min(args.tasks))
        report["sets"][name] = {
            "methods": [m for m, _ in methods],
            "rows": rows,
            "one_pass_8_over_1": round(one[most] / one[least], 3),
            "per_task_8_over_1": round(per[most] / per[least], 3),
            "one_pass_over_per_task_8": round(one[most] / per[most], 3),
        }
    report = {
        # The most tasks over the fewest (8 over 1 in a full run), model level.
        "one_pass_8_over_1": report["sets"]["issue"]["one_pass_8_over_1"],
        "one_pass_8_over_1_shared_pass_set": report["sets"]["shared_pass"]["one_pass_8_over_1"],
        **report,
        "backbone": args.backbone,
        "img_size": args.img_size,
        "batch": args.batch,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "threads": args.threads,
        "command": shlex.join(["python", *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for name, s in report["sets"].items():
        print(
            f"{name}: 8 tasks over 1, one pass {s['one_pass_8_over_1']:.2f}x, per task "
            f"{s['per_task_8_over_1']:.2f}x; one pass over per task at 8 tasks "
            f"{s['one_pass_over_per_task_8']:.2f}x"
        )
    print(f"wrote {args.out} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
