"""``autopetl search``: a multi-objective search over PETL configurations, watched live."""

from __future__ import annotations

import argparse
import json
import time
from typing import TYPE_CHECKING

from rich.live import Live

from autopetl.cli._console import console, err_console, interactive, status
from autopetl.cli._invocation import command
from autopetl.cli._options import (
    SEED,
    add_backbone_options,
    add_data_options,
    backbone_specs,
    float_in,
    int_in,
)
from autopetl.cli._search_checks import already_met, check_methods_apply
from autopetl.cli._search_view import RunView, pareto_table, runs_table
from autopetl.errors import ConfigError
from autopetl.objectives import DEFAULT_OBJECTIVES, OBJECTIVES, Objective, parse_objectives
from autopetl.precision import PRECISION_HELP, PRECISIONS
from autopetl.search.defaults import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_REDUCTION_FACTOR,
    DEFAULT_SCHEDULER,
    MIN_INFORMATIVE_BUDGET,
    SAMPLERS,
    SCHEDULERS,
)

# Torch, Ray, Optuna and the store are imported by the functions that use them, so that
# `autopetl search --help` and argument errors answer at once.
if TYPE_CHECKING:
    from autopetl.backbones import BackboneSpec
    from autopetl.search.recorder import TrialEvent
    from autopetl.search.runner import SearchOutcome, SearchPlan
    from autopetl.search.space import SearchSpace
    from autopetl.tasks import TaskSpec

SMOKE_EPOCHS = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search PETL configurations on a task (Ray Tune + Optuna)")
    p.add_argument(
        "--task",
        required=True,
        help="a task, a comma-separated list, or a group such as vtab/structured",
    )
    p.add_argument(
        "--budget",
        type=int_in(1, 100_000),
        default=64,
        help="trials to finish per task (completed or pruned); failed trials do not count",
    )
    p.add_argument(
        "--space",
        default="default",
        help="a file in search_spaces/ (default) or a path to a YAML space",
    )
    p.add_argument(
        "--epochs", type=int_in(1, 10_000), default=None, help="override the space's epochs"
    )
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the space's (tpe)")
    p.add_argument(
        "--objectives",
        type=_objectives_arg,
        default=_objectives_arg(",".join(DEFAULT_OBJECTIVES)),
        metavar="A,B[,C]",
        help="what to optimise, accuracy first: "
        + "; ".join(f"{o.name} ({o.direction}: {o.doc})" for o in OBJECTIVES.values())
        + f" (default {','.join(DEFAULT_OBJECTIVES)})",
    )
    p.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=DEFAULT_SCHEDULER,
        help="early stopping: mo-asha ranks trials on both objectives at each rung, asha on val "
        f"accuracy alone, none trains every trial to its last epoch (default {DEFAULT_SCHEDULER})",
    )
    p.add_argument(
        "--grace-period",
        type=int_in(1, 10_000),
        default=DEFAULT_GRACE_PERIOD,
        help=f"epochs before a trial can be stopped (default {DEFAULT_GRACE_PERIOD})",
    )
    p.add_argument(
        "--reduction-factor",
        type=float_in(1, 100, above_low=True),
        default=DEFAULT_REDUCTION_FACTOR,
        help=f"keep about 1 in this many trials at each rung (default {DEFAULT_REDUCTION_FACTOR:g})",
    )
    p.add_argument("--cpus-per-trial", type=float_in(0, 1024, above_low=True), default=1.0)
    p.add_argument(
        "--gpus-per-trial",
        type=float_in(0, 64),
        default=0.0,
        help="fractions share a GPU, e.g. 0.25",
    )
    p.add_argument("--max-concurrent", type=int_in(1, 10_000), default=None)
    p.add_argument(
        "--max-failed",
        type=int_in(1, 1_000_000),
        default=None,
        help="give up after this many failed trials (default: the budget)",
    )
    p.add_argument(
        "--max-retries",
        type=int_in(0, 100),
        default=2,
        help="restarts of a trial whose worker or node died; it resumes from its last epoch",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument(
        "--db", default=None, help="database URL (default: $AUTOPETL_DB, else a SQLite file)"
    )
    p.add_argument("--name", default=None, help="search name; an existing name is resumed")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the search --name (the same as giving an existing name)",
    )
    p.add_argument(
        "--address",
        default=None,
        help="join a Ray cluster: auto or HOST:PORT (default: a local Ray)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="where trial checkpoints live: a path every node shares, or a URI (s3://..., gs://...)",
    )
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument(
        "--warm-start",
        type=_warm_start_arg,
        default="none",
        metavar="auto|none|NAME[,NAME...]",
        help=(
            "seed a new search with the configurations on the fronts of these finished searches "
            "(auto: every finished search of another task on the same backbone and input size); "
            "their results here are ordinary trials (default: none)"
        ),
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny random ViT at 32 px, 2 epochs, a small subset",
    )
    p.add_argument(
        "--train-fraction",
        type=_fractions,
        default=None,
        metavar="F[,F...]",
        help=(
            "train on this fraction of the task's whole training set instead of train800 "
            "(dSprites, FGVC); several run one search each, named NAME-frac<F>; nested subsets"
        ),
    )
    add_backbone_options(p)
    add_data_options(p)
    p.set_defaults(func=run)


def _fractions(text: str) -> list[float]:
    from autopetl.tasks.scale import parse_fractions

    try:
        return parse_fractions(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--train-fraction: ")) from None


def _warm_start_arg(text: str) -> str | tuple[str, ...]:
    from autopetl.search.warm_start import parse_choice

    try:
        return parse_choice(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--warm-start takes ")) from None


def _objectives_arg(text: str) -> tuple[Objective, ...]:
    try:
        return parse_objectives(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from autopetl.backbones import check_weights_file
    from autopetl.search.cluster import check_gpus_here
    from autopetl.search.space import load_space, with_epochs
    from autopetl.tasks import resolve_tasks
    from autopetl.tasks.scale import check_scalable
    from autopetl.tasks.sources import check_data_here

    # The mistakes that need no torch, Ray or database are found first, in well under a second,
    # and leave nothing behind: a task, its data, a space file and what it holds, --resume
    # without --name, a weights file, GPUs this machine lacks.
    tasks = resolve_tasks(args.task)
    for task in tasks:
        if args.train_fraction:
            check_scalable(task)
        check_data_here(task, args.data_root)
    space = load_space(args.space)
    epochs = args.epochs if args.epochs is not None else (SMOKE_EPOCHS if args.smoke_test else None)
    if epochs is not None:  # argparse checked --epochs and --budget (_options.int_in)
        space = with_epochs(space, epochs)
    if (args.sampler or space.sampler) == "grid":
        space.configurations()  # a continuous range cannot be a grid: a ConfigError
    if args.resume and not args.name:
        raise ConfigError(
            "--resume needs --name NAME of the search to continue (`autopetl searches` lists them)"
        )
    specs = backbone_specs(args)
    for spec in specs:
        check_weights_file(spec.weights)
    check_gpus_here(args.gpus_per_trial, args.address)

    from autopetl.store.provisional import provisional_database

    # A later refusal (a dataset not there, a trial no node can place) removes the database file
    # this command created for nothing.
    with provisional_database(args.db):
        if isinstance(args.warm_start, tuple):  # named sources: refused before anything heavy
            from autopetl.search.warm_start import check_sources
            from autopetl.store import open_store

            with open_store(args.db) as store:
                for spec in specs:
                    check_sources(store, args.warm_start, spec.to_dict())
        return _run_checked(args, tasks, specs, space)


def _run_checked(
    args: argparse.Namespace, tasks: list[TaskSpec], specs: list[BackboneSpec], space: SearchSpace
) -> int:
    from autopetl.backbones import family_of
    from autopetl.methods.io import rebuildable_backbone
    from autopetl.pipeline import load_task_data
    from autopetl.search.cluster import check_trial_fits, connect
    from autopetl.search.runner import SearchPlan, run_searches
    from autopetl.search.warm_start import plan_warm_start
    from autopetl.store import default_db_path, open_store
    from autopetl.tasks.scale import fraction_label
    from autopetl.trial import SMOKE_SEARCH_TRAIN_IMAGES

    sampler = args.sampler or space.sampler
    budget = args.budget
    if sampler == "grid":
        cells = len(space.configurations())
        if budget > cells:
            err_console.print(
                f"the grid of space {space.name!r} has {cells} configurations: budget {budget} -> {cells}",
                markup=False,
            )
            budget = cells
    if budget < MIN_INFORMATIVE_BUDGET and not args.smoke_test:
        err_console.print(
            f"note: a budget of {budget} trials is below {MIN_INFORMATIVE_BUDGET}, where the "
            "default search's front reached 90% of the best front on recorded learning curves "
            "(docs/SEARCH.md): expect a sparse front",
            markup=False,
        )
    fractions: list[float | None] = list(args.train_fraction or [None])
    store = open_store(args.db)
    single = len(tasks) == 1 and len(specs) == 1 and len(fractions) == 1
    if args.resume and single and store.get_search(args.name) is None:
        raise ConfigError(
            f"no search named {args.name!r} to resume; `autopetl searches` lists them"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plans: list[SearchPlan] = []
    # Load every task's data before anything is written: a missing dataset fails here, cleanly.
    # One search per task, backbone and data scale: accuracies of two backbones (or of two
    # training-set sizes) never share a front.
    for task, spec, fraction in ((t, s, f) for t in tasks for s in specs for f in fractions):
        base = args.name or f"{task.folder}-{space.name}-{stamp}"
        name = base if len(tasks) == 1 else f"{base}-{task.folder}"
        name = name if len(specs) == 1 else f"{name}-{spec.name}"
        name = name if len(fractions) == 1 else f"{name}-frac{fraction:g}"
        if already_met(store, name, task, space, spec, args, fraction):
            continue
        warm = None
        if store.get_search(name) is None:  # a resumed search keeps the seeds it started with
            warm = plan_warm_start(
                store,
                args.warm_start,
                task=task.name,
                backbone=spec.to_dict(),
                space=space,
                budget=budget,
                exclude=tuple(p.name for p in plans),
            )
        if warm is not None:
            err_console.print(f"{name}: {warm.summary()}", markup=False)
        scale = "" if fraction is None else f", {fraction:g} of its training set"
        with status(f"preparing {task.name} at {spec.img_size}px{scale}"):
            data = load_task_data(
                task,
                spec.img_size,
                data_root=args.data_root,
                train_limit=SMOKE_SEARCH_TRAIN_IMAGES if args.smoke_test else None,
                train_fraction=fraction,
            )
        if fraction is not None:
            err_console.print(
                f"{name}: trains on {len(data.train):,} images, {fraction_label(fraction)} of "
                f"{task.name}'s training set (nested: a smaller fraction is inside it)",
                markup=False,
            )
        plans.append(
            SearchPlan(
                name=name,
                data=data,
                space=space,
                budget=budget,
                backbone=spec,
                sampler=sampler,
                scheduler=args.scheduler,
                grace_period=args.grace_period,
                reduction_factor=args.reduction_factor,
                cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial,
                max_concurrent=args.max_concurrent,
                seed=args.seed,
                storage_path=args.storage or default_db_path().parent / "ray_results",
                max_failed=args.max_failed,
                max_retries=args.max_retries,
                precision=args.precision,
                objectives=tuple(o.name for o in args.objectives),
                warm_start=warm.configs if warm is not None else (),
                options={
                    "smoke_test": args.smoke_test,
                    "space_file": str(args.space),
                    **({"warm_start": warm.lineage()} if warm is not None else {}),
                    # Recorded only when set: a VTAB-1k search's options stay as they were.
                    **({"train_fraction": fraction} if fraction is not None else {}),
                },
            )
        )
    if not plans:
        return 0
    # Every worker builds this backbone; build it once here first, so that a missing weights
    # file, an unreachable hub or a checkpoint of another model is one line before Ray starts
    # (and hub weights are downloaded once, into the cache the workers read).
    for spec in {
        json.dumps(p.backbone.to_dict(), sort_keys=True): p.backbone for p in plans
    }.values():
        with status(f"checking {spec.name} ({spec.weights}) at {spec.img_size}px"):
            backbone = rebuildable_backbone(spec, tasks[0].num_classes)
        check_methods_apply(space, spec, family_of(backbone) or "")
    with status("starting Ray"):
        connect(args.address, database_url=store.url)
        check_trial_fits(args.cpus_per_trial, args.gpus_per_trial)
    # Every search of the command runs in one Tune run, on one set of workers.
    view = RunView.resuming([(p.name, p.data.task.name, p.budget) for p in plans], store)
    if len(plans) > 1:
        err_console.print(
            f"{len(plans)} searches in one run, {budget} trials each: "
            + ", ".join(p.name for p in plans),
            markup=False,
        )
    if interactive():
        with Live(view.render(), console=err_console, refresh_per_second=4) as live:

            def on_event(event: TrialEvent) -> None:
                view.on_event(event)
                live.update(view.render())

            outcomes = run_searches(plans, store, on_event)
    else:  # a log: one line per finished trial, as it finishes
        for plan in plans:
            err_console.print(f"search {plan.name}: {view.progress(plan.name)}", markup=False)

        def log_event(event: TrialEvent) -> None:
            view.on_event(event)
            if event.kind in ("completed", "pruned", "failed"):
                err_console.print(view.line(event), markup=False)
            elif event.kind == "epoch" and (line := view.epoch_line(event)) is not None:
                err_console.print(line, markup=False)

        outcomes = run_searches(plans, store, log_event)
    _summary(outcomes, plans, args)
    return 0 if all(o.status == "completed" for o in outcomes) else 1


def _summary(
    outcomes: list[SearchOutcome], plans: list[SearchPlan], args: argparse.Namespace
) -> None:
    """Each search's front and counts; with several, a table of them all; then what to run next."""
    from autopetl.store import safe_url

    db = f" --db '{safe_url(args.db)}'" if args.db else ""
    for outcome, plan in zip(outcomes, plans, strict=True):
        c = outcome.counts
        if outcome.pareto:
            console.print(pareto_table(outcome, args.objectives))
        pruned = f"{c['pruned']} pruned" + (
            f" (stopped early by {plan.scheduler})" if plan.scheduler != "none" else ""
        )
        console.print(
            f"search {outcome.name} {outcome.status}: {c['completed']} completed, "
            f"{pruned}, {c['failed']} failed, "
            f"in {outcome.wall_time_s:.0f} s ({outcome.runs} Tuner run(s))",
            markup=False,
        )
        if outcome.error:
            console.print(f"error of the failed trials: {outcome.error}", markup=False)
        if outcome.status != "completed":
            console.print(
                "see every failed trial's error: "
                + command(f"trials --search {outcome.name} --status failed{db}"),
                markup=False,
            )
    if len(outcomes) > 1:
        console.print(runs_table(outcomes, {p.name: p.data.task.name for p in plans}))
    shown = [o for o in outcomes if o.pareto]
    if not shown:
        return
    console.print("next:")
    lines = [command(f"trials --search {o.name} --pareto{db}") for o in shown]
    lines.append(command(f"dashboard{db}"))
    lines += [command(f"evaluate --search {o.name} --pareto --seeds 3{db}") for o in shown]
    if len(shown) == 1:
        lines.append(command(f"serve --search {shown[0].name}{db}"))
    else:  # once evaluated: every task's best on one shared backbone
        tasks = dict.fromkeys(
            p.data.task.name for p, o in zip(plans, outcomes, strict=True) if o.pareto
        )
        lines.append(command(f"serve --task {' '.join(tasks)}{db}"))
    for line in lines:
        console.print(f"  {line}", markup=False)
