"""Search quality: replay search strategies on recorded learning curves, over many seeds.

Every strategy (a sampler with a scheduler) is replayed on a learning-curve table
(benchmarks/learning_curves.py) by :func:`autopetl.search.replay.replay`: the real Optuna sampler
proposes, the real Ray Tune scheduler stops or continues each trial from its recorded curve, and a
simulated clock with ``--workers`` workers charges each epoch its recorded seconds. Measured per
strategy, as mean and spread over seeds:

- the hypervolume of the reported front (completed trials only) on (val accuracy max, tunable
  parameters min, log10 scale), from a fixed reference point (chance accuracy, 10x the table's
  largest parameter count rounded up to a power of ten), divided by the hypervolume of the table's
  true front (training every configuration to the end): 1.0 is the whole front, 1 - it the regret;
- against the compute spent, in worker-seconds, as a fraction of the baseline's whole cost.

The baseline is the VPT paper's protocol (its lr x wd grid for VPT-deep, trained to the end) when
the table file holds it, else the exhaustive grid of the main table: what a person with a grid
pays. Writes benchmarks/results/search_quality.json and .png.

    python benchmarks/search_quality.py             # 20 seeds, every strategy
    python benchmarks/search_quality.py --quick     # 3 seeds, fewer strategies: under a minute
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
    CurveTable,
    ReplayResult,
    Strategy,
    front,
    load_tables,
    reference_point,
    replay,
)
from autopetl.store import hypervolume

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "results" / "learning_curves_dsprites_loc_28px.json"
OUT = REPO / "benchmarks" / "results" / "search_quality.json"
SAMPLERS = ("random", "tpe", "nsga2", "grid")
SCHEDULERS = ("none", "asha", "mo-asha")
DEFAULT = Strategy("tpe", DEFAULT_SCHEDULER, DEFAULT_GRACE_PERIOD, DEFAULT_REDUCTION_FACTOR)
# Settings of the two early-stopping schedulers tried beside the defaults (with TPE).
SETTINGS = ((1, 2), (1, 4), (2, 3), (3, 3))
LEVELS = 51  # compute levels from 0 to the whole budget


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument(
        "--table-name", default=None, help="which table of the file (default: the first one)"
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4, help="parallel trials (simulated)")
    parser.add_argument("--budget", type=float, default=1.0, help="x the baseline's whole cost")
    parser.add_argument("--quick", action="store_true", help="3 seeds, fewer strategies")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="replay processes")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the JSON to write (default: results/search_quality.json; --quick: results/quick/, "
        "git-ignored)",
    )
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG of --out's JSON")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print --out's JSON as the table docs/SEARCH.md shows, and exit",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the replays already in --out's .runs.jsonl (same table, workers and budget) "
        "and run only the rest",
    )
    args = parser.parse_args(argv)
    # A --quick run checks that it runs: it never writes over the committed full results.
    args.out = args.out or (OUT.parent / "quick" / OUT.name if args.quick else OUT)
    return args


def strategies(quick: bool) -> list[Strategy]:
    if quick:
        return [Strategy(s, sch) for s in ("random", "tpe") for sch in SCHEDULERS]
    out = [Strategy(s, sch) for s in SAMPLERS for sch in SCHEDULERS]
    out += [Strategy("tpe", sch, g, rf) for sch in ("asha", "mo-asha") for g, rf in SETTINGS]
    return out


def run_record(
    run: ReplayResult, ref: tuple[float, float], true_hv: float, levels: np.ndarray
) -> dict[str, Any]:
    """What the report needs of one replay, small enough to keep on disk (``--resume``): its
    hypervolume curve over the compute levels (a fraction of the true front's), its trial counts,
    and the finished trials when its front first held 90% of the true front (None: never)."""
    curve = np.array(run.hypervolume_curve(ref, list(levels))) / true_hv
    return {
        "curve": curve.round(6).tolist(),
        "trials": len(run.trials),
        "completed": sum(t.status == "completed" for t in run.trials),
        "trials_to_90pct": first_trial_reaching(run, ref, 0.9 * true_hv),
    }


def summarise(records: list[dict[str, Any]], levels: np.ndarray) -> dict[str, Any]:
    curves = np.array([r["curve"] for r in records])
    fractions = levels / levels[-1]
    reach = [r["trials_to_90pct"] for r in records]
    return {
        # Compute (fraction of the budget) and finished trials (what --budget counts) until the
        # front holds 90% of the true front's hypervolume; None when some seed never gets there.
        "compute_to_90pct": compute_to_reach(curves, 0.9, fractions),
        "trials_to_90pct": None if None in reach else round(float(np.mean(reach)), 1),
        "hv_mean": curves.mean(axis=0).round(5).tolist(),
        "hv_std": curves.std(axis=0).round(5).tolist(),
        "final_hv_mean": round(float(curves[:, -1].mean()), 5),
        "regret_mean": round(float(1 - curves[:, -1].mean()), 5),
        # Area under the hypervolume-compute curve (trapezoid), compute as a fraction of the budget.
        "hv_auc": round(float(np.trapezoid(curves.mean(axis=0), levels / levels[-1])), 5),
        "trials_mean": float(np.mean([r["trials"] for r in records])),
        "completed_mean": float(np.mean([r["completed"] for r in records])),
        "_curves": curves,
    }


def first_trial_reaching(run: ReplayResult, ref: tuple[float, float], target: float) -> int | None:
    """The finished trials (completed or stopped) when the reported front first holds ``target``
    hypervolume; None when it never does."""
    points: list[tuple[float, float]] = []
    for i, trial in enumerate(sorted(run.trials, key=lambda t: t.compute), start=1):
        if trial.status == "completed":
            points = front([*points, (trial.val_acc, float(trial.tunable_params))])
            if hypervolume(points, ref) >= target - 1e-12:
                return i
    return None


def compute_to_reach(curves: np.ndarray, target: float, fractions: np.ndarray) -> float | None:
    """Mean over seeds of the first compute fraction at which the hypervolume reaches ``target``;
    None when a seed never does."""
    firsts = []
    for curve in curves:
        hit = np.nonzero(curve >= target - 1e-12)[0]
        if not len(hit):
            return None
        firsts.append(fractions[hit[0]])
    return round(float(np.mean(firsts)), 4)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = np.array(report["compute_fractions"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, scheduler in zip(axes, SCHEDULERS, strict=True):
        for s in report["strategies"].values():
            if s["scheduler"] != scheduler or s["settings"] != [1, 3]:
                continue
            mean, std = np.array(s["hv_mean"]), np.array(s["hv_std"])
            ax.plot(fractions, mean, label=s["sampler"])
            ax.fill_between(fractions, mean - std, mean + std, alpha=0.15)
        default = report["strategies"][report["default_strategy"]]
        ax.plot(
            fractions, default["hv_mean"], "k-", lw=3, alpha=0.35,
            label=f"default: {report['default_strategy']}",
        )  # fmt: skip
        base = report["baseline"]
        ax.plot(fractions, base["hv_mean"], "k--", label="baseline (see the JSON)")
        ax.set_title(f"scheduler: {scheduler}")
        ax.set_xlabel("compute spent (fraction of the baseline's whole cost)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hypervolume / true front's (mean ± sd over seeds)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
    fig.suptitle(
        f"{report['task']} at {report['img_size']} px, {report['epochs']} epochs: "
        f"{report['seeds']} seeds, {report['workers']} workers"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    args = parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return 0
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return 0
    started = time.perf_counter()
    tables, meta = load_tables(args.table)
    main_name = args.table_name or next(n for n in tables if n != "vpt_paper")
    if main_name not in tables:
        print(f"error: {args.table} holds tables {', '.join(tables)}, not {main_name!r}")
        return 2
    table = tables[main_name]
    tables = {n: t for n, t in tables.items() if n in (main_name, "vpt_paper")}
    for name, t in tables.items():
        if t.meta.get("missing", 0):
            print(
                f"error: table {name!r} misses {t.meta['missing']} of its "
                f"{t.meta['configurations']} configurations; finish recording it "
                "(python benchmarks/learning_curves.py record) and export it again"
            )
            return 2
    seeds = 3 if args.quick else args.seeds
    num_classes = int(meta.get("num_classes", 16))
    ref = reference_point(tables.values(), num_classes)
    true_hv = hypervolume(table.front(), ref)
    if "vpt_paper" in tables:
        base_table, base_strategy = tables["vpt_paper"], Strategy("grid", "none")
        base_label = "VPT paper's lr x wd grid (VPT-deep, trained to the end)"
    else:
        base_table, base_strategy = table, Strategy("grid", "none")
        base_label = f"exhaustive grid over {main_name} (trained to the end)"
    budget = base_table.cost() * args.budget
    levels = np.linspace(0, budget, LEVELS)
    fractions = levels / base_table.cost()
    print(
        f"table {args.table.name}: {len(table.curves)} configurations, true-front hypervolume "
        f"{true_hv:.4f} (reference: accuracy {ref[0]:.4f}, {ref[1]:,.0f} parameters); "
        f"budget {budget / 3600:.2f} worker-hours = {args.budget:g} x baseline; "
        f"{seeds} seeds, {args.workers} workers",
        flush=True,
    )

    pool = ProcessPoolExecutor(args.jobs) if args.jobs > 1 else None
    # Each finished replay is kept beside --out (one JSON line each), so a long run can stop and
    # go on: --resume replays only what is not there yet for the same table, workers and budget.
    runs_file = args.out.with_suffix(".runs.jsonl")
    setting = f"{args.table.name}:{main_name}|workers {args.workers}|budget {budget:.3f}|{LEVELS}"
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.resume and runs_file.is_file():
        for line in runs_file.read_text().splitlines():
            row = json.loads(line)
            if row["setting"] == setting:
                done[(row["table"], row["strategy"], row["seed"])] = row["record"]
        print(f"resuming: {len(done)} replays of this setting in {runs_file.name}", flush=True)
    else:
        runs_file.parent.mkdir(parents=True, exist_ok=True)
        runs_file.write_text("")

    def run(t: CurveTable, strategy: Strategy) -> dict[str, Any]:
        t0 = time.perf_counter()
        which = "baseline" if t is base_table and t is not table else "main"
        missing = [seed for seed in range(seeds) if (which, strategy.label, seed) not in done]
        # (1 + 1e-9): the grid's last epoch ends at exactly its cost, summed in floats.
        jobs = [
            (t, strategy, seed, args.workers, budget * (1 + 1e-9), ref, true_hv, levels)
            for seed in missing
        ]
        records = pool.map(_replay_record, jobs) if pool else map(_replay_record, jobs)
        with runs_file.open("a") as out:
            for seed, record in zip(missing, records, strict=True):
                done[(which, strategy.label, seed)] = record
                row = {"setting": setting, "table": which, "strategy": strategy.label}
                out.write(json.dumps({**row, "seed": seed, "record": record}) + "\n")
                out.flush()
        summary = summarise([done[(which, strategy.label, seed)] for seed in range(seeds)], levels)
        print(
            f"{strategy.label:26s} final hv {summary['final_hv_mean']:.3f}  auc "
            f"{summary['hv_auc']:.3f}  trials {summary['trials_mean']:5.1f} "
            f"(completed {summary['completed_mean']:5.1f})  to 90%: {_fraction(summary['compute_to_90pct'])} "
            f"compute, {summary['trials_to_90pct'] or '-'} trials  {time.perf_counter() - t0:5.1f} s",
            flush=True,
        )
        return summary

    baseline = run(base_table, base_strategy)
    # TPE with ASHA from grace 1 runs last: on a small grid it proposes thousands of one-epoch
    # trials, and TPE's cost per suggestion grows with the study, so these take minutes a seed
    # where the others take seconds. The order changes no replay (each is seeded on its own).
    order = sorted(
        strategies(args.quick), key=lambda s: s.sampler == "tpe" and s.scheduler == "asha"
    )
    ran = {s: run(table, s) for s in order}
    results = {s: ran[s] for s in strategies(args.quick)}
    # The default, and random search with the same scheduler settings (its comparison).
    same = Strategy("random", DEFAULT.scheduler, DEFAULT.grace_period, DEFAULT.reduction_factor)
    for strategy in (DEFAULT, same):
        if strategy not in results:
            results[strategy] = run(table, strategy)
    default, random_same = results[DEFAULT], results[same]
    base_curves = baseline["_curves"]
    target = float(base_curves[:, -1].mean())  # the baseline's hypervolume once it is done
    from_20 = fractions >= 0.2
    report: dict[str, Any] = {
        "default_strategy": DEFAULT.label,
        "default_compute_to_reach_grid_hv": compute_to_reach(default["_curves"], target, fractions),
        "default_over_random_hv_auc": round(default["hv_auc"] / random_same["hv_auc"], 4),
        "default_beats_random_from_20pct": bool(
            np.all(
                np.array(default["hv_mean"])[from_20] > np.array(random_same["hv_mean"])[from_20]
            )
        ),
        "baseline_final_hv": round(target, 5),
        "task": meta.get("task"),
        "img_size": meta.get("img_size"),
        "epochs": table.epochs,
        "table": str(
            args.table.relative_to(REPO) if args.table.is_relative_to(REPO) else args.table
        ),
        "configurations": len(table.curves),
        "true_front": table.front(),
        "reference": list(ref),
        "seeds": seeds,
        "workers": args.workers,
        "budget_worker_hours": round(budget / 3600, 3),
        "compute_fractions": fractions.round(4).tolist(),
        "baseline": {"label": base_label, **_public(baseline)},
        "strategies": {
            s.label: {
                "sampler": s.sampler,
                "scheduler": s.scheduler,
                "settings": [s.grace_period, s.reduction_factor],
                **_public(r),
            }
            for s, r in results.items()
        },
        "command": shlex.join(["python", *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if pool:
        pool.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    plot(report, args.out.with_suffix(".png"))
    reach = report["default_compute_to_reach_grid_hv"]
    reached = (
        "does not reach it in every seed"
        if reach is None
        else f"reaches it at {reach:.0%} of the baseline's compute (mean over seeds)"
    )
    print(
        f"baseline hypervolume {target:.3f}; default {DEFAULT.label} {reached}; hv auc "
        f"{report['default_over_random_hv_auc']:.2f}x random's; wrote {args.out.name} and "
        f"{args.out.with_suffix('.png').name} in {report['seconds']:.0f} s"
    )
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The report as docs/SEARCH.md's table: hypervolume (a fraction of the true front's) at 10%,
    26% and 50% of the budget and at its end, the area, the compute and finished trials until 90%
    (mean over seeds; "never" when a seed never gets there), and the trials proposed (completed)."""
    fractions = np.array(report["compute_fractions"]) / report["compute_fractions"][-1]
    at = [int(np.argmin(np.abs(fractions - f))) for f in (0.1, 0.26, 0.5)]
    head = (
        "| strategy | 10% | 26% | 50% | end | area | 90% at | trials to 90% | trials (completed) |"
    )
    lines = [head, "| --- " * 9 + "|"]
    rows = [(f"{report['baseline']['label']} (baseline)", report["baseline"])]
    rows += [
        (f"**{label} (the default)**" if label == report["default_strategy"] else label, s)
        for label, s in report["strategies"].items()
    ]
    for label, s in rows:
        hv = s["hv_mean"]
        cells = [f"{hv[i]:.3f}" for i in at] + [f"{hv[-1]:.3f}", f"{s['hv_auc']:.3f}"]
        cells.append(_fraction(s["compute_to_90pct"]) if s["compute_to_90pct"] else "never")
        cells.append(f"{s['trials_to_90pct']:.1f}" if s["trials_to_90pct"] else "-")
        cells.append(f"{s['trials_mean']:.0f} ({s['completed_mean']:.1f})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _replay_record(job: tuple[Any, ...]) -> dict[str, Any]:
    table, strategy, seed, workers, budget, ref, true_hv, levels = job
    run = replay(table, strategy, seed=seed, workers=workers, max_compute=budget)
    return run_record(run, ref, true_hv, levels)


def _fraction(value: float | None) -> str:
    return "never" if value is None else f"{value:.0%}"


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not k.startswith("_")}


if __name__ == "__main__":
    sys.exit(main())
