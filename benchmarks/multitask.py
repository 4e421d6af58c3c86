"""Multi-task search: every study in one shared run, against today's one after another.

Replays ``--studies`` studies (each one of the recorded learning-curve tables, mixed in turn when
several are given, each with its own sampler seed) with budget ``--budget`` finished trials each,
on W simulated workers (:func:`autopetl.search.replay_many.replay_many`, with the sampler and
scheduler classes ``autopetl search`` runs), in two modes:

- sequential: each study alone on all W workers, one after another (before the multi-study run);
- shared: all studies in one run, a free worker taking a trial of the study furthest behind.

Measured per W, as mean and spread over ``--seeds`` seeds: the busy share (busy worker-seconds /
(W x makespan)), the makespan, and each study's final hypervolume (completed trials' front, as a
fraction of its table's true front). At ``--liar-workers`` both modes also run with TPE's
constant liar off, to choose its default. Writes benchmarks/results/multitask.json (partial
results as it goes) and multitask.png (busy workers over time, seed 0).

    python benchmarks/multitask.py                  # 19 studies x 64 trials, W 4..32, 5 seeds,
                                                    # the two recorded tasks mixed
    python benchmarks/multitask.py --smoke-test     # seconds
    python benchmarks/multitask.py --tables a.json,b.json:default_grid   # mix two tables
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from autopetl.search.defaults import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_SCHEDULER,
)
from autopetl.search.replay import CurveTable, Strategy, load_tables, reference_point
from autopetl.search.replay_many import ManyResult, replay_many
from autopetl.store import hypervolume

REPO = Path(__file__).resolve().parents[1]
# The two recorded tasks, mixed over the studies in turn (the issue: "once dsprites_ori's table
# is recorded, mix both"); --tables gives others, or one.
TABLES = [
    REPO / "benchmarks" / "results" / f"learning_curves_{task}_28px.json"
    for task in ("dsprites_loc", "dsprites_ori")
]
OUT = REPO / "benchmarks" / "results" / "multitask.json"
# `autopetl search`'s default strategy (its --sampler default is tpe).
DEFAULT = Strategy("tpe", DEFAULT_SCHEDULER, DEFAULT_GRACE_PERIOD, DEFAULT_REDUCTION_FACTOR)
MODES = ("sequential", "shared")
# The issue's targets, at W = 16 and 32.
TARGET_BUSY = 0.95
TARGET_SPEEDUP = {16: 1.5, 32: 2.5}
COMPARED = ("hv", "busy_share", "makespan_h", "busy_worker_h", "distinct_configs")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="4,8,16,32", help="simulated workers, comma list")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--studies", type=int, default=19)
    parser.add_argument("--budget", type=int, default=64, help="finished trials per study")
    parser.add_argument(
        "--tables",
        default=",".join(str(t.relative_to(REPO)) for t in TABLES),
        help="table files, comma list, each FILE.json[:TABLE] (default: the file's first table)",
    )
    parser.add_argument(
        "--liar-workers", default="16,32", help="W at which constant_liar off is also run"
    )
    parser.add_argument("--smoke-test", action="store_true", help="3 studies x 12 trials, 2 seeds")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results/multitask.json; --smoke-test: results/quick/, git-ignored",
    )
    args = parser.parse_args(argv)
    # A smoke test checks that it runs: it never writes over the committed full results.
    args.out = args.out or (OUT.parent / "quick" / OUT.name if args.smoke_test else OUT)
    if args.smoke_test:
        args.workers, args.liar_workers, args.seeds, args.studies, args.budget = (
            "2,4",
            "4",
            2,
            3,
            12,
        )
    args.workers = [int(w) for w in args.workers.split(",") if w]
    args.liar_workers = [int(w) for w in args.liar_workers.split(",") if w]
    return args


def read_tables(spec: str) -> tuple[list[CurveTable], int]:
    """The tables of ``FILE.json[:TABLE]`` specs, and the tasks' classes (chance accuracy)."""
    tables, classes = [], set()
    for item in spec.split(","):
        # Table names may hold ':' (sub-tables: "default_grid:linear+lora+adapter").
        path, _, name = item.partition(".json:")
        path = path if path.endswith(".json") else path + ".json"
        file = Path(path) if Path(path).is_absolute() else REPO / path
        found, meta = load_tables(file)
        name = name or next(n for n in found if n != "vpt_paper")
        if name not in found:
            raise SystemExit(f"error: {file} holds tables {', '.join(found)}, not {name!r}")
        tables.append(found[name])
        classes.add(int(meta.get("num_classes", 16)))
    if len(classes) > 1:
        raise SystemExit(f"error: the tables' tasks have different classes {sorted(classes)}")
    return tables, classes.pop()


def run_summary(result: ManyResult, true_hv: dict[str, float], wall: float) -> dict[str, Any]:
    return {
        "mode": "shared" if result.shared else "sequential",
        "workers": result.workers,
        "constant_liar": result.constant_liar,
        "busy_share": round(result.busy_share, 5),
        "makespan_h": round(result.makespan / 3600, 5),
        "busy_worker_h": round(result.busy_seconds / 3600, 5),
        "trials": len(result.trials),
        "completed": sum(t.status == "completed" for t in result.trials),
        "distinct_configs": round(
            statistics.mean(
                len({t.config_key for t in result.trials if t.study == s}) for s in result.studies
            ),
            2,
        ),
        # Each study's final hypervolume over its table's true front's.
        "hv": {s: round(hv / true_hv[s], 5) for s, hv in result.hypervolumes().items()},
        "wall_s": round(wall, 2),
    }


def _mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.mean(values), 5),
        "std": round(statistics.stdev(values), 5) if len(values) > 1 else 0.0,
    }


def summarise(runs: list[dict[str, Any]], studies: list[str]) -> dict[str, Any]:
    """Means and seed spreads per (W, mode, constant_liar), and the paired comparisons."""
    groups: dict[tuple[int, str, bool], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["workers"], r["mode"], r["constant_liar"]), []).append(r)
    table: dict[str, Any] = {}
    for (w, mode, liar), rs in sorted(groups.items()):
        key = f"W{w} {mode} liar={'on' if liar else 'off'}"
        table[key] = {
            "workers": w,
            "mode": mode,
            "constant_liar": liar,
            "seeds": len(rs),
            "busy_share": _mean_std([r["busy_share"] for r in rs]),
            "makespan_h": _mean_std([r["makespan_h"] for r in rs]),
            "busy_worker_h": _mean_std([r["busy_worker_h"] for r in rs]),
            # Per seed, the mean over studies; then mean and spread over seeds.
            "hv": _mean_std([statistics.mean(r["hv"].values()) for r in rs]),
            "distinct_configs": round(statistics.mean(r["distinct_configs"] for r in rs), 2),
            "hv_by_study": {
                s: _mean_std([r["hv"][s] for r in rs])
                for s in studies
                if all(s in r["hv"] for r in rs)
            },
        }
    out: dict[str, Any] = {
        "groups": table,
        "per_study_hv": {},
        "hv_shared_minus_sequential": {},
        "constant_liar": {},
    }
    busy_shared, busy_seq, ratio = {}, {}, {}
    for w in sorted({k[0] for k in groups}):
        seq, sha = groups.get((w, "sequential", True)), groups.get((w, "shared", True))
        if not seq or not sha:
            continue
        busy_seq[str(w)] = table[f"W{w} sequential liar=on"]["busy_share"]["mean"]
        busy_shared[str(w)] = table[f"W{w} shared liar=on"]["busy_share"]["mean"]
        by_seed = {r["seed"]: r for r in seq}
        ratios = [
            by_seed[r["seed"]]["makespan_h"] / r["makespan_h"] for r in sha if r["seed"] in by_seed
        ]
        ratio[str(w)] = round(statistics.mean(ratios), 4)
        # Paired by seed: the shared run's mean hypervolume over studies less the sequential's.
        diffs = [
            statistics.mean(r["hv"].values()) - statistics.mean(by_seed[r["seed"]]["hv"].values())
            for r in sha
            if r["seed"] in by_seed
        ]
        out["hv_shared_minus_sequential"][str(w)] = {
            "mean": round(statistics.mean(diffs), 5),
            "se": round(statistics.stdev(diffs) / len(diffs) ** 0.5, 5) if len(diffs) > 1 else None,
        }
        out["per_study_hv"][str(w)] = _per_study(
            table[f"W{w} sequential liar=on"]["hv_by_study"],
            table[f"W{w} shared liar=on"]["hv_by_study"],
        )
        for mode in MODES:
            off = table.get(f"W{w} {mode} liar=off")
            if off:
                on = table[f"W{w} {mode} liar=on"]
                out["constant_liar"][f"W{w} {mode}"] = {
                    "on": {k: on[k] for k in COMPARED},
                    "off": {k: off[k] for k in COMPARED},
                }
    out["busy_share_shared"], out["busy_share_sequential"] = busy_shared, busy_seq
    out["makespan_sequential_over_shared"] = ratio
    return out


def _per_study(seq: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """Each study's shared-run hypervolume against the same study alone (sequential): within the
    seed spread when the shared mean is no lower than the alone mean less one seed std."""
    rows = {
        s: {
            "shared": shared[s]["mean"],
            "alone": seq[s]["mean"],
            "alone_std": seq[s]["std"],
            "within_spread": shared[s]["mean"] >= seq[s]["mean"] - seq[s]["std"] - 1e-9,
        }
        for s in seq
        if s in shared
    }
    return {
        "studies_within_spread": sum(r["within_spread"] for r in rows.values()),
        "studies": len(rows),
        "by_study": rows,
    }


def plot(series: dict[tuple[int, str], list[tuple[float, int]]], path: Path, note: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = sorted({w for w, _ in series})[-2:]  # W = 16 and 32 in the full run
    fig, axes = plt.subplots(1, len(ws), figsize=(7 * len(ws), 4.2), squeeze=False)
    for ax, w in zip(axes[0], ws, strict=True):
        # Shared drawn last and thicker: it sits at W most of the time, where sequential peaks.
        for mode, style, lw in (("sequential", "C1-", 0.8), ("shared", "C0-", 2.0)):
            steps = series.get((w, mode))
            if not steps:
                continue
            t = [s[0] / 3600 for s in steps]
            ax.step(t, [s[1] for s in steps], style, where="post", lw=lw, label=mode)
        ax.axhline(w, color="k", ls=":", lw=1)
        ax.set_title(f"W = {w} workers")
        ax.set_xlabel("simulated hours")
        ax.set_ylabel("busy workers")
        ax.grid(alpha=0.3)
        ax.set_ylim(0, w * 1.12)
        ax.legend(loc="upper center", ncol=2)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    tables, num_classes = read_tables(args.tables)
    study_tables = [tables[i % len(tables)] for i in range(args.studies)]
    true_hv = {}
    for i, t in enumerate(study_tables):
        true_hv[f"{i:02d}:{t.name}"] = hypervolume(t.front(), reference_point([t], num_classes))
    studies = list(true_hv)
    plan = [
        (w, seed, mode, liar)
        for w in args.workers
        for seed in range(args.seeds)
        for liar in (True, False)
        if liar or w in args.liar_workers
        for mode in MODES
    ]
    report: dict[str, Any] = {
        "command": shlex.join(["python", *sys.argv]) if argv is None else shlex.join(argv),
        "machine": f"{platform.machine()} {platform.system()}, one process; times are simulated "
        "from the tables' recorded per-epoch seconds, wall_s is this machine's replay time",
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "strategy": DEFAULT.label,
        "tables": [t.name for t in tables],
        "studies": args.studies,
        "budget": args.budget,
        "seeds": args.seeds,
        "study_seeds": "seed * 1000 + study index",
        "workers": args.workers,
        "complete": False,
        "runs": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    series: dict[tuple[int, str], list[tuple[float, int]]] = {}
    print(
        f"{args.studies} studies ({', '.join(t.name for t in tables)}) x {args.budget} trials, "
        f"{DEFAULT.label}; W {args.workers}, {args.seeds} seeds: {len(plan)} replays",
        flush=True,
    )
    print(f"{'W':>3} {'seed':>4} {'mode':10} {'liar':4} {'busy':>6} {'makespan h':>10} "
          f"{'hv':>6} {'wall s':>6}", flush=True)  # fmt: skip
    for w, seed, mode, liar in plan:
        t0 = time.perf_counter()
        result = replay_many(
            study_tables,
            DEFAULT,
            seeds=[seed * 1000 + i for i in range(args.studies)],
            workers=w,
            budget=args.budget,
            shared=mode == "shared",
            constant_liar=liar,
            num_classes=num_classes,
        )
        row = {"seed": seed, **run_summary(result, true_hv, time.perf_counter() - t0)}
        report["runs"].append(row)
        if seed == 0 and liar:
            series[(w, mode)] = result.busy
        print(
            f"{w:3d} {seed:4d} {mode:10} {'on' if liar else 'off':4} {row['busy_share']:6.3f} "
            f"{row['makespan_h']:10.2f} {statistics.mean(row['hv'].values()):6.3f} "
            f"{row['wall_s']:6.1f}",
            flush=True,
        )
        args.out.write_text(json.dumps(report, indent=1) + "\n")  # partial: nothing is lost
    summary = summarise(report["runs"], studies)
    met = targets(summary)
    report = {
        "busy_share_shared": summary.pop("busy_share_shared"),
        "busy_share_sequential": summary.pop("busy_share_sequential"),
        "makespan_sequential_over_shared": summary.pop("makespan_sequential_over_shared"),
        "targets": met,
        **{k: v for k, v in report.items() if k != "runs"},
        **summary,
        "complete": True,
        "seconds": round(time.perf_counter() - started, 1),
        "runs": report["runs"],
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(
        series,
        args.out.with_suffix(".png"),
        f"{args.studies} studies x {args.budget} trials ({', '.join(report['tables'])}), "
        f"{DEFAULT.label}, seed 0: sequential (one study after another) vs shared (one run)",
    )
    print_summary(report)
    print(
        f"wrote {args.out.name} and {args.out.with_suffix('.png').name} in {report['seconds']:.0f} s"
    )
    return 0


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets at W = 16 and 32, measured and met or not."""
    out: dict[str, Any] = {}
    groups = summary["groups"]
    for w in (16, 32):
        shared = groups.get(f"W{w} shared liar=on")
        if shared is None:
            continue
        speedup = summary["makespan_sequential_over_shared"].get(str(w))
        hv = summary["per_study_hv"].get(str(w), {})
        out[str(w)] = {
            "busy_share": shared["busy_share"]["mean"],
            "busy_share_met": shared["busy_share"]["mean"] >= TARGET_BUSY,
            "speedup": speedup,
            "speedup_target": TARGET_SPEEDUP[w],
            "speedup_met": speedup is not None and speedup >= TARGET_SPEEDUP[w],
            "studies_hv_within_spread": f"{hv.get('studies_within_spread')}/{hv.get('studies')}",
        }
    return out


def print_summary(report: dict[str, Any]) -> None:
    print("\nW   mode        busy share      makespan h     worker h   hv (of true front)")
    for g in report["groups"].values():
        if not g["constant_liar"]:
            continue
        print(
            f"{g['workers']:<3d} {g['mode']:10s}  {g['busy_share']['mean']:.3f} ± "
            f"{g['busy_share']['std']:.3f}   {g['makespan_h']['mean']:7.2f} ± "
            f"{g['makespan_h']['std']:5.2f}   {g['busy_worker_h']['mean']:6.2f}   "
            f"{g['hv']['mean']:.4f} ± {g['hv']['std']:.4f}"
        )
    print("makespan sequential / shared:", report["makespan_sequential_over_shared"])
    for w, row in report["per_study_hv"].items():
        diff = report["hv_shared_minus_sequential"][w]
        print(
            f"W{w}: {row['studies_within_spread']}/{row['studies']} studies' shared hv within "
            f"spread; shared - sequential hv {diff['mean']:+.4f} (se {diff['se']})"
        )
    for key, c in report["constant_liar"].items():
        print(
            f"{key}: hv liar on {c['on']['hv']['mean']:.4f} ± {c['on']['hv']['std']:.4f}, off "
            f"{c['off']['hv']['mean']:.4f} ± {c['off']['hv']['std']:.4f}; distinct configs "
            f"{c['on']['distinct_configs']} vs {c['off']['distinct_configs']}"
        )
    print("targets:", json.dumps(report["targets"]))


if __name__ == "__main__":
    sys.exit(main())
