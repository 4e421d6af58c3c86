"""The replay's TPE against Optuna's, side by side: the same replay, its time with each sampler,
and whether every trial came out the same.

One strategy (default: TPE + ASHA from grace 1, the replay that runs thousands of trials) on one
learning-curve table, up to a fraction of the grid's compute, once with Optuna's TPESampler and
once with autopetl.search.replay_tpe.ReplayTPESampler, in this process, one after the other.
Writes benchmarks/results/replay_speed.json (``--out`` elsewhere).

    python benchmarks/replay_speed.py                   # 0.3x of dsprites_ori's grid: ~45 s
    python benchmarks/replay_speed.py --fraction 0.05   # seconds
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from unittest import mock

from autopetl.search import samplers
from autopetl.search.replay import Strategy, load_tables, replay

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "benchmarks" / "results" / "learning_curves_dsprites_ori_28px.json"
OUT = REPO / "benchmarks" / "results" / "replay_speed.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--fraction", type=float, default=0.3, help="x the grid's whole cost")
    parser.add_argument("--scheduler", default="asha", help="none, asha or mo-asha (with TPE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args(argv)


def timed_replay(args: argparse.Namespace, fast: bool) -> tuple[list, float]:
    """The replay with the replay's TPE (``fast``) or Optuna's own, and its seconds."""
    make = samplers.make_sampler

    def sampler(name, space, seed, **options):  # type: ignore[no-untyped-def]
        return make(name, space, seed, **{**options, "replay": fast})

    table = next(t for n, t in load_tables(args.table)[0].items() if n != "vpt_paper")
    started = time.perf_counter()
    with mock.patch.object(samplers, "make_sampler", sampler):
        trials = replay(
            table,
            Strategy("tpe", args.scheduler),
            seed=args.seed,
            workers=args.workers,
            max_compute=table.cost() * args.fraction,
        ).trials
    return trials, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plain, plain_s = timed_replay(args, fast=False)
    print(f"Optuna's TPESampler:   {len(plain)} trials in {plain_s:.1f} s", flush=True)
    fast, fast_s = timed_replay(args, fast=True)
    print(f"the replay's TPE:      {len(fast)} trials in {fast_s:.1f} s", flush=True)
    report = {
        "table": str(
            args.table.relative_to(REPO) if args.table.is_relative_to(REPO) else args.table
        ),
        "strategy": Strategy("tpe", args.scheduler).label,
        "fraction_of_grid": args.fraction,
        "seed": args.seed,
        "trials": len(fast),
        "optuna_seconds": round(plain_s, 2),
        "replay_tpe_seconds": round(fast_s, 2),
        "speedup": round(plain_s / fast_s, 2),
        "identical": plain == fast,
        "command": shlex.join(["python", *sys.argv]),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{report['speedup']}x faster; every trial the same: {report['identical']}; "
        f"wrote {args.out}"
    )
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
