"""Which of VPT's design choices hold on a task: a ``vpt_design`` search's trials, by choice.

For each design dimension of ``search_spaces/vpt_design.yaml`` (location, which blocks get deep
prompts, readout, prompt length), the completed trials with each choice: how many, their best and
median validation accuracy, and their median inference GFLOPs; then the search's 3-way front.
The paper's defaults (prepend, every block, [CLS]) are marked.

    autopetl search --task vtab/dsprites_loc --space vpt_design --budget 30 --epochs 6 \\
        --scheduler none --backbone vit_small_patch14_dinov2 --weights W --img-size 28 \\
        --objectives val_acc,tunable_params,inference_gflops --name vpt-design --db sqlite:///d.db
    python benchmarks/vpt_design.py --db sqlite:///d.db --search vpt-design
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

PAPER = {"location": "prepend", "blocks": "all", "readout": "cls"}


def blocks_of(config: dict) -> str:
    k = int(config.get("vpt.deep_layers", 0))
    return "all" if k == 0 else f"{config.get('vpt.deep_from', 'first')} {k}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--search", required=True)
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "vpt_design.json"
    )
    args = p.parse_args(argv)
    from autopetl.store import open_store

    with open_store(args.db, create=False) as store:
        trials = [t for t in store.trials(args.search) if t.status == "completed"]
        front = store.pareto_front(args.search)
        search = store.get_search(args.search)
    dims = {
        "location": lambda c: str(c.get("vpt.location", "prepend")),
        "blocks": blocks_of,
        "readout": lambda c: str(c.get("vpt.readout", "cls")),
        "prompt_length": lambda c: str(c.get("vpt.prompt_length")),
    }
    table: dict[str, dict[str, dict]] = {}
    lines = [f"{args.search}: {len(trials)} completed trials on {search.task}", ""]
    lines += ["| dimension | choice | trials | best val | median val | median GFLOPs |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for dim, of in dims.items():
        groups: dict[str, list] = {}
        for t in trials:
            groups.setdefault(of(t.config), []).append(t)
        table[dim] = {}
        for choice, ts in sorted(groups.items(), key=lambda kv: -max(t.val_acc for t in kv[1])):
            accs = [t.val_acc for t in ts]
            flops = [t.measures.get("inference_gflops") for t in ts]
            flops = [f for f in flops if f is not None]
            row = {
                "trials": len(ts),
                "best_val": max(accs),
                "median_val": statistics.median(accs),
                "median_gflops": statistics.median(flops) if flops else None,
            }
            table[dim][choice] = row
            mark = " (paper)" if PAPER.get(dim) == choice else ""
            gf = f"{row['median_gflops']:.3f}" if row["median_gflops"] is not None else "-"
            lines.append(
                f"| {dim} | {choice}{mark} | {len(ts)} | {100 * row['best_val']:.1f} % | "
                f"{100 * row['median_val']:.1f} % | {gf} |"
            )
    lines += ["", "front (val accuracy max, tunable parameters min, inference GFLOPs min):", ""]
    lines += ["| trial | location | blocks | readout | prompts | val | params | GFLOPs |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for t in front:
        c = t.config
        lines.append(
            f"| {t.trial_key} | {dims['location'](c)} | {blocks_of(c)} | {dims['readout'](c)} | "
            f"{c.get('vpt.prompt_length')} | {100 * t.val_acc:.1f} % | {t.tunable_params:,} | "
            f"{t.measures.get('inference_gflops') or 0:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python", *sys.argv]),
        "search": args.search,
        "backbone": search.backbone,
        "by_choice": table,
        "front": [
            {
                "trial": t.trial_key,
                "config": t.config,
                "val_acc": t.val_acc,
                "tunable_params": t.tunable_params,
                **t.measures,
            }
            for t in front
        ],
    }
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
