"""Serving memory: eight tasks on one shared frozen backbone against eight full copies.

Writes eight artifacts (VPT-deep p=10 and p=5, DVPT shared and specific, LoRA r=8, adapter,
BitFit, linear; 16 classes, weights untrained: memory does not depend on their values), loads
them onto one ``autopetl.serving.models.SharedBackbone`` as a serving replica does, and reports
``SharedBackbone.memory``: the shared frozen tensors once, each task's own tensors, and what the
same models would hold with a backbone copy each. Tensor bytes are counted by storage, so a
tensor shared by several models counts once. Writes JSON and a Markdown table.

    python benchmarks/serve_memory.py                    # ViT-S/14 architecture at 112 px
    python benchmarks/serve_memory.py --backbone vit_base_patch16_224 --img-size 224
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# (task key, method, config values): the tasks a replica serves in this benchmark.
TASKS: list[tuple[str, str, dict[str, Any]]] = [
    ("vpt-deep-p10", "vpt", {"prompt_length": 10}),
    ("vpt-deep-p5", "vpt", {"prompt_length": 5}),
    ("dvpt-shared", "dvpt", {}),
    ("dvpt-specific", "dvpt", {"dynamic": "specific"}),
    ("lora-r8", "lora", {"rank": 8}),
    ("adapter", "adapter", {}),
    ("bitfit", "bias", {}),
    ("linear", "linear", {}),
]
MIB = 2**20


def measure(backbone: str, img_size: int, classes: int = 16) -> dict[str, Any]:
    from autopetl.backbones import BackboneSpec
    from autopetl.methods import build_method
    from autopetl.methods.io import (
        WEIGHTS_FILE,
        backbone_init_record,
        file_sha256,
        rebuildable_backbone,
        save_tunable,
    )
    from autopetl.pipeline import attach
    from autopetl.serving.models import SharedBackbone

    # Random init: the byte counts depend on the architecture only, and a rebuildable backbone
    # lets the benchmark run where no weights file is.
    spec = BackboneSpec(backbone, "none", img_size)
    base = rebuildable_backbone(spec, classes)
    init = backbone_init_record(spec, base)
    with tempfile.TemporaryDirectory(prefix="autopetl-serve-memory-") as tmp:
        paths = {}
        for key, method_name, values in TASKS:
            method = build_method(method_name, values)
            model = attach(base, method, seed=0)
            paths[key] = save_tunable(
                model, method, spec.to_dict(), classes, Path(tmp) / key, backbone_init=init
            )
        shared = SharedBackbone(spec.to_dict(), init)
        models = [
            shared.load(key, path, file_sha256(path / WEIGHTS_FILE)) for key, path in paths.items()
        ]
        memory = shared.memory(models)
    return {
        "backbone": spec.to_dict(),
        "classes": classes,
        "tasks": [{"key": k, "method": m, "config": v} for k, m, v in TASKS],
        "memory": memory,
        "shared_mib": memory["shared_frozen_bytes"] / MIB,
        "task_private_mib": {k: b / MIB for k, b in memory["task_private_bytes"].items()},
        "total_mib": memory["total_bytes"] / MIB,
        "without_sharing_mib": memory["without_sharing_bytes"] / MIB,
        "ratio": memory["without_sharing_bytes"] / memory["total_bytes"],
    }


def table(result: dict[str, Any], command: str) -> str:
    private = result["task_private_mib"]
    lines = [
        "# Serving memory: one shared frozen backbone vs a copy per task",
        "",
        f"{result['backbone']['name']} at {result['backbone']['img_size']} px, "
        f"{len(private)} tasks, {result['classes']} classes; {result['when']}",
        "",
        f"Command: `{command}`",
        "",
        "| | MiB |",
        "| --- | --- |",
        f"| shared frozen backbone (once per replica) | {result['shared_mib']:.1f} |",
        *(f"| task {k}: its own tensors | {v:.2f} |" for k, v in private.items()),
        f"| total with sharing | **{result['total_mib']:.1f}** |",
        f"| the same models, each with its own backbone copy | {result['without_sharing_mib']:.1f} |",
        f"| ratio | **{result['ratio']:.1f}x** less |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vit_small_patch14_dinov2")
    p.add_argument("--img-size", type=int, default=112)
    p.add_argument("--out", type=Path, default=RESULTS / "serve_memory.json")
    args = p.parse_args(argv)
    result = measure(args.backbone, args.img_size)
    result["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["python"] = platform.python_version()
    command = "python benchmarks/serve_memory.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = table(result, command.strip())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
