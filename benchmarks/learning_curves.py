"""Record learning-curve tables with `autopetl search`, and export them for the replay benchmark.

A table is an ordinary recorded search over a finite space with every trial trained to its last
epoch (``--sampler grid --scheduler none``): the store already holds each trial's per-epoch val
accuracy and seconds and its tunable parameters. ``record`` runs that search (again under the same
name it resumes, so a table can be recorded over several sittings); ``export`` writes the curves,
no weights, to a small JSON file that benchmarks/search_quality.py replays.

    python benchmarks/learning_curves.py record                    # search_spaces/default_grid.yaml
    python benchmarks/learning_curves.py record --space vpt_paper  # the VPT paper's lr x wd grid
    python benchmarks/learning_curves.py status                    # what is recorded so far
    python benchmarks/learning_curves.py export                    # -> benchmarks/results/...json
    python benchmarks/learning_curves.py export --methods linear,lora,adapter  # + a sub-table

When methods join the space file after a table was recorded (default_grid gained AdaptFormer,
SSF, FacT and DoRA), ``record`` records only them, as a search of their own that ``export``
merges into the table (benchmarks/_grown_tables.py).

Defaults: the real DINOv2 ViT-S/14 from ../shared/weights on vtab/dsprites_loc at 28 px (the
cheapest input at which the methods separate; docs/SEARCH.md), 10 epochs, two 1-CPU trials at a
time, recorded in benchmarks/results/curves/learning_curves.db (committed, so that the next
sitting resumes it).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO.parent / "shared" / "weights" / "vit_small_patch14_dinov2.safetensors"
DB = REPO / "benchmarks" / "results" / "curves" / "learning_curves.db"
OUT = REPO / "benchmarks" / "results" / "learning_curves_dsprites_loc_28px.json"
TABLE_SPACES = ("default_grid", "vpt_paper")


def search_name(task: str, img_size: int, space: str) -> str:
    base = f"curves-{task.split('/')[-1]}-{img_size}px"
    return base if space == "default_grid" else f"{base}-{space}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["record", "status", "export", "compare"])
    parser.add_argument("--search", default=None, help="compare: a search in --db to compare")
    parser.add_argument("--table-name", default="default_grid", help="compare: the table of --out")
    parser.add_argument("--space", choices=TABLE_SPACES, default="default_grid")
    parser.add_argument("--task", default="vtab/dsprites_loc")
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--db", default=f"sqlite:///{DB}")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="record: what trials train in (auto: bf16 where the CPU has bf16 units; the "
        "dsprites_loc table is fp32, the dsprites_ori one bf16, and their seconds differ ~3x)",
    )
    parser.add_argument(
        "--methods",
        default="",
        help="export also a sub-table of these methods of default_grid (comma-separated), "
        "complete before the whole table is",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args()


def record(args: argparse.Namespace) -> int:
    if not args.weights.is_file():
        print(f"error: pretrained weights {args.weights} not found (pass --weights PATH)")
        return 2
    from _grown_tables import GrowthError, growth

    from autopetl.search.space import load_space
    from autopetl.store import open_store

    space = load_space(args.space)
    name, space_arg = search_name(args.task, args.img_size, args.space), args.space
    DB.parent.mkdir(parents=True, exist_ok=True)
    try:
        grown = growth(open_store(args.db), name, space)
    except GrowthError as exc:
        print(f"error: {exc}")
        return 2
    if grown is not None:  # record only what the table lacks, as a search of its own
        print(f"table {name} lacks {', '.join(grown.methods)}: recording them as {grown.name}")
        space, name = grown.space, grown.name
        space_arg = str(grown.write_space(DB.parent))
    cells = len(space.configurations())
    command = [
        sys.executable,
        "-m",
        "autopetl",
        "search",
        "--task",
        args.task,
        "--space",
        space_arg,
        "--sampler",
        "grid",
        "--scheduler",
        "none",
        "--budget",
        str(cells),
        "--backbone",
        "vit_small_patch14_dinov2",
        # Absolute: Ray's workers run in folders of their own.
        "--weights",
        str(args.weights.resolve()),
        "--img-size",
        str(args.img_size),
        "--epochs",
        str(args.epochs),
        "--cpus-per-trial",
        "1",
        "--max-concurrent",
        str(args.max_concurrent),
        "--precision",
        args.precision,
        "--seed",
        "0",
        "--name",
        name,
        "--db",
        args.db,
    ]
    print("$", " ".join(command[1:]), flush=True)
    return subprocess.call(command)


def status(args: argparse.Namespace) -> int:
    from autopetl.search.replay_tables import table_from_store
    from autopetl.store import open_store

    store = open_store(args.db)
    for space in TABLE_SPACES:
        name = search_name(args.task, args.img_size, space)
        if store.get_search(name) is None:
            print(f"{name}: not started")
            continue
        table = table_from_store(store, name)
        done = len(table.curves)
        print(
            f"{name}: {done}/{table.meta['configurations']} configurations recorded, "
            f"{table.cost() / 3600:.2f} worker-hours of training"
        )
    return 0


def export(args: argparse.Namespace) -> int:
    from _grown_tables import GrowthError, merged_table

    from autopetl.search.replay import save_tables
    from autopetl.search.replay_tables import table_from_store
    from autopetl.search.space import load_space
    from autopetl.store import open_store

    store = open_store(args.db)
    tables = {}
    for space in TABLE_SPACES:
        name = search_name(args.task, args.img_size, space)
        if store.get_search(name) is not None:
            # With the curves of the methods added to the space since (their own search); a
            # table whose space file changed otherwise is exported as it was recorded.
            try:
                tables[space] = merged_table(store, name, load_space(space))
            except GrowthError:
                tables[space] = table_from_store(store, name)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods and "default_grid" in tables:
        sub = f"default_grid:{'+'.join(methods)}"
        name = search_name(args.task, args.img_size, "default_grid")
        tables[sub] = table_from_store(store, name, methods)
    if not tables:
        print(f"error: no table recorded in {args.db}; run `record` first")
        return 2
    # What the trials trained in (precision auto resolves per machine: bf16 on CPUs with bf16
    # units, fp32 elsewhere), which sets their seconds: tables of two machines differ by ~3x.
    precisions = sorted(
        {
            str(t.cost.get("precision"))
            for space in TABLE_SPACES
            if store.get_search(search_name(args.task, args.img_size, space)) is not None
            for t in store.trials(search_name(args.task, args.img_size, space), status="completed")
        }
    )
    meta = {
        "task": args.task,
        "img_size": args.img_size,
        "epochs": args.epochs,
        "backbone": "vit_small_patch14_dinov2",
        "weights": args.weights.name,
        "machine": f"{platform.machine()} CPU, 1 torch thread per trial, "
        f"{args.max_concurrent} trials at a time",
        "precision": ",".join(precisions),
        "exported": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/learning_curves.py record [--space vpt_paper]"
        + ("" if args.task == "vtab/dsprites_loc" else f" --task {args.task}"),
    }
    save_tables(args.out, tables, meta)
    for space, table in tables.items():
        print(
            f"{space}: {len(table.curves)}/{table.meta['configurations']} curves, "
            f"{table.meta['missing']} missing"
        )
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """A real search's front against a table's true front: hypervolume from the same corner."""
    from autopetl.search.replay import front, load_tables, reference_point
    from autopetl.store import hypervolume, open_store

    if not args.search:
        print("error: compare needs --search NAME (`autopetl searches --db ...` lists them)")
        return 2
    tables, _ = load_tables(args.out)
    table = tables[args.table_name]
    store = open_store(args.db)
    found = front((t.val_acc, float(t.tunable_params)) for t in store.pareto_front(args.search))
    ref = reference_point([table], 16)
    true = table.front()
    ratio = hypervolume(found, ref) / hypervolume(true, ref)
    print(f"true front of {args.table_name} ({len(table.curves)} configurations):")
    for acc, params in true:
        print(f"  {acc:6.1%}  {params:>10,.0f} parameters")
    print(f"front of search {args.search}:")
    for acc, params in found:
        print(f"  {acc:6.1%}  {params:>10,.0f} parameters")
    print(f"hypervolume: {ratio:.3f} of the true front's (reference {ref[0]:.4f}, {ref[1]:,.0f})")
    return 0


def main() -> int:
    args = parse_args()
    actions = {"record": record, "status": status, "export": export, "compare": compare}
    return actions[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
