"""Inference cost of each method's adapted model: GFLOPs of one image's forward pass and tunable
parameters, side by side (the ``inference_gflops`` objective, autopetl/objectives.py).

FLOPs depend on shapes, not weights, so the backbone is built at random init unless
``--weights`` is given. Writes ``benchmarks/results/inference_cost.{json,md}``.

    python benchmarks/inference_cost.py                          # ViT-S/14 at 112 px
    python benchmarks/inference_cost.py --backbone vit_base_patch16_224 --img-size 224
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CONFIGS = [
    ("linear", {}),
    ("bias", {}),
    ("lora", {"rank": 4}),
    ("adapter", {}),
    ("vpt", {"prompt_length": 10, "deep": False}),
    ("vpt", {"prompt_length": 10, "deep": True}),
    ("vpt", {"prompt_length": 100, "deep": True}),
    ("dvpt", {}),
    ("sidetune", {}),
    ("full", {}),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vit_small_patch14_dinov2")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--classes", type=int, default=16)
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "inference_cost.json",
    )
    args = p.parse_args(argv)

    import timm

    import autopetl
    from autopetl.objectives import measure

    vit = timm.create_model(args.backbone, img_size=args.img_size, num_classes=args.classes)
    rows = []
    for method, options in CONFIGS:
        model = autopetl.attach(vit, method, **options)
        m = measure(model, args.img_size)
        rows.append({"method": method, "options": options, **m})
    base = next(r["inference_gflops"] for r in rows if r["method"] == "linear")
    for r in rows:
        r["vs_linear"] = r["inference_gflops"] / base
    lines = [
        f"{args.backbone} at {args.img_size} px, {args.classes} classes",
        "",
        "| method | options | tunable params | inference GFLOPs | x linear |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        shown = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "defaults"
        lines.append(
            f"| {r['method']} | {shown} | {r['tunable_params']:,} | {r['inference_gflops']:.2f} "
            f"| {r['vs_linear']:.2f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"command": " ".join(["python", *sys.argv]), "rows": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
