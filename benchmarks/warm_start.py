"""Warm starts against cold studies, replayed on two recorded tasks, in both directions.

For each seed and direction (source -> target): the default strategy (TPE + MO-ASHA, the
defaults of `autopetl search`) is replayed on the source task's learning-curve table, as the
search a user already has in the database; the configurations on its reported front seed a study
on the target's table (``replay(..., warm_start=...)``, what ``autopetl search --warm-start``
enqueues, its seeds trained to the end). The same study unseeded, same seed, is the cold one. Both spend the same compute: the
target's whole grid (1.0x, as docs/SEARCH.md's table). Measured on the target, per seed: the
compute until the front holds 90% of the target's true front (a fraction of the budget; a seed
that never gets there counts as the whole budget and is reported), the area under the
hypervolume-compute curve, and the final hypervolume. Beside them, for the why: the same seeds
left to early stopping (warm_early), the source table's true front as seeds (warm_true), and the
target's own true front (oracle: no transfer can name better seeds). Writes
benchmarks/results/warm_start.json.

    python benchmarks/warm_start.py               # 20 seeds, both directions (minutes on 2 cores)
    python benchmarks/warm_start.py --quick       # 3 seeds: writes under results/quick/
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from autopetl.search.defaults import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_SCHEDULER,
)
from autopetl.search.replay import (
    ReplayResult,
    Strategy,
    front,
    load_tables,
    reference_point,
    replay,
)
from autopetl.store import hypervolume

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TABLES = {
    "dsprites_loc": RESULTS / "learning_curves_dsprites_loc_28px.json",
    "dsprites_ori": RESULTS / "learning_curves_dsprites_ori_28px.json",
}
DEFAULT = Strategy("tpe", DEFAULT_SCHEDULER, DEFAULT_GRACE_PERIOD, DEFAULT_REDUCTION_FACTOR)
LEVELS = 51
TABLE_NAME = "default_grid"
LABELS = ("cold", "warm", "warm_early", "warm_true", "oracle")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="parallel trials (simulated)")
    parser.add_argument("--budget", type=float, default=1.0, help="x the target's whole grid")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="replay processes")
    parser.add_argument("--quick", action="store_true", help="3 seeds, written apart")
    parser.add_argument("--out", type=Path, default=None, help="default: results/warm_start.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds = 3
    args.out = args.out or (RESULTS / "quick" if args.quick else RESULTS) / "warm_start.json"
    return args


def front_configs(run: ReplayResult) -> list[dict[str, Any]]:
    """The configurations on a replayed search's reported front (completed trials), cheapest
    first: what the store's ``pareto_front`` of that search would hold."""
    done = [t for t in run.trials if t.status == "completed"]
    out: list[dict[str, Any]] = []
    for point in front((t.val_acc, float(t.tunable_params)) for t in done):
        key = next(t.config_key for t in done if (t.val_acc, float(t.tunable_params)) == point)
        out.append(json.loads(key))
    return out


def _one(job: tuple[Any, ...]) -> dict[str, Any]:
    """One seed of one direction: the source search, then the target cold and warm."""
    source, target, seed, workers, source_budget, budget, ref, true_hv, levels = job
    seeds = front_configs(
        replay(source, DEFAULT, seed=seed, workers=workers, max_compute=source_budget)
    )
    true_front = source.front()
    best = [
        c.config for c in source.curves if (c.val_acc[-1], float(c.tunable_params)) in true_front
    ]
    target_front = target.front()
    oracle = [
        c.config for c in target.curves if (c.val_acc[-1], float(c.tunable_params)) in target_front
    ]
    out: dict[str, Any] = {
        "seed": seed,
        "seeded": len(seeds),
        "seeded_true_front": len(best),
        "seeded_oracle": len(oracle),
    }
    # warm: seeded from the source search's own front (what --warm-start reads); warm_true: from
    # the source table's true front, the best any source search could give; oracle: from the
    # target's own true front, the best any seeding of this study could give (a bound on every
    # front transfer: no source can name better configurations than these).
    # warm_early: the source search's front again, its seeds left to early stopping like any
    # trial (what --warm-start did before its seeds were trained to the end).
    runs = (
        ("cold", [], True),
        ("warm", seeds, True),
        ("warm_early", seeds, False),
        ("warm_true", best, True),
        ("oracle", oracle, True),
    )
    for label, warm, to_the_end in runs:
        run = replay(
            target,
            DEFAULT,
            seed=seed,
            workers=workers,
            max_compute=budget,
            warm_start=warm,
            seeds_to_the_end=to_the_end,
        )
        curve = np.array(run.hypervolume_curve(ref, list(levels))) / true_hv
        hit = np.nonzero(curve >= 0.9 - 1e-12)[0]
        out[label] = {
            "curve": curve.round(6).tolist(),
            "reached_90": bool(len(hit)),
            # A seed that never reaches 90% counts as the whole budget (and is reported so).
            "compute_to_90": float(levels[hit[0]] / levels[-1]) if len(hit) else 1.0,
            "final_hv": float(curve[-1]),
            "auc": float(np.trapezoid(curve, levels / levels[-1])),
            "trials": len(run.trials),
        }
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seeded_mean": float(np.mean([r["seeded"] for r in runs])),
        "seeded_true_front": runs[0]["seeded_true_front"],
        "seeded_oracle": runs[0]["seeded_oracle"],
    }
    for label in LABELS:
        rows = [r[label] for r in runs]
        finals = np.array([r["final_hv"] for r in rows])
        out[label] = {
            "compute_to_90_mean": round(float(np.mean([r["compute_to_90"] for r in rows])), 4),
            "seeds_reaching_90": sum(r["reached_90"] for r in rows),
            "auc_mean": round(float(np.mean([r["auc"] for r in rows])), 4),
            "final_hv_mean": round(float(finals.mean()), 4),
            "final_hv_std": round(float(finals.std()), 4),
            "trials_mean": float(np.mean([r["trials"] for r in rows])),
            "hv_mean": np.mean([r["curve"] for r in rows], axis=0).round(5).tolist(),
        }
    cold, warm = out["cold"], out["warm"]
    out["compute_to_90_warm_over_cold"] = round(
        warm["compute_to_90_mean"] / cold["compute_to_90_mean"], 4
    )
    out["compute_to_90_warm_true_over_cold"] = round(
        out["warm_true"]["compute_to_90_mean"] / cold["compute_to_90_mean"], 4
    )
    out["compute_to_90_warm_early_over_cold"] = round(
        out["warm_early"]["compute_to_90_mean"] / cold["compute_to_90_mean"], 4
    )
    out["compute_to_90_oracle_over_cold"] = round(
        out["oracle"]["compute_to_90_mean"] / cold["compute_to_90_mean"], 4
    )
    ratios = [r["warm"]["compute_to_90"] / r["cold"]["compute_to_90"] for r in runs]
    out["per_seed_ratio_mean"] = round(float(np.mean(ratios)), 4)
    out["warm_final_within_cold_spread"] = bool(
        warm["final_hv_mean"] >= cold["final_hv_mean"] - cold["final_hv_std"]
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    loaded = {name: load_tables(path) for name, path in TABLES.items()}
    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    directions: dict[str, Any] = {}
    for source_name, target_name in (
        ("dsprites_loc", "dsprites_ori"),
        ("dsprites_ori", "dsprites_loc"),
    ):
        (source_tables, _), (target_tables, meta) = loaded[source_name], loaded[target_name]
        source, target = source_tables[TABLE_NAME], target_tables[TABLE_NAME]
        # The hypervolume reference of search_quality.py for that file, so fractions agree.
        ref = reference_point(target_tables.values(), int(meta.get("num_classes", 16)))
        true_hv = hypervolume(target.front(), ref)
        budget = target.cost() * args.budget
        levels = np.linspace(0, budget, LEVELS)
        jobs = [
            (
                source,
                target,
                seed,
                args.workers,
                source.cost() * args.budget,
                budget * (1 + 1e-9),
                ref,
                true_hv,
                levels,
            )
            for seed in range(args.seeds)
        ]
        runs = []
        for run in pool.map(_one, jobs) if pool else map(_one, jobs):
            runs.append(run)
            print(
                f"{source_name} -> {target_name} seed {run['seed']:2d}: {run['seeded']} seeds; "
                f"90% at {run['cold']['compute_to_90']:.0%} cold, {run['warm']['compute_to_90']:.0%} warm; "
                f"final {run['cold']['final_hv']:.3f} cold, {run['warm']['final_hv']:.3f} warm",
                flush=True,
            )
        summary = summarise(runs)
        directions[f"{source_name}->{target_name}"] = {**summary, "runs": runs}
    if pool:
        pool.shutdown()
    report = {
        "compute_to_90_warm_over_cold": {
            k: v["compute_to_90_warm_over_cold"] for k, v in directions.items()
        },
        "strategy": DEFAULT.label,
        "seeds": args.seeds,
        "workers": args.workers,
        "budget_x_target_grid": args.budget,
        "compute_fractions": np.linspace(0, 1, LEVELS).round(4).tolist(),
        "directions": directions,
        "command": shlex.join(["python", *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"\n{'direction':28s} {'seeds':>5s} {'90% at':>8s} {'x cold':>7s} {'area':>6s} "
        f"{'final':>12s}"
    )
    for name, d in directions.items():
        for label in LABELS:
            r = d[label]
            ratio = r["compute_to_90_mean"] / d["cold"]["compute_to_90_mean"]
            seeded = {
                "cold": 0,
                "warm": d["seeded_mean"],
                "warm_early": d["seeded_mean"],
                "warm_true": d["seeded_true_front"],
                "oracle": d["seeded_oracle"],
            }
            print(
                f"{name + ' ' + label:28s} {seeded[label]:5.1f} {r['compute_to_90_mean']:8.1%} "
                f"{ratio:7.2f} {r['auc_mean']:6.3f} {r['final_hv_mean']:.3f}±{r['final_hv_std']:.3f}"
            )
    print(f"wrote {args.out} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
